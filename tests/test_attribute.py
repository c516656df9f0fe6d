import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from safeview import nets
from safeview.attribute import METHODS, _full_gradients, attribution_map, attribution_maps, default_target_layer, method_params
from safeview.classify import Classifier, Preprocess
from safeview.errors import ImageError, ModelError, SafeViewError


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise_batchnorm(module: nn.Module, seed: int = 1) -> nn.Module:
    """Fresh BatchNorms have zero effective bias, which would hide every bias-gradient term."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return module


def _classifier(arch: str = "small", preprocess: Preprocess | None = None) -> Classifier:
    torch.manual_seed(0)
    module = _randomise_batchnorm(nets.build(arch, 2))
    return Classifier.from_module(module, ["safe", "unsafe"], ["unsafe"], preprocess=preprocess or Preprocess(resize=(64, 64)))


def _image(h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _hook_count(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def small() -> Classifier:
    return _classifier("small")


@pytest.fixture(scope="module")
def resnet18() -> Classifier:
    return _classifier("resnet18")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_an_image_sized_map_in_unit_range(method):
    clf = _classifier("small", Preprocess(resize=(72, 72), crop=(64, 64)))
    params = {"batch_size": 64} if method.startswith("ablationcam") else {}
    maps = [attribution_map(clf, _image(50, 70), target, method, **params) for target in (0, 1)]
    for amap in maps:
        assert amap.shape == (50, 70) and amap.dtype == np.float32
        assert np.isfinite(amap).all() and amap.min() >= 0.0 and amap.max() <= 1.0
    # a random image on a random net has positive evidence somewhere for at least one class
    # (CAMs clip negative evidence, so one of the two targets may give an all-zero map)
    assert max(amap.max() for amap in maps) == 1.0


@pytest.mark.parametrize("arch", ["small", "resnet18"])
def test_per_channel_fullgrad_matches_pytorch_grad_cam(arch, request):
    clf = request.getfixturevalue(arch)
    for seed, target in [(0, 1), (1, 0)]:
        image = _image(seed=seed)
        ours = attribution_map(clf, image, target, per_channel=True)
        library = attribution_map(clf, image, target, "fullgrad-ref")
        assert _pearson(ours, library) >= 0.99
        np.testing.assert_allclose(ours, library, atol=1e-4)
        # the reference normalisation is a different map
        assert not np.allclose(attribution_map(clf, image, target), library, atol=1e-2)


def _reference_fullgrad(clf: Classifier, image: np.ndarray, target: int) -> np.ndarray:
    """FullGrad post-processed literally as the authors' code: every layer's |g ⊙ b| min–max
    normalised over the layer tensor, each channel upsampled (align_corners=True), then summed."""
    grads, biases = [], []
    handles = []
    for m in clf.module.modules():
        if isinstance(m, nn.BatchNorm2d):
            bias = m.bias - m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)
        elif isinstance(m, nn.Conv2d) and m.bias is not None:
            bias = m.bias
        else:
            continue

        def hook(_m, _i, out, bias=bias.detach()):
            out.register_hook(lambda g: grads.append((g, bias)))

        handles.append(m.register_forward_hook(hook))
    x = clf.tensor([image]).requires_grad_(True)
    try:
        clf.module(x)[0, target].backward()
    finally:
        for h in handles:
            h.remove()

    def post(t):
        t = t.abs()
        t = t - t.amin()
        return t / (t.amax() + 1e-6)

    total = post(x.grad * x).sum(1)
    for g, b in grads:
        layer = post(g * b.view(1, -1, 1, 1))
        total = total + F.interpolate(layer, size=x.shape[-2:], mode="bilinear", align_corners=True).sum(1)
    total = total[0].detach().numpy()
    return (total - total.min()) / (total.max() - total.min())


@pytest.mark.parametrize("arch", ["small", "resnet18"])
def test_default_fullgrad_is_the_reference_post_processing(arch, request):
    clf = request.getfixturevalue(arch)
    image = _image(seed=2)
    np.testing.assert_allclose(attribution_map(clf, image, 1), _reference_fullgrad(clf, image, 1), atol=1e-4)


def test_full_gradients_are_complete(resnet18):
    """FullGrad's completeness: ∇x·x plus every layer's ∇b·b sums to the logit in a ReLU network.
    It fails if any bias gradient is missed or taken after an in-place ReLU."""
    x = resnet18.tensor([_image(seed=3), _image(seed=4)])
    terms = []
    input_grad = _full_gradients(resnet18, x, [1, 0], lambda g, b: terms.append((g * b.view(1, -1, *[1] * (g.dim() - 2))).sum()))
    with torch.no_grad():
        logits = resnet18.logits(x)
    expected = float(logits[0, 1] + logits[1, 0])
    assert len(terms) == 21  # 20 BatchNorms + the linear head of ResNet-18
    assert float((input_grad * x).sum() + sum(terms)) == pytest.approx(expected, rel=1e-4, abs=1e-4)


def _with_runtime(clf: Classifier) -> Classifier:
    from safeview.runtime import TorchRuntime

    return dataclasses.replace(clf, runtime=TorchRuntime(clf.module, clf.preprocess.input_size))


@pytest.mark.parametrize("arch", ["small", "resnet18"])
def test_fullgrad_differentiates_the_folded_copy_with_the_modules_terms(arch, request):
    """Issue 18: a classifier with a runtime takes FullGrad on its copy with every BatchNorm folded
    into the convolution before it; the map is the module's (the authors' post-processing on the
    module itself), and the terms still add up to the logit, so no bias went missing in the folding."""
    clf = _with_runtime(request.getfixturevalue(arch))
    folded = clf.gradient_module()
    assert folded is not clf.module and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    image = _image(seed=2)
    np.testing.assert_allclose(attribution_map(clf, image, 1), _reference_fullgrad(clf, image, 1), atol=1e-4)
    x = clf.tensor([image])
    terms = []
    input_grad = _full_gradients(clf, x, [1], lambda g, b: terms.append((g * b.view(1, -1, *[1] * (g.dim() - 2))).sum()))
    with torch.no_grad():
        logit = float(clf.logits(x)[0, 1])
    assert float((input_grad * x).sum() + sum(terms)) == pytest.approx(logit, rel=1e-4, abs=1e-4)


def test_fullgrad_keeps_a_convolutions_own_bias_term_and_follows_changed_weights():
    torch.manual_seed(0)  # a convolution with a bias of its own before a BatchNorm: FullGrad has a term for each
    module = _randomise_batchnorm(nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2),
    ))
    with torch.no_grad():
        module[0].bias.uniform_(-1, 1)
    clf = _with_runtime(Classifier.from_module(module, ["safe", "unsafe"], ["unsafe"], preprocess=Preprocess(resize=(32, 32))))
    image = _image(32, 32, seed=5)
    assert clf.gradient_module() is module  # folding would join the two bias terms into one
    np.testing.assert_allclose(attribution_map(clf, image, 1), _reference_fullgrad(clf, image, 1), atol=1e-4)

    torch.manual_seed(0)
    plain = _randomise_batchnorm(nets.build("small", 2))
    clf = _with_runtime(Classifier.from_module(plain, ["safe", "unsafe"], ["unsafe"], preprocess=Preprocess(resize=(32, 32))))
    assert clf.gradient_module() is not plain
    with torch.no_grad():
        plain.fc.bias += 1.0  # changed in place: the folded copy no longer computes the module
    assert clf.gradient_module() is plain
    np.testing.assert_allclose(attribution_map(clf, image, 1), _reference_fullgrad(clf, image, 1), atol=1e-4)


@pytest.mark.parametrize("method, params", [("fullgrad", {}), ("fullgrad", {"per_channel": True}), ("gradcam", {}), ("fullgrad-ref", {})])
def test_batched_maps_equal_one_by_one(small, method, params):
    images = [_image(64, 64, 5), _image(40, 90, 6), _image(80, 50, 7)]
    targets = [0, 1, 1]
    batched = attribution_maps(small, images, targets, method, **params)
    chunked = attribution_maps(small, images, targets, method, max_batch=2, **params)
    single = [attribution_map(small, im, t, method, **params) for im, t in zip(images, targets)]
    for b, c, s, im in zip(batched, chunked, single, images):
        assert b.shape == im.shape[:2]
        np.testing.assert_allclose(b, s, atol=1e-4)
        np.testing.assert_allclose(c, s, atol=1e-4)


class _BatchBound(nn.Module):
    """A small ResNet whose head reshapes by the *input's* batch size and concatenates the target
    layer's output with an earlier feature map, so a batch grown at the target layer fails in it."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _randomise_batchnorm(nets.build("small", 2))
        self.fc = nn.Linear(2 * 192 + 24, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        early = self.inner.stem(x)
        features = self.inner.layers(early)
        pooled = torch.cat([self.inner.avg(features), self.inner.max(features), self.inner.avg(early)], 1)
        return self.fc(pooled.reshape(x.shape[0], -1))


@pytest.mark.parametrize(
    "arch, target_layer, params",
    [
        ("small", None, {}),  # the last stage: a ReLU output, ablated channels are zeroed
        ("small", "layers.2.bn2", {}),  # a BatchNorm output: no zero, the library's −1e7 steps
        ("small", "layers.2.bn2", {"batch_size": 7, "copies_per_forward": 20}),
        ("resnet18", None, {"copies_per_forward": 100}),
        ("batch-bound", "inner.layers", {}),  # the grown batch fails: the input is repeated instead
    ],
)
def test_batched_ablationcam_equals_pytorch_grad_cam(arch, target_layer, params, request):
    clf = (
        Classifier.from_module(_BatchBound(), ["safe", "unsafe"], ["unsafe"], preprocess=Preprocess(resize=(64, 64)))
        if arch == "batch-bound"
        else request.getfixturevalue(arch)
    )
    library_params = {"batch_size": params.get("batch_size", 32)}
    images, targets = [_image(seed=20), _image(48, 80, seed=21)], [1, 0]
    ours = attribution_maps(clf, images, targets, "ablationcam", target_layer=target_layer, **params)
    library = attribution_maps(clf, images, targets, "ablationcam-ref", target_layer=target_layer, **library_params)
    for a, b in zip(ours, library):
        assert b.max() == 1.0
        assert _pearson(a, b) >= 0.999
        np.testing.assert_allclose(a, b, atol=1e-4)
    assert _hook_count(clf.module) == 0


class _Gate(nn.Module):
    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


def _patch_classifier(rows: slice, cols: slice) -> Classifier:
    """A conv net whose logits see only the features inside one patch of its 32×32 input."""
    torch.manual_seed(0)
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., rows, cols] = 1.0
    fc = nn.Linear(6, 2)
    with torch.no_grad():
        fc.weight.abs_()
        fc.bias.copy_(torch.tensor([0.0, 1.0]))
    module = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), _Gate(mask), nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc
    )
    _randomise_batchnorm(module)
    return Classifier.from_module(module, ["safe", "unsafe"], ["unsafe"], preprocess=Preprocess(resize=(32, 32)))


