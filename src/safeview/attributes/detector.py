"""What every attribute adapter shares: the package it wraps is imported only when the detector
first runs (a missing package is :class:`NotInstalled`, never an empty result), its model is loaded
once per process, and its version is the installed distribution's."""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from functools import lru_cache
from importlib import metadata
from typing import Any

import numpy as np

from .base import Attribute, NotInstalled


@lru_cache(maxsize=None)
def _loaded(detector: "Detector", module: Any) -> Any:
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

    def load(self) -> Any:
        """The detector's model, built once; :class:`NotInstalled` when its package is missing
        (checked on every call, so an uninstalled package is never served from the cache)."""
        try:
            module = self.import_module()
        except ImportError as exc:
            raise NotInstalled(f"{self.package} is not installed (pip install 'safeview[attributes]')") from exc
        return _loaded(self, module)

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
