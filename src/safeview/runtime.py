"""Predictions without torch: an onnxruntime session of a classifier's own ONNX graph.

Predictions (classification, the search's candidates, verification) need no gradients. On this
CPU onnxruntime computes Open-NSFW's fp32 outputs 2.7× faster than the torch module (12 ms against
33 ms per image; bench/results/forwards.md), within 1e-5 of its logits, and a classifier that
predicts through it needs no torch import at all until an image is flagged.
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
