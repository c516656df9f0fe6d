"""What every attribute adapter shares: the package it wraps is imported only when the detector
first runs (a missing package is :class:`NotInstalled`, never an empty result), its model is loaded
once per process (and once per worker thread of :func:`safeview.attributes.detect_many` for a
detector whose model must not serve two threads at once), and its version is the installed
distribution's."""

from __future__ import annotations

import importlib
import importlib.util
import threading
from abc import ABC, abstractmethod
from functools import lru_cache
from importlib import metadata
from typing import Any

import numpy as np

from .base import Attribute, NotInstalled


#: set in a worker thread of :func:`safeview.attributes.detect_many`: ``slot`` (the thread's own
#: models) and ``threads`` (its share of the process's threads)
WORKER = threading.local()
_BUILDING = threading.Lock()  # two threads asking for the same model at once build it once


def detector_threads() -> int:
    """The threads a model built on this thread may use: a worker thread's share, else the
    process's :func:`~safeview.threads.thread_limit`."""
    from ..threads import thread_limit

    return getattr(WORKER, "threads", None) or thread_limit()


@lru_cache(maxsize=None)
def _loaded(detector: "Detector", module: Any, slot: int | None) -> Any:
    return detector.build(module)


class Detector(ABC):
    """One adapter. Subclasses set ``name`` (how callers select it), ``package`` (the PyPI
    distribution), ``module`` (what to import), ``sees`` (attribute names it can report),
    ``needs`` (detectors whose attributes it reads), and implement :meth:`build` (model from the
    imported module) and :meth:`find`."""

    name: str
    package: str
    module: str
    sees: tuple[str, ...]
    needs: tuple[str, ...] = ()
    #: whether one loaded model may serve several threads at once; if not, each worker thread of
    #: :func:`safeview.attributes.detect_many` loads its own (with its share of the threads)
    shared: bool = False

    def load(self) -> Any:
        """The detector's model, built once; :class:`NotInstalled` when its package is missing
        (checked on every call, so an uninstalled package is never served from the cache)."""
        try:
            module = self.import_module()
        except ImportError as exc:
            raise NotInstalled(f"{self.package} is not installed (pip install 'safeview[attributes]')") from exc
        with _BUILDING:
            return _loaded(self, module, None if self.shared else getattr(WORKER, "slot", None))

    def import_module(self) -> Any:
        return importlib.import_module(self.module)

    def installed(self) -> None:
        """:class:`NotInstalled` when the package is missing, found without importing it."""
        if importlib.util.find_spec(self.module) is None:
            raise NotInstalled(f"{self.package} is not installed (pip install 'safeview[attributes]')")

    def has_input(self, found: list[Attribute]) -> bool:
        """Whether ``found`` (what the detectors in ``needs`` reported) gives :meth:`find`
        anything to judge; when it does not, the model is not loaded (a text classifier on an
        image without text: scikit-learn's import alone takes 1.1 s)."""
        return True

    def version(self) -> str:
        return f"{self.package} {metadata.version(self.package)}"

    @abstractmethod
    def build(self, module: Any) -> Any:
        """The loaded model, from the imported ``module``."""

    @abstractmethod
    def find(self, model: Any, image: np.ndarray, found: list[Attribute]) -> list[Attribute]:
        """The attributes in ``image`` (H×W×3 uint8 RGB); ``found`` holds those the detectors in
        ``needs`` reported."""