@pytest.mark.parametrize("method", METHODS)
def test_attribution_concentrates_on_the_patch_the_logit_depends_on(method):
    clf = _patch_classifier(slice(4, 14), slice(18, 28))
    amap = attribution_map(clf, _image(64, 64, 8), 1, method)
    # the patch in image coordinates (the model input is the image at half size), plus the conv's
    # one-pixel receptive-field border and the bilinear resize back to 64×64
    inside = np.zeros((64, 64), bool)
    inside[8 - 4 : 28 + 4, 36 - 4 : 56 + 4] = True
    assert amap.max() == 1.0
    assert amap[inside].sum() / amap.sum() > 0.99
    assert amap[8:28, 36:56].mean() > 0.05  # not a single hot pixel


@pytest.mark.parametrize("method", METHODS)
def test_model_state_and_hooks_are_left_as_found(method):
    clf = _classifier("small")
    module = clf.module
    for p in module.stem.parameters():
        p.requires_grad_(False)
    requires = [p.requires_grad for p in module.parameters()]
    children = [id(m) for m in module.modules()]
    hooks = _hook_count(module)
    attribution_maps(clf, [_image(seed=9), _image(seed=10)], [1, 0], method)
    assert _hook_count(module) == hooks
    assert not module.training
    assert [p.requires_grad for p in module.parameters()] == requires
    assert all(p.grad is None for p in module.parameters())
    assert [id(m) for m in module.modules()] == children


