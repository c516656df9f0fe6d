"""One validated configuration of a scan: ``ScanConfig`` holds the CSE, segmentation,
verification, rationale and output settings, is built once (from Python keyword arguments, the
CLI's shared ``scan``/``batch`` options, a TOML file, or the service's settings) and is passed down
unchanged. Unknown names and parameters fail when it is built, with a one-line message, never on
the first unsafe image; an empty model set is refused (a scan with no classifier would call every
image safe).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .attributes import DEFAULT_DETECTORS as ATTRIBUTE_DETECTORS
from .attributes import DETECTORS
from .counterfactual import MODES, CSEConfig
from .errors import SafeViewError
from .images import MAX_ASPECT, MAX_DECODED_BYTES, WORKING_SIDE

FALLBACKS = ("full", "prefix", "none")
DEFAULT_PERTURBATIONS: tuple[str, ...] = CSEConfig.perturbations
#: what the HTML report may hold of an original: nothing unblurred (default), or a full-resolution copy
REPORT_ORIGINALS = ("none", "full")


class ConfigError(SafeViewError, ValueError):
    """A configuration that cannot run: unknown names, bad values, an empty model set."""


class ScanConfig(BaseModel):
    """Everything a scan is configured by, validated when built (see the module docstring).

    ``models`` is a ``--models`` spec (built-in set or model names, checkpoint paths, a model-set
    ``.toml``, comma-separated); ``mode`` CSE's (``hide``: hide the content, verified robustly;
    ``paper``: the paper's greedy prefix at the first flip; ``minimal``: that prefix pruned);
    ``threshold`` the paper's flip threshold (0.5, on the safe side); ``margin`` how far below it
    every flagging model must put an output, also on the ``perturbations`` (re-upload copies);
    ``max_regions`` the search budget (None: the mode's, 16 for ``hide`` and the paper's 10
    otherwise, :data:`safeview.counterfactual.DEFAULT_MAX_REGIONS`); ``fallback`` what is obfuscated when no
    output can be verified (``full`` image, the search's ``prefix``, or ``none``; labelled not
    verified either way); ``rationale`` the explanation backend and ``rationale_options`` its
    settings; ``attributes`` the attribute detectors (:mod:`safeview.attributes`) run on flagged
    images, for the rationale and as a second opinion on outputs (empty: none); ``max_pixels``,
    ``max_aspect`` and ``max_decoded_mb`` the decompression-bomb guards (pixels, long side / short
    side, and MiB of the decoded first frame, which an animated image's sampled frames share); ``working_side`` the longest side CSE
    searches on (larger images are searched on a scaled copy and the mask mapped back to full
    resolution, where the output is obfuscated and verified; None: always full resolution); ``report_originals`` whether the HTML
    report may hold full-resolution originals (``none`` by default: blurred thumbnails only);
    ``protect_faces`` whether faces the built-in detector finds on flagged images are protected
    regions (:mod:`safeview.protect`: kept visible unless the content cannot be hidden otherwise);
    ``tiles`` whether every image is also classified, searched and verified in overlapping tiles
    (:func:`safeview.windows.tile_boxes`), so content in a small part of it is seen, at the cost of
    more forwards and, on models not trained on crops, more false positives.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: str = "default"
    device: str = "cpu"
    mode: Literal["hide", "paper", "minimal"] = "hide"
    attribution: str = "fullgrad"
    segmentation: str = "bass"
    segmentation_params: dict[str, Any] = Field(default_factory=dict)
    style: str = "blur"
    style_params: dict[str, Any] = Field(default_factory=dict)
    threshold: float = 0.5
    margin: float = 0.3
    perturbations: tuple[str, ...] = DEFAULT_PERTURBATIONS
    max_regions: int | None = None
    fallback: Literal["full", "prefix", "none"] = "full"
    rationale: str = "evidence"
    rationale_options: dict[str, Any] = Field(default_factory=dict)
    attributes: tuple[str, ...] = ATTRIBUTE_DETECTORS
    max_pixels: int = Field(40_000_000, gt=0)
    max_aspect: float = Field(MAX_ASPECT, ge=1)
    max_decoded_mb: int = Field(MAX_DECODED_BYTES // 2**20, gt=0)
    working_side: int | None = Field(WORKING_SIDE, ge=64)
    report_originals: Literal["none", "full"] = "none"
    protect_faces: bool = False
    tiles: bool = False

    @field_validator("models")
    @classmethod
    def _some_models(cls, value: str) -> str:
        if not any(part.strip() for part in value.split(",")):
            raise ValueError("no models: a scan with no classifier would call every image safe; give at least one model")
        return value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value != "cpu" and not value.startswith(("cuda", "mps")):
            raise ValueError(f"unknown device {value!r}; use cpu, cuda, cuda:N or mps")
        return value

    @model_validator(mode="after")
    def _check(self) -> "ScanConfig":
        from .rationale import BACKENDS, OPTIONS
        from .segment import check_params

        self.cse  # noqa: B018 - building CSE's part validates it
        check_params(self.segmentation, self.segmentation_params)
        if self.rationale not in BACKENDS:
            raise ValueError(f"unknown rationale backend {self.rationale!r}; choose one of {', '.join(BACKENDS)}")
        unknown = sorted(set(self.rationale_options) - set(OPTIONS[self.rationale]))
        if unknown:
            raise ValueError(f"the {self.rationale} rationale takes no option {', '.join(unknown)}; "
                             f"it takes: {', '.join(OPTIONS[self.rationale]) or 'none'}")
        unknown = sorted(set(self.attributes) - set(DETECTORS))
        if unknown:
            raise ValueError(f"unknown attribute detector(s) {', '.join(unknown)}; choose from {', '.join(DETECTORS)}")
        needed = {"instructblip": ("vlm",), "openai": ("base_url", "model")}.get(self.rationale, ())
        missing = [name for name in needed if not self.rationale_options.get(name)]
        if missing:
            raise ValueError(f"the {self.rationale} rationale needs {', '.join(missing)}")
        return self

    @property
    def image_limits(self) -> dict[str, Any]:
        """The limits :func:`safeview.images.load_image_info` checks an input against."""
        return {"max_pixels": self.max_pixels, "max_aspect": self.max_aspect, "max_decoded_bytes": self.max_decoded_bytes}

    @property
    def max_decoded_bytes(self) -> int:
        return self.max_decoded_mb * 2**20

    @property
    def cse(self) -> CSEConfig:
        """CSE's part of the configuration, as :func:`safeview.counterfactual.cse` takes it (built
        on demand, so the configuration pickles as plain data for worker processes)."""
        return CSEConfig(
            mode=self.mode, attribution=self.attribution, segmentation=self.segmentation,
            segmentation_params=self.segmentation_params, style=self.style, style_params=self.style_params,
            threshold=self.threshold, margin=self.margin, perturbations=tuple(self.perturbations),
            max_regions=self.max_regions,
        )

    # -- constructors that turn every failure into one line ---------------------------------
    @classmethod
    def build(cls, **settings: Any) -> "ScanConfig":
        """``ScanConfig(**settings)``, raising :class:`ConfigError` with one line per problem."""
        try:
            return cls(**settings)
        except ValidationError as exc:
            raise ConfigError(describe(exc)) from None

    @classmethod
    def from_toml(cls, path: str | os.PathLike, **overrides: Any) -> "ScanConfig":
        """Read the settings from a TOML file (top-level keys named as the fields, tables for
        ``segmentation_params``, ``style_params`` and ``rationale_options``); ``overrides`` win."""
        import tomllib

        path = Path(path).expanduser()
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such configuration file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"{path}: not a readable TOML file ({exc})") from None
        try:
            return cls(**{**table, **overrides})
        except ValidationError as exc:
            raise ConfigError(f"{path}: {describe(exc)}") from None

    def updated(self, **changes: Any) -> "ScanConfig":
        """A copy with ``changes``, validated again."""
        return type(self).build(**{**self.model_dump(), **changes})


def describe(exc: ValidationError, known: Iterable[str] | None = None) -> str:
    """A Pydantic validation error as one line: ``field: problem; field: problem`` (an unknown
    field lists the ``known`` ones, by default :class:`ScanConfig`'s)."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown setting; known settings: {', '.join(known or ScanConfig.model_fields)}"
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


__all__ = ["ConfigError", "DEFAULT_PERTURBATIONS", "FALLBACKS", "MODES", "REPORT_ORIGINALS", "ScanConfig", "describe"]
