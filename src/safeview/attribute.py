"""Attribution maps: which pixels drive a classifier's score for a class (paper, Sec. 3.2).

The default is FullGrad (Srinivas & Fleuret 2019), the paper's choice: the target class logit
(pre-softmax) is decomposed into an input-gradient term |∇x f ⊙ x| plus one bias-gradient term
|∇b f ⊙ b| per conv/BatchNorm layer; each term is post-processed (abs, min–max, bilinear upsample,
sum over channels) and all are summed. Ours runs in torch with one forward and one backward for a
whole batch, many times faster than pytorch-grad-cam's per-channel numpy version (``fullgrad-ref``).

Ablation-CAM (Desai & Ramaswamy 2020) is hand-written too: pytorch-grad-cam (``ablationcam-ref``)
runs the *whole* network once per ablated channel of the target layer — 2,048 ResNet-50 forwards
per image, about two minutes on two CPU cores — although only the layers after the target layer
see the ablation. Ours runs the network once, keeps the target layer's output, and then lets a
forward hook on that layer hand the rest of the network hundreds of ablated copies at a time, so
the layers before it run once per batch of copies on a single image. It reproduces the library's
maps: the same ablation values, weights ``(score − ablated score) / score``, ReLU, min–max and
resize. The other CAM methods the paper compares against (Grad-CAM, Grad-CAM++, XGrad-CAM,
Table 3) run through pytorch-grad-cam. Every map is returned at image resolution, normalised to [0, 1].
"""

from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from .classify import Classifier
from .errors import ImageError, ModelError, SafeViewError

if TYPE_CHECKING:
    import torch
    from torch import nn

#: pytorch-grad-cam hooks the shared module (and Ablation-CAM swaps one of its layers), so calls
#: through the library are serialised; our FullGrad only hooks outputs of its own thread's forward.
_LIBRARY_LOCK = threading.Lock()


# -- FullGrad ---------------------------------------------------------------------------------


def _effective_bias(module: nn.Module) -> torch.Tensor | None:
    """The additive bias a layer applies to its output in eval mode, or None if it has none.

    BatchNorm in eval computes γ(x − μ)/√(σ² + ε) + β = (γ/√(σ² + ε))·x + (β − μγ/√(σ² + ε)),
    so its bias is β − μγ/√(σ² + ε) (γ = 1, β = 0 without affine parameters). A BatchNorm without
    running statistics normalises with the batch's own and has no fixed bias: it contributes none.
    """
    import torch
    from torch import nn

    if isinstance(module, nn.BatchNorm2d):
        if module.running_mean is None or module.running_var is None:
            return None
        scale = torch.rsqrt(module.running_var + module.eps)
        if module.weight is not None:
            scale = scale * module.weight
        bias = -module.running_mean * scale
        return (bias + module.bias if module.bias is not None else bias).detach()
    if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
        return module.bias.detach()
    return None