class _Failing(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inner(x)
        raise RuntimeError("model failed after its layers ran")


@pytest.mark.parametrize("method", ["fullgrad", "fullgrad-ref", "gradcam", "ablationcam", "ablationcam-ref"])
def test_hooks_and_layers_are_restored_when_the_model_fails(method):
    inner = _randomise_batchnorm(nets.build("small", 2))
    module = _Failing(inner)
    clf = Classifier.from_module(module, ["safe", "unsafe"], ["unsafe"], preprocess=Preprocess(resize=(32, 32)))
    children = [id(m) for m in module.modules()]
    params = {"target_layer": "inner.layers"} if method in ("gradcam", "ablationcam", "ablationcam-ref") else {}
    with pytest.raises(RuntimeError, match="model failed"):
        attribution_map(clf, _image(32, 32), 1, method, **params)
    assert _hook_count(module) == 0
    assert [id(m) for m in module.modules()] == children


def test_default_target_layer_is_the_last_feature_stage(small, resnet18):
    assert default_target_layer(small.module, small.tensor([_image()])) == "layers"
    assert default_target_layer(resnet18.module, resnet18.tensor([_image()])) == "layer4"


def test_target_layer_can_be_named(small):
    image = _image(seed=11)
    early = attribution_map(small, image, 1, "gradcam", target_layer="layers.1")
    last = attribution_map(small, image, 1, "gradcam", target_layer="layers")
    assert early.shape == last.shape == (64, 64)
    assert not np.allclose(early, last)


def test_deterministic(small):
    image = _image(seed=12)
    for method in ("fullgrad", "gradcam"):
        assert np.array_equal(attribution_map(small, image, 1, method), attribution_map(small, image, 1, method))


def test_bad_requests_raise_safeview_errors(small):
    image = _image()
    with pytest.raises(SafeViewError, match="unknown attribution method"):
        attribution_map(small, image, 1, "integrated-gradients")
    with pytest.raises(SafeViewError, match="unknown parameter"):
        attribution_map(small, image, 1, "fullgrad", target_layer="layers")
    with pytest.raises(ModelError, match="out of range"):
        attribution_map(small, image, 2)
    with pytest.raises(SafeViewError, match="targets"):
        attribution_maps(small, [image, image], [1])
    with pytest.raises(ImageError):
        attribution_map(small, image.astype(np.float32), 1)
    with pytest.raises(ModelError, match="no such module"):
        attribution_map(small, image, 1, "gradcam", target_layer="layer9")
    assert method_params("ablationcam") == {"target_layer": None, "batch_size": 32, "copies_per_forward": None}
    assert method_params("ablationcam-ref") == {"target_layer": None, "batch_size": 32}
    assert method_params("fullgrad") == {"per_channel": False}


def test_converted_onnx_graph_with_conv_biases():
    """A converted ONNX graph (BatchNorm folded into conv biases, plain ``nn.Conv2d`` modules)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from safeview.onnxnet import convert

    rng = np.random.default_rng(0)

    def weights(name, *shape):
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    inits = [weights("w1", 8, 3, 3, 3), weights("b1", 8), weights("w2", 8, 8, 3, 3), weights("b2", 8), weights("w3", 2, 8), weights("b3", 2)]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    clf = Classifier.from_module(convert(model), ["safe", "unsafe"], ["unsafe"], preprocess=Preprocess(resize=(32, 32)))
    image = _image(32, 32, 13)
    ours = attribution_map(clf, image, 1, per_channel=True)
    assert _pearson(ours, attribution_map(clf, image, 1, "fullgrad-ref")) >= 0.99
    assert attribution_map(clf, image, 1).max() == 1.0
    assert attribution_map(clf, image, 1, "gradcam").shape == (32, 32)
    assert _hook_count(clf.module) == 0
