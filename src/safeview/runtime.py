"""Faster runtimes for predictions, which need no gradients (classification, the search's
candidates, verification): an onnxruntime session of a classifier's own ONNX graph, and a folded
copy of a torch checkpoint's module. Both compute the module's fp32 scores.

On this CPU onnxruntime computes Open-NSFW's outputs 2.2× faster than the torch module (12.3 ms
against 26.7 ms per image; bench/results/forwards.md), within 1e-5, and a classifier that predicts
through it needs no torch import at all until an image is flagged. Written here because neither
library offers the part SafeView needs: a predictor that follows the module's weights (it is used
only while they are unchanged, :class:`~safeview.classify.Classifier`) and checks a folded copy
against the module before serving.
"""

from __future__ import annotations

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


class TorchRuntime:
    """Callable as ``(N, C, H, W) float32 array -> (N, K) logits`` by a copy of a torch classifier's
    ``module`` prepared for predictions only: every convolution followed directly by a BatchNorm
    folded into one convolution (``torch.nn.utils.fusion``), channels-last memory, no autograd. On
    this CPU that is 1.4× the speed of the module for the small demo CNN and 1.1–1.3× for a
    ResNet-50 (batch 1–8), with the same fp32 logits within 1e-5 (bench/results/forwards.md). The copy is made on first use; when it does not give
    the module's logits on a probe input (a convolution and a BatchNorm that follow each other in
    the module's definition but not in its forward), the module itself is used as it is."""

    def __init__(self, module: Any, input_size: tuple[int, int]) -> None:
        self.module, self.input_size = module, tuple(input_size)
        self._fast: Any = None
        self._lock = threading.Lock()

    def _prepare(self) -> Any:
        import copy

        import torch
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        fast = copy.deepcopy(self.module).eval()
        for parent in fast.modules():
            names = list(parent._modules)
            for a, b in zip(names, names[1:]):
                conv, norm = parent._modules[a], parent._modules[b]
                if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d) and norm.track_running_stats:
                    parent._modules[a], parent._modules[b] = fuse_conv_bn_eval(conv, norm), torch.nn.Identity()
        fast = fast.to(memory_format=torch.channels_last)
        probe = torch.randn((2, 3, *self.input_size), generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            expected, got = self.module(probe).float(), fast(probe.contiguous(memory_format=torch.channels_last)).float()
        if not torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(expected.abs().max()))):
            return self.module
        return fast

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        with self._lock:
            if self._fast is None:
                self._fast = self._prepare()
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(batch, np.float32)).contiguous(memory_format=torch.channels_last)
            return self._fast(x).float().numpy()

    def __getstate__(self) -> dict:
        return {"module": self.module, "input_size": self.input_size}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["module"], state["input_size"])