def _full_gradients(
    classifier: Classifier,
    x: torch.Tensor,
    targets: Sequence[int],
    on_layer: Callable[[torch.Tensor, torch.Tensor], None],
) -> torch.Tensor:
    """One forward and one backward of the batch's summed target logits through
    :meth:`Classifier.gradient_module` (a checkpoint's copy with its BatchNorms folded into the
    convolutions, whose outputs and biases are the BatchNorms' own): calls ``on_layer(g, b)``
    during the backward with the gradient ``g`` of every biased layer's output (each call of a
    layer) and that layer's bias ``b``, and returns the input gradient ∇x.

    Gradients are taken with ``torch.autograd.grad`` on the input only, so no parameter ``.grad``
    is touched and weight gradients are never computed. Tensor hooks are registered before any
    in-place op (e.g. ``ReLU(inplace=True)``) can modify a layer's output, and so receive the
    gradient of the layer's own output. The module hooks are removed even if the model fails.
    """
    import torch

    module = classifier.gradient_module()
    biases = {m: b for m in module.modules() if (b := _effective_bias(m)) is not None}
    caller = threading.get_ident()

    def on_forward(layer: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        if threading.get_ident() != caller or not isinstance(output, torch.Tensor) or not output.requires_grad:
            return
        bias = biases[layer]

        def on_grad(grad: torch.Tensor) -> None:
            on_layer(grad, bias)

        output.register_hook(on_grad)

    handles = [m.register_forward_hook(on_forward) for m in biases]
    try:
        x = x.detach().requires_grad_(True)
        logits = module(x) / classifier.temperature
        classifier.remember(x, logits)  # the same forward's prediction, for a scan's later checks of this input
        index = torch.as_tensor(list(targets), device=logits.device).view(-1, 1)
        score = logits.gather(1, index).sum()
        (input_grad,) = torch.autograd.grad(score, x)
    finally:
        for handle in handles:
            handle.remove()
    return input_grad


def _fullgrad(classifier: Classifier, x: torch.Tensor, targets: Sequence[int], *, per_channel: bool = False) -> np.ndarray:
    """FullGrad maps ``(N, h, w)`` at the model's input resolution.

    ``per_channel=False`` (default) post-processes as the authors' reference code: each term is
    min–max normalised over the whole layer tensor per image (ε = 1e-6) and upsampled bilinearly
    with ``align_corners=True``; linear layers (no spatial map) are left out of the map, as there.
    ``per_channel=True`` reproduces pytorch-grad-cam's ``FullGrad``: every channel is min–max
    normalised on its own (ε = 1e-7) and resized like OpenCV (``align_corners=False``).
    """
    import torch
    import torch.nn.functional as F

    eps, dims = (1e-7, (2, 3)) if per_channel else (1e-6, (1, 2, 3))

    def normalised_channel_sum(term: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        term = (term if bias is None else term * bias.view(1, -1, 1, 1)).abs().float()
        low, high = term.amin(dim=dims, keepdim=True), term.amax(dim=dims, keepdim=True)
        return ((term - low) / (high - low + eps)).sum(dim=1)

    def scaled_channel_sum(grad: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``normalised_channel_sum(grad, bias)`` for one min–max per image, in three passes over the
        layer's gradient instead of seven (6.9 against 11.2 ms a ResNet-50 map): |g·b| = |g|·|b|, the
        image's extremes are its channels' extremes of |g| scaled by |b| (exactly), and
        Σ_c (t − low)/(high − low + ε) = (Σ_c t − C·low)/(high − low + ε), whose channel sum is a
        matrix product. A channels-last gradient (a folded copy's) is read in its own layout."""
        n, c, h, w = grad.shape
        scale = bias.abs().float()
        if grad.is_contiguous() or not grad.is_contiguous(memory_format=torch.channels_last):
            magnitude = grad.abs().float().reshape(n, c, h * w)
            low, high = magnitude.amin(dim=2), magnitude.amax(dim=2)
            summed = scale.view(1, 1, -1) @ magnitude
        else:
            magnitude = grad.abs().float().permute(0, 2, 3, 1).reshape(n, h * w, c)  # a view
            low, high = magnitude.amin(dim=1), magnitude.amax(dim=1)
            summed = magnitude @ scale
        low = (low * scale).amin(dim=1).view(-1, 1, 1)
        high = (high * scale).amax(dim=1).view(-1, 1, 1)
        return (summed.view(n, h, w) - c * low) / (high - low + eps)

    # Channels are summed at the layer's own resolution and each resolution is upsampled once:
    # the min–max step is a per-image (or per-channel) affine map of constants, and bilinear
    # upsampling is linear, so summing before upsampling equals upsampling every channel first.
    by_size: dict[tuple[int, int], torch.Tensor] = {}

    def on_layer(grad: torch.Tensor, bias: torch.Tensor) -> None:
        if grad.dim() == 4:
            layer_map = (normalised_channel_sum if per_channel else scaled_channel_sum)(grad, bias)
            size = tuple(layer_map.shape[-2:])
            by_size[size] = by_size[size] + layer_map if size in by_size else layer_map

    input_grad = _full_gradients(classifier, x, targets, on_layer)
    total = normalised_channel_sum(input_grad * x)
    height, width = x.shape[-2:]
    for size, layer_sum in by_size.items():
        if size != (height, width):
            layer_sum = F.interpolate(layer_sum[:, None], size=(height, width), mode="bilinear", align_corners=not per_channel)[:, 0]
        total = total + layer_sum
    return total.cpu().numpy()


# -- pytorch-grad-cam ---------------------------------------------------------------------------


def default_target_layer(module: nn.Module, x: torch.Tensor) -> str:
    """Name of the CAM target layer: the module that last produces a spatial feature map (4-D,
    both sides > 1) in one forward of ``x``, among modules called once — for a ResNet, the last
    stage (``layer4``). Found by running the model, so it works for any graph, converted ones too."""
    import torch

    order: list[tuple[str, tuple[int, ...]]] = []
    calls: dict[str, int] = {}

    def hook(name: str) -> Callable:
        def record(_layer: nn.Module, _inputs: tuple, output: object) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                order.append((name, tuple(output.shape)))

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in module.named_modules() if name]
    try:
        with torch.no_grad():
            module(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    # both spatial sides > 1: a pooled (N, 1, 1, C) reshape, as in converted graphs, is not a map
    once = [name for name, shape in order if calls[name] == 1 and shape[2] > 1 and shape[3] > 1]
    if not once:
        raise ModelError(f"{type(module).__name__}: no convolutional feature map found for a CAM; pass target_layer='<module path>'")
    return once[-1]


def _resolve_layer(module: nn.Module, x: torch.Tensor, target_layer: str | nn.Module | None) -> nn.Module:
    from torch import nn

    if isinstance(target_layer, nn.Module):
        return target_layer
    name = target_layer or default_target_layer(module, x)
    try:
        return module.get_submodule(name)
    except AttributeError as exc:
        raise ModelError(f"target_layer {name!r}: no such module in the model; give a path such as 'layer4'") from exc


def _run_library_cam(cam_class: type, classifier: Classifier, x: torch.Tensor, targets: Sequence[int], layers: list[nn.Module], **kwargs) -> np.ndarray:
    """Run a pytorch-grad-cam method on the raw module (a temperature scales every gradient and
    score alike, which the CAMs' normalisation removes) and release its hooks whatever happens."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = x.detach().requires_grad_(True)  # a fully frozen model still gets its backward
    with _LIBRARY_LOCK:
        cam = cam_class(classifier.module, layers, **kwargs)
        try:
            return np.asarray(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets]), np.float32)
        finally:
            cam.activations_and_grads.release()


def _fullgrad_ref(classifier: Classifier, x: torch.Tensor, targets: Sequence[int]) -> np.ndarray:
    """pytorch-grad-cam's FullGrad (slow: it resizes every channel with OpenCV); for comparison."""
    from pytorch_grad_cam import FullGrad

    return _run_library_cam(FullGrad, classifier, x, targets, [])


def _cam_method(class_name: str) -> Callable[..., np.ndarray]:
    def run(classifier: Classifier, x: torch.Tensor, targets: Sequence[int], *, target_layer: str | nn.Module | None = None) -> np.ndarray:
        import pytorch_grad_cam

        layer = _resolve_layer(classifier.module, x, target_layer)
        return _run_library_cam(getattr(pytorch_grad_cam, class_name), classifier, x, targets, [layer])

    run.__doc__ = f"pytorch-grad-cam's {class_name} on ``target_layer`` (default: :func:`default_target_layer`)."
    return run


def _ablationcam_ref(
    classifier: Classifier, x: torch.Tensor, targets: Sequence[int], *, target_layer: str | nn.Module | None = None, batch_size: int = 32
) -> np.ndarray:
    """pytorch-grad-cam's AblationCAM (slow; for comparison): one forward of the whole network per
    ``batch_size`` ablated copies of the target layer. The library swaps the target layer out of
    the model while it runs; if it fails half-way the original layer is put back here."""
    from pytorch_grad_cam import AblationCAM
    from pytorch_grad_cam.ablation_layer import AblationLayer

    module = classifier.module
    layer = _resolve_layer(module, x, target_layer)
    slots = [(parent, key) for parent in module.modules() for key, child in parent._modules.items() if child is layer]
    try:
        return _run_library_cam(AblationCAM, classifier, x, targets, [layer], ablation_layer=AblationLayer(), batch_size=int(batch_size))
    finally:
        for parent, key in slots:
            parent._modules[key] = layer


#: the ablated copies handed to the rest of the network per forward, in activation elements
#: (float32: 256 MiB); a ResNet-50's 2,048 layer4 channels at 224² go in four forwards
_ABLATION_ELEMENTS = 1 << 26
#: pytorch-grad-cam's AblationLayer: the amount below the minimum it writes where the layer's
#: output has no zero (where it has, the ablated channel is set to 0, as in the paper)
_ABLATION_VALUE = 1e7


def _ablation_values(minimum: torch.Tensor, channels: int, batch_size: int) -> torch.Tensor:
    """The value pytorch-grad-cam's AblationLayer writes into channel ``c`` of an image's
    activation, for every ``c``: 0 where the activation's minimum is 0 (ReLU outputs), else the
    current minimum of its batch of copies less 1e7 — and as each copy's ablation lowers that
    minimum, the ``k``-th copy of a batch of ``batch_size`` gets ``minimum − (k + 1)·1e7``
    (computed in float32 step by step, as there)."""
    import torch

    if bool(minimum == 0):
        return torch.zeros(channels, dtype=minimum.dtype, device=minimum.device)
    steps, value = [], minimum
    for _ in range(min(channels, batch_size)):
        value = value - _ABLATION_VALUE
        steps.append(value)
    return torch.stack(steps)[torch.arange(channels, device=minimum.device) % batch_size]


def _scale_maps(cams: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """pytorch-grad-cam's ``scale_cam_image``: per map min–max (ε = 1e-7), then an OpenCV
    bilinear resize to ``size`` (h, w)."""
    import cv2

    out = []
    for cam in cams:
        cam = cam - np.min(cam)
        cam = cam / (1e-7 + np.max(cam))
        if size is not None:
            cam = cv2.resize(np.float32(cam), (size[1], size[0]))
        out.append(cam)
    return np.float32(out)


def _ablationcam(
    classifier: Classifier,
    x: torch.Tensor,
    targets: Sequence[int],
    *,
    target_layer: str | nn.Module | None = None,
    batch_size: int = 32,
    copies_per_forward: int | None = None,
) -> np.ndarray:
    """Ablation-CAM, batched: pytorch-grad-cam's maps, with the layers before ``target_layer`` run
    on a single image per forward and only the layers after it on the ablated copies.

    A forward hook on the target layer replaces its output, computed for one image, by
    ``copies_per_forward`` copies (default: as many as fit in 256 MiB) of the output the first
    forward recorded, each with one channel ablated; the layers after it run on the whole batch
    and broadcast anything they take from before the layer. A model that cannot take a batch grown
    inside it (a reshape by the input's batch size, a concatenation with an earlier feature) gets
    the library's way instead: the image repeated ``batch_size`` times at the input. ``batch_size``
    is the library's; it decides nothing else except the ablation value of a layer whose output has
    no zero (:func:`_ablation_values`). Scores are the module's raw outputs, as the library takes
    them (a temperature cancels in the weights)."""
    import torch

    module = classifier.module
    layer = _resolve_layer(module, x, target_layer)
    if batch_size < 1 or (copies_per_forward is not None and copies_per_forward < 1):
        raise SafeViewError(f"ablationcam: batch_size and copies_per_forward must be at least 1, got {batch_size}, {copies_per_forward}")
    caller = threading.get_ident()
    state: dict[str, torch.Tensor | None] = {"recorded": None, "replace": None}

    def on_forward(_layer: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if threading.get_ident() != caller:
            return None
        if state["replace"] is not None:
            return state["replace"]
        state["recorded"] = output.detach()
        return None

    expand = [True]  # whether the model takes the batch of copies grown at the hook

    def scores_of(single: torch.Tensor, copies: torch.Tensor, target: int) -> torch.Tensor:
        n = copies.shape[0]
        state["replace"] = copies
        try:
            if expand[0]:
                try:
                    out = module(single)
                    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == n:
                        return out[:, target]
                except Exception:  # noqa: BLE001 — any failure of the grown batch: take the library's way
                    pass
                expand[0] = False
            out = []
            for start in range(0, n, batch_size):
                state["replace"] = copies[start : start + batch_size]
                out.append(module(single.expand(state["replace"].shape[0], *single.shape[1:]))[:, target])
            return torch.cat(out)
        finally:
            state["replace"] = None

    handle = layer.register_forward_hook(on_forward)
    try:
        with torch.no_grad():
            outputs = module(x.detach())
            activations = state["recorded"]
            if activations is None or activations.dim() != 4 or activations.shape[0] != x.shape[0]:
                raise ModelError(f"ablationcam: target layer {type(layer).__name__} gave no (N, C, h, w) feature map for the batch")
            original = np.float32([float(outputs[i, t]) for i, t in enumerate(targets)])
            channels = activations.shape[1]
            per_forward = min(channels, copies_per_forward or max(1, _ABLATION_ELEMENTS // max(1, activations[0].numel())))
            forwards = -(-channels // per_forward)
            per_forward = -(-channels // forwards)  # the same number of copies in every forward
            ablated = np.zeros((x.shape[0], channels), np.float32)
            for i, target in enumerate(targets):
                activation = activations[i]
                values = _ablation_values(activation.min(), channels, batch_size)
                for start in range(0, channels, per_forward):
                    stop = min(channels, start + per_forward)
                    copies = activation.unsqueeze(0).repeat(stop - start, 1, 1, 1)
                    rows = torch.arange(stop - start, device=copies.device)
                    copies[rows, rows + start] = values[start:stop, None, None]
                    ablated[i, start:stop] = scores_of(x[i : i + 1].detach(), copies, int(target)).float().cpu().numpy()
    finally:
        handle.remove()
    weights = (original[:, None] - ablated) / original[:, None]
    cam = (weights[:, :, None, None] * activations.float().cpu().numpy()).sum(axis=1)
    cam = _scale_maps(np.maximum(cam, 0), tuple(x.shape[-2:]))
    return _scale_maps(np.maximum(cam, 0))


_METHODS: dict[str, Callable[..., np.ndarray]] = {
    "fullgrad": _fullgrad,
    "fullgrad-ref": _fullgrad_ref,
    "gradcam": _cam_method("GradCAM"),
    "gradcam++": _cam_method("GradCAMPlusPlus"),
    "xgradcam": _cam_method("XGradCAM"),
    "ablationcam": _ablationcam,
    "ablationcam-ref": _ablationcam_ref,
}
#: the attribution methods, FullGrad (ours, fast) first
METHODS = tuple(_METHODS)


# -- public API ---------------------------------------------------------------------------------


def method_params(method: str) -> dict[str, object]:
    """The keyword parameters ``method`` accepts, with their defaults."""
    if method not in _METHODS:
        raise SafeViewError(f"{method!r}: unknown attribution method; choose one of {', '.join(METHODS)}")
    signature = inspect.signature(_METHODS[method])
    return {p.name: p.default for p in signature.parameters.values() if p.kind is p.KEYWORD_ONLY}


@contextmanager
def _model_state(module: nn.Module) -> Iterator[None]:
    """Eval mode for the attribution; afterwards the module's train/eval mode and its parameters'
    ``.grad`` are as before (pytorch-grad-cam's backward would otherwise leave gradients behind)."""
    training = module.training
    grads = [(p, p.grad) for p in module.parameters()]
    module.eval()
    try:
        yield
    finally:
        module.train(training)
        for param, grad in grads:
            param.grad = grad


def _normalise(values: np.ndarray) -> np.ndarray:
    """Min–max to [0, 1]; a constant map (no evidence anywhere) becomes all zeros."""
    values = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
        raise ImageError(f"attribution needs H×W×3 uint8 RGB images, got shape {image.shape} dtype {image.dtype}")
    return image


def attribution_maps(
    classifier: Classifier,
    images: Sequence[np.ndarray] | np.ndarray,
    targets: Sequence[int],
    method: str = "fullgrad",
    *,
    max_batch: int = 16,
    **params: object,
) -> list[np.ndarray]:
    """Attribution maps of ``targets[i]`` (a class index) for each H×W×3 uint8 image: a list of
    (H, W) float32 maps in [0, 1], each at its own image's size.

    ``method`` is one of :data:`METHODS`; ``params`` are its keyword options (:func:`method_params`):
    ``fullgrad``: ``per_channel=False``; ``gradcam``/``gradcam++``/``xgradcam``:
    ``target_layer=None`` (a module path such as ``"layer4"``, or a module); ``ablationcam``:
    ``target_layer=None, batch_size=32, copies_per_forward=None``; ``ablationcam-ref``:
    ``target_layer=None, batch_size=32``. Images go through the model ``max_batch`` at a time,
    each group in one forward and one backward where the method allows.
    """
    allowed = method_params(method)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise SafeViewError(f"{method}: unknown parameter(s) {unknown}; it accepts {sorted(allowed) or 'none'}")
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    images = [_check_image(image) for image in images]
    targets = [int(t) for t in targets]
    if len(targets) != len(images):
        raise SafeViewError(f"{len(images)} images but {len(targets)} targets; give one target class per image")
    bad = [t for t in targets if not 0 <= t < len(classifier.labels)]
    if bad:
        raise ModelError(f"{classifier.name}: target class(es) {bad} out of range for {len(classifier.labels)} labels")
    if max_batch < 1:
        raise SafeViewError(f"max_batch must be at least 1, got {max_batch}")
    run = _METHODS[method]
    maps: list[np.ndarray] = []
    with _model_state(classifier.module):
        for start in range(0, len(images), max_batch):
            chunk = images[start : start + max_batch]
            x = classifier.tensor(chunk)
            for image, values in zip(chunk, run(classifier, x, targets[start : start + max_batch], **params)):
                maps.append(_normalise(classifier.preprocess.to_image(values, image.shape[:2])))
    return maps


def attribution_map(classifier: Classifier, image: np.ndarray, target: int, method: str = "fullgrad", **params: object) -> np.ndarray:
    """Attribution map (H, W) float32 in [0, 1] of class ``target`` for one H×W×3 uint8 image;
    see :func:`attribution_maps` for the methods and their parameters."""
    return attribution_maps(classifier, [image], [target], method, **params)[0]
