"""Unsafe-image classifiers: the pre-trained per-category binary models of the paper (ResNet-50, one
per category: sexual, cyberbullying, self-harm) and any torch classifier a user brings.

A :class:`Classifier` owns its labels, which of them are unsafe, its exact preprocessing and a
probability temperature; ``predict_proba`` is the ``predict`` callable the counterfactual search
needs, and ``module``/``tensor`` give attribution methods the differentiable path. Checkpoints are
one file, loaded with ``torch.load(weights_only=True)`` so a model file can never run code.

torch is imported only when a torch module is used: a classifier whose predictions run in its
``runtime`` (Open-NSFW in onnxruntime) and whose module is :class:`Deferred` classifies without it,
so loading the default model and scanning safe images skips torch's import (issue 18: start-up).
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import import_module
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image

from .errors import ModelError
from .inputs import file_sha256
from .schema import CATEGORIES

if TYPE_CHECKING:
    import torch
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHECKPOINT_FORMAT = "safeview-classifier"
CHECKPOINT_VERSION = 1

#: per thread: while :func:`remembered` is active, id(classifier) -> {input digest: probabilities}
_MEMO = threading.local()
#: inputs a memo keeps (each entry is a digest and C floats; the oldest are dropped first)
MEMO_SIZE = 4096

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """How uint8 RGB images become the model's input: resize the whole image to ``resize`` (h, w)
    with Pillow, optionally centre-crop to ``crop``, optionally round-trip through JPEG at
    ``jpeg_quality`` (for models trained on JPEG-decoded inputs, e.g. Open-NSFW), scale, reorder
    channels, normalise.

    The geometry is invertible (``to_image``), so an attribution computed on the input tensor
    maps back onto the original pixels.
    """

    resize: tuple[int, int] = (224, 224)
    crop: tuple[int, int] | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    scale: float = 1.0 / 255.0
    channels: str = "RGB"
    interpolation: str = "bilinear"
    jpeg_quality: int | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.crop or self.resize)  # type: ignore[return-value]

    def _crop_box(self) -> tuple[int, int, int, int]:
        rh, rw = self.resize
        ch, cw = self.input_size
        top, left = (rh - ch) // 2, (rw - cw) // 2
        return top, left, top + ch, left + cw

    def array(self, image: np.ndarray) -> np.ndarray:
        """One H×W×3 uint8 image -> the model's C×h×w float32 input."""
        rh, rw = self.resize
        if image.shape[:2] != (rh, rw):
            image = np.asarray(Image.fromarray(image).resize((rw, rh), _RESAMPLE[self.interpolation]))
        top, left, bottom, right = self._crop_box()
        image = image[top:bottom, left:right]
        if self.jpeg_quality is not None:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=self.jpeg_quality)
            image = np.asarray(Image.open(buffer).convert("RGB"))
        # (pixel · scale − mean) / std in float32, written channel by channel straight into the
        # C×h×w layout: the same float32 operations in the same order as on the H×W×3 array, so the
        # same values, without the temporaries and the transposing copy (bench/hotpaths.py times both)
        x = np.empty((3, *image.shape[:2]), np.float32)
        order = (2, 1, 0) if self.channels == "BGR" else (0, 1, 2)
        for plane, source, mean, std in zip(x, order, self.mean, self.std):
            np.multiply(image[..., source], np.float32(self.scale), out=plane, dtype=np.float32)
            plane -= np.float32(mean)
            plane /= np.float32(std)
        return x

    def to_image(self, values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """Map an (h, w) map on the model input back to an image of ``shape`` (H, W); pixels the
        crop discarded get 0 (the model never saw them)."""
        rh, rw = self.resize
        top, left, bottom, right = self._crop_box()
        frame = np.zeros((rh, rw), np.float32)
        frame[top:bottom, left:right] = values
        if (rh, rw) == tuple(shape):
            return frame
        import cv2

        return cv2.resize(frame, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


@dataclass
class Classifier:
    """A torch image classifier with its labels, unsafe labels, preprocessing and temperature.

    Calling it is ``predict_proba``: ``(N, H, W, 3) uint8`` (or a list of differently sized images)
    to ``(N, C)`` probabilities, which is the ``predict`` contract of the counterfactual search.
    """

    #: or a :class:`Deferred`, built on first access (the attribute then holds the module)
    module: "nn.Module" = field(repr=False, compare=False)
    labels: list[str]
    unsafe_labels: list[str]
    name: str = "classifier"
    category: str = "unsafe"
    preprocess: Preprocess = field(default_factory=Preprocess)
    temperature: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    batch_size: int = 32
    #: the same logits as ``module`` without gradients, faster on a CPU (:mod:`safeview.runtime`:
    #: an onnxruntime session of the model's own ONNX graph, or a folded channels-last copy of a
    #: checkpoint's module): ``(N, 3, h, w) float32 -> (N, C)``; used on a CPU while the module's
    #: weights are those it was built with and the module is in eval mode
    runtime: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.unsafe_labels) - set(self.labels)
        if unknown or not self.unsafe_labels or len(self.unsafe_labels) == len(self.labels):
            raise ModelError(
                f"{self.name}: unsafe labels {self.unsafe_labels} must be a non-empty proper subset of {self.labels}"
            )
        if not isinstance(self.__dict__["_module"], Deferred):
            self._adopt(self.__dict__["_module"])

    def _adopt(self, module: "nn.Module") -> "nn.Module":
        module.eval().to(self.device)
        self.__dict__["_module"] = module
        self._weights_version = _weights_version(module)
        return module

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        labels: Sequence[str],
        unsafe_labels: Sequence[str],
        *,
        name: str = "classifier",
        category: str = "unsafe",
        preprocess: Preprocess | None = None,
        temperature: float = 1.0,
        device: str = "cpu",
        metadata: dict[str, Any] | None = None,
    ) -> "Classifier":
        """Wrap any torch module mapping ``(N,3,h,w)`` float to ``(N,C)`` logits (ImageNet
        preprocessing at 224×224 by default)."""
        return cls(
            module=module,
            labels=list(labels),
            unsafe_labels=list(unsafe_labels),
            name=name,
            category=category,
            preprocess=preprocess or Preprocess(),
            temperature=float(temperature),
            metadata=dict(metadata or {}),
            device=device,
        )

    # -- inference ----------------------------------------------------------------------------
    @property
    def unsafe_indices(self) -> list[int]:
        return [self.labels.index(label) for label in self.unsafe_labels]

    @property
    def safe_indices(self) -> list[int]:
        return [i for i, label in enumerate(self.labels) if label not in self.unsafe_labels]

    def batch(self, images: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """Preprocess uint8 RGB images into one ``(N, 3, h, w)`` float32 array."""
        return np.stack([self.preprocess.array(np.asarray(img)) for img in _as_list(images)])

    def tensor(self, images: np.ndarray | Iterable[np.ndarray]) -> "torch.Tensor":
        """Preprocess uint8 RGB images into one ``(N, 3, h, w)`` float tensor on the device."""
        import torch

        return torch.from_numpy(self.batch(images)).to(self.device)

    def logits(self, x: "torch.Tensor") -> "torch.Tensor":
        """Temperature-scaled logits of a preprocessed batch (differentiable)."""
        return self.module(x) / self.temperature

    def gradient_module(self) -> "nn.Module":
        """The module to differentiate for FullGrad: the runtime's folded copy while the runtime
        applies (the same logits and FullGrad terms, :meth:`safeview.runtime.TorchRuntime.gradient_module`),
        otherwise :attr:`module`."""
        folded = getattr(self.runtime, "gradient_module", None)
        return folded() if folded is not None and self._runtime_applies() else self.module

    def _runtime_applies(self) -> bool:
        """Whether :attr:`runtime` computes what the module would: a CPU classifier whose module
        was never built, or is in eval mode with the weights it was built with."""
        if self.runtime is None or not str(self.device).startswith("cpu"):
            return False
        module = self.__dict__["_module"]
        if isinstance(module, Deferred):
            return True
        if module.training:
            return False
        # inside :func:`remembered` the weights do not change (its memo relies on that too), so they are
        # compared once per block: walking a module's tensors costs about 0.3 ms, on every query
        checked = getattr(_MEMO, "checked", None) if _memo_of(self) is not None else None
        if checked is not None and id(self) in checked:
            return True
        same = _weights_version(module) == self._weights_version
        if same and checked is not None:
            checked.add(id(self))
        return same

    def _probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax of the temperature-scaled logits of a preprocessed batch, without gradients."""
        if self._runtime_applies():
            logits = np.asarray(self.runtime(batch), np.float32) / np.float32(self.temperature)  # type: ignore[misc]
            shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
            return shifted / shifted.sum(axis=1, keepdims=True)
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            return torch.softmax(self.logits(x).float(), dim=1).cpu().numpy()

    def predict_proba(self, images: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
        """Class probabilities ``(N, C)`` for a batch of uint8 RGB images. Inside
        :func:`remembered`, an input this classifier has already seen is not forwarded again."""
        images = _as_list(images)
        out = []
        memo = _memo_of(self)
        for start in range(0, len(images), self.batch_size):
            batch = self.batch(images[start : start + self.batch_size])
            if memo is None:
                out.append(self._probabilities(batch))
                continue
            keys = _digests(batch)
            todo = {key: i for i, key in reversed(list(enumerate(keys))) if key not in memo}  # first of each
            if todo:
                for key, row in zip(todo, self._probabilities(batch[list(todo.values())])):
                    _memo_put(memo, key, row)
            out.append(np.stack([memo[key] for key in keys]))
        if not out:
            return np.zeros((0, len(self.labels)), np.float32)
        probabilities = np.concatenate(out).astype(np.float32)
        if not np.isfinite(probabilities).all():  # a NaN would pass every threshold test as "not above" and reach the JSON as null
            bad = int((~np.isfinite(probabilities).all(axis=1)).sum())
            raise ModelError(
                f"{self.name}: gave NaN or infinite probabilities for {bad} of {len(probabilities)} inputs; "
                "its weights or export are broken, retrain or re-export it"
            )
        return probabilities

    def remember(self, x: "torch.Tensor", logits: "torch.Tensor") -> None:
        """Record the :meth:`logits` of the preprocessed batch ``x`` that another forward (an
        attribution's, with gradients) computed, so that :meth:`predict_proba` inside
        :func:`remembered` does not compute them again."""
        memo = _memo_of(self)
        if memo is not None:
            import torch

            probabilities = torch.softmax(logits.detach().float(), dim=1).cpu().numpy()
            for key, row in zip(_digests(x.detach().cpu().numpy()), probabilities):
                _memo_put(memo, key, row)

    __call__ = predict_proba

    def unsafe_probability(self, probabilities: np.ndarray) -> np.ndarray:
        """Total probability of the unsafe labels, per row of ``predict_proba``'s output."""
        return np.asarray(probabilities)[:, self.unsafe_indices].sum(axis=1)

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, arch: str, arch_kwargs: dict[str, Any] | None = None) -> Path:
        """Write a single-file checkpoint: architecture, weights, labels, preprocessing, temperature
        and metadata (training details, metrics)."""
        path = Path(path)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "arch": arch,
            "arch_kwargs": dict(arch_kwargs or {}),
            "state_dict": {k: v.detach().cpu() for k, v in self.module.state_dict().items()},
            "labels": list(self.labels),
            "unsafe_labels": list(self.unsafe_labels),
            "name": self.name,
            "category": self.category,
            "preprocess": _preprocess_to_dict(self.preprocess),
            "temperature": float(self.temperature),
            "metadata": self.metadata,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        import torch

        torch.save(payload, tmp)
        os.replace(tmp, path)
        return path


@contextmanager
def remembered(classifiers: Iterable[Classifier]) -> Iterator[None]:
    """While the block runs (in this thread), each of ``classifiers`` forwards every distinct
    preprocessed input once: the probabilities of :meth:`Classifier.predict_proba` and of the
    forwards recorded with :meth:`Classifier.remember` are reused for the same input (issue 18:
    the search, the re-check's attribution and the verification see some images twice). For a
    block in which the weights do not change, such as one scan."""
    memos = _MEMO.__dict__.setdefault("memos", {})
    checked = _MEMO.__dict__.setdefault("checked", set())  # ids whose runtime was found to apply in the block
    entered = [id(c) for c in classifiers if id(c) not in memos]
    for key in entered:
        memos[key] = OrderedDict()
    try:
        yield
    finally:
        for key in entered:
            memos.pop(key, None)
            checked.discard(key)


def _memo_of(classifier: Classifier) -> "OrderedDict[bytes, np.ndarray] | None":
    memos = getattr(_MEMO, "memos", None)
    return memos.get(id(classifier)) if memos else None


def _memo_put(memo: "OrderedDict[bytes, np.ndarray]", key: bytes, row: np.ndarray) -> np.ndarray:
    memo[key] = row
    memo.move_to_end(key)
    while len(memo) > MEMO_SIZE:
        memo.popitem(last=False)
    return row


class Deferred:
    """A classifier's torch module built on first use by ``build()`` (a zero-argument callable):
    a classifier that predicts through its ``runtime`` imports torch only when it is asked for
    gradients (attribution) or its module."""

    def __init__(self, build: Callable[[], "nn.Module"]) -> None:
        self.build = build


def _module_get(self: Classifier) -> "nn.Module":
    module = self.__dict__["_module"]
    return self._adopt(module.build()) if isinstance(module, Deferred) else module


def _module_set(self: Classifier, module: "nn.Module | Deferred") -> None:
    self.__dict__["_module"] = module
    if not isinstance(module, Deferred) and "_weights_version" in self.__dict__:
        self._weights_version = _weights_version(module)  # a module swapped in later (not at construction)


#: ``Classifier.module``: the torch module, built from a :class:`Deferred` on first access
Classifier.module = property(_module_get, _module_set)  # type: ignore[assignment]


def _weights_version(module: "nn.Module") -> tuple[int, int]:
    """Changes whenever a parameter or buffer of ``module`` is replaced or changed in place."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t._version for t in tensors), hash(tuple(t.data_ptr() for t in tensors))


def _digests(batch: np.ndarray) -> list[bytes]:
    """One digest per preprocessed input of the batch (its exact float values and shape)."""
    return [hashlib.sha1(repr(row.shape).encode() + np.ascontiguousarray(row).tobytes()).digest() for row in batch]


def _as_list(images: np.ndarray | Iterable[np.ndarray]) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            return [images]
        return list(images)
    return list(images)


def _preprocess_to_dict(p: Preprocess) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(p).items()}


def _preprocess_from_dict(d: dict[str, Any]) -> Preprocess:
    return Preprocess(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def read_torch_file(path: Path, *, missing: str, unreadable: str) -> Any:
    """``torch.load`` with ``weights_only=True`` (a file can never run code); a missing or
    unreadable file is a one-line :class:`ModelError` (``unreadable`` may hold ``{error}``)."""
    import torch

    if not path.is_file():
        raise ModelError(f"{path}: {missing}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise ModelError(f"{path}: {unreadable.format(error=type(exc).__name__)}") from exc


def load_checkpoint(path: str | os.PathLike, *, device: str = "cpu") -> Classifier:
    """Load a SafeView checkpoint file; a missing, corrupt or mismatched file is a :class:`ModelError`."""
    from . import nets
    from .runtime import TorchRuntime

    path = Path(path)
    payload = read_torch_file(
        path,
        missing="no such model file; give the path of a .safeview checkpoint",
        unreadable="not a readable SafeView checkpoint ({error}); re-create or re-download it",
    )
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not a SafeView classifier checkpoint (missing format marker)")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise ModelError(f"{path}: checkpoint version {payload['version']} is newer than this SafeView supports; upgrade SafeView")
    try:
        module = nets.build(payload["arch"], len(payload["labels"]), **payload.get("arch_kwargs", {}))
        module.load_state_dict(payload["state_dict"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: weights do not match architecture {payload.get('arch')!r}: {str(exc).splitlines()[0]}") from exc
    metadata = dict(payload.get("metadata", {}))
    metadata.setdefault("sha256", file_sha256(path))
    metadata.setdefault("path", str(path))
    return Classifier(
        module=module,
        labels=list(payload["labels"]),
        unsafe_labels=list(payload["unsafe_labels"]),
        name=payload.get("name", path.stem),
        category=payload.get("category", "unsafe"),
        preprocess=_preprocess_from_dict(payload.get("preprocess", {})),
        temperature=float(payload.get("temperature", 1.0)),
        metadata=metadata,
        device=device,
        runtime=TorchRuntime(module, _preprocess_from_dict(payload.get("preprocess", {})).input_size),
    )


def update_checkpoint_metadata(path: str | os.PathLike, updates: dict[str, Any]) -> Path:
    """Add ``updates`` to the metadata of the checkpoint file at ``path`` (weights untouched),
    replacing the file atomically: how a measurement made after training, such as the false-alarm
    rate on real photos, is kept with the model it describes."""
    path = Path(path)
    payload = read_torch_file(path, missing="no such model file", unreadable="not a readable SafeView checkpoint ({error})")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not a SafeView classifier checkpoint (missing format marker)")
    payload["metadata"] = {**payload.get("metadata", {}), **updates}
    tmp = path.with_name(path.name + ".tmp")
    import torch

    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


# -- the model registry -----------------------------------------------------------------------

#: built-in model name -> "module:function" (lazy) or a packaged checkpoint file name
BUILTIN_MODELS: dict[str, str] = {
    "open-nsfw": "safeview.opennsfw:load_open_nsfw",
    **{f"demo-{c}": f"models/demo_{c}.safeview" for c in CATEGORIES},
}

#: built-in model sets: ``default`` is the real Open-NSFW model alone; ``demo`` the three synthetic
#: stand-in models, which must only run on a user's photos when asked for explicitly.
MODEL_SETS: dict[str, tuple[str, ...]] = {
    "default": ("open-nsfw",),
    "demo": tuple(f"demo-{c}" for c in CATEGORIES),
}


def packaged_path(relative: str) -> Path:
    """Path of a file shipped inside the package's ``data/`` folder."""
    return Path(str(files("safeview") / "data" / relative))


def load_classifier(name_or_path: str | os.PathLike, *, device: str = "cpu") -> Classifier:
    """Load a built-in model by name (see ``BUILTIN_MODELS``) or a checkpoint from a local path."""
    key = str(name_or_path)
    if key in BUILTIN_MODELS:
        target = BUILTIN_MODELS[key]
        if ":" in target:
            module_name, function_name = target.split(":")
            classifier = getattr(import_module(module_name), function_name)(device=device)
        else:
            classifier = load_checkpoint(packaged_path(target), device=device)
        classifier.name = key  # one name per model: the one the user gave to --models, in the JSON too
        return classifier
    path = Path(key).expanduser()
    if path.exists() or os.sep in key or key.endswith(".safeview"):
        return load_checkpoint(path, device=device)
    raise ModelError(f"{key}: unknown model; use a built-in name ({', '.join(sorted(BUILTIN_MODELS))}) or a checkpoint path")


def load_model_set_file(path: str | os.PathLike, *, device: str = "cpu") -> list[Classifier]:
    """Load a model-set TOML file: a ``[models]`` table naming one model per category, e.g.
    ``sexual = "models/sexual.safeview"`` (relative paths are relative to the file; built-in names
    work too). Each classifier's category becomes its key."""
    import tomllib

    path = Path(path).expanduser()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("models")
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model-set file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a valid TOML model set ({exc})") from None
    if not isinstance(table, dict) or not table or not all(isinstance(v, str) for v in table.values()):
        raise ModelError(f'{path}: needs a [models] table of category = "checkpoint path or built-in name" lines')
    classifiers = []
    for category, target in table.items():
        resolved = target if target in BUILTIN_MODELS else str(path.parent / Path(target).expanduser())
        classifier = load_classifier(resolved, device=device)
        classifier.category = category
        classifiers.append(classifier)
    return classifiers


def load_model_set(spec: str, *, device: str = "cpu") -> list[Classifier]:
    """Resolve ``--models``: comma-separated built-in set names, model names, checkpoint paths or
    model-set ``.toml`` files (see :func:`load_model_set_file`)."""
    names: list[str] = []
    for part in (p.strip() for p in str(spec).split(",")):
        if not part:
            continue
        names.extend(MODEL_SETS.get(part, (part,)))
    if not names:
        raise ModelError("no models given; use --models default, demo, a model name, a checkpoint path or a set.toml")
    seen: dict[str, None] = dict.fromkeys(names)  # keep order, drop repeats
    return [
        clf
        for n in seen
        for clf in (load_model_set_file(n, device=device) if n.endswith(".toml") else [load_classifier(n, device=device)])
    ]
