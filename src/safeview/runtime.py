"""Faster runtimes for predictions, which need no gradients (classification, the search's
candidates, verification): an onnxruntime session of a classifier's own ONNX graph, and, for a
torch checkpoint, an onnxruntime session of its module's ONNX export (a folded copy of the module
where the export fails). Each computes the module's fp32 scores.

On this CPU onnxruntime computes Open-NSFW's outputs 2.2× faster than the torch module (12.3 ms
against 26.7 ms per image; bench/results/forwards.md), within 1e-5, and a classifier that predicts
through it needs no torch import at all until an image is flagged; a torchvision ResNet-50's export
runs 1.4× faster than its folded copy at batch 1, the search's size on a CPU (42.5 against 60.1 ms),
and the demo CNN's 1.4× (2.1 against 3.0 ms; 2.1× the torch module). Exporting takes
seconds (2.5 s for a ResNet-50), so an export is kept in an on-disk cache (:func:`cache_dir`) keyed
by the module's architecture and weights, and checked against the module at every load. Written
here because neither library offers the part SafeView needs: a predictor that follows the module's
weights (it is used only while they are unchanged, :class:`~safeview.classify.Classifier`) and
checks its copy against the module before serving.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np


class OnnxSession:
    """Callable as ``(N, C, H, W) float32 array -> (N, K) logits``, by the ONNX model at ``source``
    (a path or serialised bytes) with one input and one output. ``layout="NHWC"``: the graph takes
    channels last (the batch is transposed for it); ``outputs="probabilities"``: the graph ends in
    a softmax, whose logarithm is returned (logits up to a per-row constant, which no softmax sees).

    The session is created on first use, with as many threads as this process may use then (so a
    worker's thread cap applies), and never pickled (a copy in a worker process creates its own).
    """

    def __init__(self, source: str | Path | bytes, *, layout: str = "NCHW", outputs: str = "logits") -> None:
        if layout not in ("NCHW", "NHWC") or outputs not in ("logits", "probabilities"):
            raise ValueError(f"layout must be NCHW or NHWC and outputs logits or probabilities, got {layout}, {outputs}")
        self.source = str(source) if isinstance(source, Path) else source
        self.layout, self.outputs = layout, outputs
        self._session: Any = None
        self._lock = threading.Lock()

    def _create(self) -> Any:
        import onnxruntime as ort

        from .threads import thread_limit

        threads = thread_limit()
        if "torch" in sys.modules:  # a cap set with torch.set_num_threads applies too
            threads = min(threads, sys.modules["torch"].get_num_threads())
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = max(1, threads), 1
        # no busy-waiting after a run: CSE alternates these predictions with torch's attribution,
        # whose threads the spinning ones would slow (measured: 184 -> 145 ms for one
        # FullGrad and eight predictions of Open-NSFW; 5 % slower for predictions alone)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        return ort.InferenceSession(self.source, options, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            if self._session is None:
                self._session = self._create()
        session = self._session
        x = np.asarray(batch, np.float32)
        if self.layout == "NHWC":
            x = x.transpose(0, 2, 3, 1)
        (out,) = session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})
        out = np.asarray(out, np.float32)
        if self.outputs == "probabilities":
            with np.errstate(divide="ignore"):
                out = np.log(out)
        return out

    def __getstate__(self) -> dict:
        return {"source": self.source, "layout": self.layout, "outputs": self.outputs}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["source"], layout=state["layout"], outputs=state["outputs"])


#: the environment variable that names the on-disk cache; set to an empty string to keep nothing on disk
CACHE_ENV = "SAFEVIEW_CACHE_DIR"


def cache_dir() -> Path | None:
    """Where derived artefacts (a checkpoint's ONNX export) are kept: ``$SAFEVIEW_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/safeview``, else ``~/.cache/safeview``; ``None`` when the variable is set
    empty. Nothing in it is ever trusted: an export read from it is checked against the module."""
    if CACHE_ENV in os.environ:
        return Path(os.environ[CACHE_ENV]).expanduser() if os.environ[CACHE_ENV] else None
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except (KeyError, RuntimeError):  # no home directory to resolve: nothing is kept
        return None
    return Path(base) / "safeview"


def _module_key(module: Any, input_size: tuple[int, int]) -> str:
    """A digest of what a module's export depends on: torch's version, the module's class and
    structure, the input size, and every parameter and buffer, bit for bit."""
    import hashlib

    import torch

    digest = hashlib.blake2b(digest_size=20)
    for part in ("safeview-onnx-1", torch.__version__, type(module).__qualname__, repr(module), repr(input_size)):
        digest.update(part.encode() + b"\0")
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _export(module: Any, input_size: tuple[int, int]) -> bytes:
    """The module's ONNX graph (fp32, any batch size) by torch's exporter, silenced: its
    deprecation and tracer warnings say nothing a user can act on."""
    import io
    import warnings

    import torch

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros((1, 3, *input_size)), buffer, dynamo=False, input_names=["x"],
                          output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    return buffer.getvalue()


def store(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a reader sees the old file or the whole new one),
    private to this user; a cache that cannot be written is skipped, never an error."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


class TorchRuntime:
    """Callable as ``(N, C, H, W) float32 array -> (N, K) logits`` by copies of a torch classifier's
    ``module`` prepared for predictions (and FullGrad), made on first use and each checked against the module
    on a random probe input before serving (logits within 1e-4):

    - an onnxruntime session of the module's ONNX export (:func:`cache_dir` keeps it), for inputs of
      the classifier's size: 1.4× the speed of the folded copy for a ResNet-50 and for the demo
      CNN at batch 1 (bench/results/forwards.md);
    - a copy with every convolution followed directly by a BatchNorm folded into one convolution
      (``torch.nn.utils.fusion``), channels-last, no parameter gradients: for other sizes, and where the export
      fails or disagrees; it is also what FullGrad differentiates (:meth:`gradient_module`). When the
      folding changes the logits (a convolution and a BatchNorm that follow each other in the
      module's definition but not in its forward), the module itself is used.
    """

    def __init__(self, module: Any, input_size: tuple[int, int]) -> None:
        self.module, self.input_size = module, tuple(input_size)
        self._exported = False
        self._onnx: OnnxSession | None = None
        self._fast: Any = None
        self._merged_biases = False  # the folded copy joined a convolution's own bias to a BatchNorm's
        self._lock = threading.Lock()

    def _probe(self) -> tuple[np.ndarray, np.ndarray]:
        """A random input of the classifier's size, and the module's logits for it."""
        import torch

        probe = np.random.default_rng().normal(0, 1, (2, 3, *self.input_size)).astype(np.float32)
        with torch.inference_mode():
            return probe, self.module(torch.from_numpy(probe)).float().numpy()

    @staticmethod
    def _agrees(got: np.ndarray, expected: np.ndarray) -> bool:
        return got.shape == expected.shape and bool(np.allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max()))))

    def _fold(self) -> Any:
        """The folded channels-last copy, or the module itself where folding changes its logits."""
        import copy

        import torch
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        fast = copy.deepcopy(self.module).eval().requires_grad_(False)
        self._merged_biases = False
        for parent in fast.modules():
            names = list(parent._modules)
            for a, b in zip(names, names[1:]):
                conv, norm = parent._modules[a], parent._modules[b]
                if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d) and norm.track_running_stats:
                    self._merged_biases |= conv.bias is not None
                    parent._modules[a], parent._modules[b] = fuse_conv_bn_eval(conv, norm), torch.nn.Identity()
        fast = fast.to(memory_format=torch.channels_last)
        probe, expected = self._probe()
        with torch.inference_mode():
            got = fast(torch.from_numpy(probe).contiguous(memory_format=torch.channels_last)).float().numpy()
        return fast if self._agrees(got, expected) else self.module

    def gradient_module(self) -> Any:
        """The module for input gradients and FullGrad's bias-gradients: the folded copy (a ResNet-50's
        FullGrad in 0.12–0.13 s instead of 0.15, bench/README.md), whose folded convolutions output what the
        BatchNorms did, with the BatchNorms' effective biases, so every FullGrad term is the
        module's; the module itself where a folded convolution had a bias of its own (its term and
        the BatchNorm's would become one) or the folding changes the logits."""
        folded = self._folded()
        return self.module if self._merged_biases else folded

    def _folded(self) -> Any:
        with self._lock:
            if self._fast is None:
                self._fast = self._fold()
        return self._fast

    def _session(self) -> OnnxSession | None:
        """The export's session if it gives the module's logits on a probe (a cached export that
        does not is replaced by a fresh one); ``None`` where exporting fails or disagrees."""
        import copy

        probe, expected = self._probe()
        directory = cache_dir()
        path = directory / f"{_module_key(self.module, self.input_size)}.onnx" if directory else None
        if path is not None and path.is_file():
            try:
                session = OnnxSession(path)
                if self._agrees(session(probe), expected):
                    return session
            except Exception:  # noqa: BLE001 - a corrupt or foreign file is exported again
                pass
        try:
            graph = _export(copy.deepcopy(self.module).eval(), self.input_size)
            session = OnnxSession(graph)
            if not self._agrees(session(probe), expected):
                return None
        except Exception:  # noqa: BLE001 - an operator the exporter or onnxruntime lacks: the torch copy serves
            return None
        if path is not None:
            store(path, graph)
        return session

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        batch = np.asarray(batch, np.float32)
        with self._lock:
            if not self._exported:
                self._onnx, self._exported = self._session(), True
        if self._onnx is not None and batch.shape[1:] == (3, *self.input_size):
            return self._onnx(batch)
        folded = self._folded()
        with torch.inference_mode():
            return folded(torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)).float().numpy()

    def __getstate__(self) -> dict:
        return {"module": self.module, "input_size": self.input_size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["module"], state["input_size"])
