"""Text in the image, read by RapidOCR (``rapidocr``, Apache-2.0) with the PaddleOCR PP-OCRv6
small detection and recognition models and the PP-OCR mobile angle classifier (Apache-2.0,
Baidu/PaddleOCR), all ONNX files inside the ``rapidocr`` wheel and run by onnxruntime.

Why ``rapidocr`` and not ``rapidocr-onnxruntime`` 1.4.4 (PP-OCRv4 in its wheel): 1.4.4 requires
``opencv-python``, the Qt/libGL build, which pip installs over the project's
``opencv-python-headless`` into the same ``cv2/`` folder (``pip check`` sees no problem; removing
either distribution then leaves no ``cv2`` at all). ``rapidocr`` 3.x requires the headless build.

Nothing is downloaded: the adapter passes the bundled model files explicitly (RapidOCR would fetch
a model whose file is missing), and a wheel without them makes this detector fail, not fetch.
Each detected line becomes a ``text`` attribute: its string, the recogniser's confidence as the
score and the axis-aligned box around the detected quadrilateral (for rotated text the box holds
the whole line). This answers the paper's question "Is there any text in the image that might be
considered hate speech?" together with :mod:`.offensive`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .base import Attribute
from .detector import Detector

#: the bundled model files, by RapidOCR's task name
_MODELS = {"Det": "*_det_*.onnx", "Cls": "*_cls_*.onnx", "Rec": "*_rec_*.onnx"}


def _bundled(package_dir: Path) -> dict[str, Path]:
    found = {}
    for task, pattern in _MODELS.items():
        files = sorted((package_dir / "models").glob(pattern))
        if len(files) != 1:
            raise RuntimeError(f"rapidocr's wheel should hold one {pattern} model in {package_dir / 'models'}, found {len(files)}")
        found[task] = files[0]
    return found


class OCR(Detector):
    name = "ocr"
    package = "rapidocr"
    module = "rapidocr"
    sees = ("text",)

    def build(self, module: Any) -> Any:
        models = _bundled(Path(module.__file__).parent)
        params = {f"{task}.model_path": str(path) for task, path in models.items()}
        from .detector import detector_threads

        threads = {"EngineConfig.onnxruntime.intra_op_num_threads": detector_threads(), "EngineConfig.onnxruntime.inter_op_num_threads": 1}
        return module.RapidOCR(params={**params, **threads, "Global.log_level": "error"})

    def version(self) -> str:
        import rapidocr

        models = _bundled(Path(rapidocr.__file__).parent)
        return f"{super().version()} ({', '.join(p.stem for p in models.values())})"

    def find(self, model: Any, image: np.ndarray, found: list[Attribute]) -> list[Attribute]:
        result = model(cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR))
        if result.boxes is None or result.txts is None:
            return []
        h, w = image.shape[:2]
        version = self.version()
        out = []
        for quad, text, score in zip(result.boxes, result.txts, result.scores):
            quad = np.asarray(quad, float)
            x0, y0 = np.floor(quad.min(axis=0)).astype(int)
            x1, y1 = np.ceil(quad.max(axis=0)).astype(int)
            box = (max(0, int(x0)), max(0, int(y0)), min(w, int(x1) + 1), min(h, int(y1) + 1))
            out.append(Attribute("text", float(score), self.name, version, box=box, text=str(text)))
        return out
