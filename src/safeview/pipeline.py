"""The whole system (paper, Fig. 1): classify with every model, and for each unsafe verdict run CSE
— attribution map, segmentation guided by it, Def. 1 scores, informed greedy search — obfuscate
the regions found, re-classify the output, and explain the verdict.

``Safeguard`` is configured once (models are loaded once) and ``scan`` is called per image.
Categories flagged together are handled one after another, most confident first, each search
running on the output of the previous one, so the final output is verified against every model.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import __version__
from .attribute import attribution_map
from .classify import Classifier, load_model_set
from .counterfactual import greedy_search, rank_regions, region_scores
from .images import LoadedImage, as_rgb_array, load_image_info
from .obfuscate import Obfuscator
from .rationale import rationale as make_rationale
from .schema import (
    RLE,
    TAXONOMY,
    CategoryResult,
    CounterfactualResult,
    InputInfo,
    ScanResult,
    Versions,
)
from .segment import segment

FALLBACKS = ("full", "prefix", "none")
#: BASS cells CSE starts from: the search masks at most ``max_regions`` regions, so a few dozen
#: subobject regions, not BASS's reference hundreds (n = 15 px cells), suit it
BASS_CELLS = 18
#: BASS settings for CSE (bench/README.md, "Choosing BASS's settings for CSE"): a colour scale of
#: 0.05 instead of the reference's 0.018 stops textured images from splitting into hundreds of
#: regions (which a 10-region search cannot cover), and 20 parameter updates give the same
#: regions as the reference's ``n`` (here ≈ 60) at a third of the time.
BASS_CSE = {"i_std": 0.05, "iterations": 20}


def search_batch_size(device: str) -> int:
    """Images per forward in the greedy search: on a CPU a batch of n costs about n single images
    (bench/results/speed.md), so prefixes go one at a time and none is classified past the flip;
    an accelerator classifies a growing batch (1, 2, 4, 8) in about the time of one."""
    return 1 if str(device).startswith("cpu") else 8


def cse_segmentation_params(method: str, shape: tuple[int, int], params: dict) -> dict:
    """Segmentation parameters for CSE on an image of ``shape``: the user's, over defaults that
    suit a ≤ 10-region search. For BASS: a cell side derived from the image size (about
    ``BASS_CELLS`` initial cells, split and merged from there, so regions keep the same share of
    the image at any resolution) and :data:`BASS_CSE`."""
    if method == "bass":
        n = max(15, round((shape[0] * shape[1] / BASS_CELLS) ** 0.5))
        return {"n": n, **BASS_CSE, **params}
    return dict(params)


@dataclass
class ScanArtifacts:
    """In-memory arrays behind a :class:`ScanResult` (for reports and callers; never serialised)."""

    image: np.ndarray
    obfuscated: np.ndarray | None = None
    attributions: dict[str, np.ndarray] = field(default_factory=dict)
    segments: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)


class Safeguard:
    """Configured CSE pipeline: ``Safeguard(models="default").scan("photo.jpg") -> ScanResult``.

    ``threshold`` is the paper's flip threshold (another class > 0.5), ``max_regions`` its search
    budget (10). ``fallback`` says what to obfuscate when no counterfactual is found within the
    budget: ``full`` (the whole image — the safe choice for viewers), ``prefix`` (the regions
    tried) or ``none``.
    """

    def __init__(
        self,
        models: str | Sequence[Classifier] = "default",
        *,
        attribution: str = "fullgrad",
        segmentation: str = "bass",
        segmentation_params: dict | None = None,
        style: str = "blur",
        style_params: dict | None = None,
        threshold: float = 0.5,
        max_regions: int = 10,
        prune: bool = True,
        fallback: str = "full",
        rationale: str = "evidence",
        rationale_options: dict | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}")
        self.classifiers = load_model_set(models, device=device) if isinstance(models, str) else list(models)
        self.attribution = attribution
        self.segmentation = segmentation
        self.segmentation_params = dict(segmentation_params or {})
        self.style = style
        self.style_params = dict(style_params or {})
        Obfuscator(style, **self.style_params)  # validate early
        self.threshold = threshold
        self.max_regions = max_regions
        self.prune = prune
        self.fallback = fallback
        self.rationale_backend = rationale
        self.rationale_options = dict(rationale_options or {})
        self.seed = seed

    # -- helpers ------------------------------------------------------------------------------
    def _is_unsafe(self, unsafe_probability: float) -> bool:
        # unsafe unless the safe side exceeds the threshold (the paper's flip rule, mirrored)
        return not (1.0 - unsafe_probability > self.threshold)

    def _flip_rule(self, clf: Classifier):
        idx = clf.unsafe_indices
        return lambda probs: 1.0 - np.asarray(probs)[:, idx].sum(axis=1) > self.threshold

    def _versions(self) -> Versions:
        import torch

        return Versions(
            safeview=__version__,
            torch=torch.__version__,
            models={c.name: str(c.metadata.get("sha256", "unknown")) for c in self.classifiers},
        )

    # -- the scan -----------------------------------------------------------------------------
    def scan(self, source: str | os.PathLike | bytes | np.ndarray | LoadedImage) -> ScanResult:
        """Scan one image (path, encoded bytes, decoded :class:`LoadedImage` or uint8 array)."""
        return self.scan_many([source], return_exceptions=False)[0]  # type: ignore[return-value]

    def scan_many(
        self, sources: Sequence[str | os.PathLike | bytes | np.ndarray | LoadedImage], *, return_exceptions: bool = True
    ) -> list[ScanResult | Exception]:
        """Scan several images, classifying them together (one batched forward per model, the step
        every image pays); CSE then runs on each unsafe image alone. With ``return_exceptions`` a
        failing image yields its exception in its place instead of stopping the others."""
        loaded: list[LoadedImage | Exception] = []
        load_seconds: list[float] = []
        for source in sources:
            t = time.perf_counter()
            try:
                loaded.append(_load(source))
            except Exception as exc:
                if not return_exceptions:
                    raise
                loaded.append(exc)
            load_seconds.append(time.perf_counter() - t)
        ok = [i for i, item in enumerate(loaded) if isinstance(item, LoadedImage)]
        t = time.perf_counter()
        categories = self._classify([loaded[i].array for i in ok])  # type: ignore[union-attr]
        classify_share = (time.perf_counter() - t) / max(1, len(ok))
        results: list[ScanResult | Exception] = list(loaded)  # type: ignore[arg-type]
        for i, cats in zip(ok, categories):
            try:
                timings = {"load": load_seconds[i], "classify": classify_share}
                results[i] = self._explain(loaded[i], cats, timings)  # type: ignore[arg-type]
            except Exception as exc:
                if not return_exceptions:
                    raise
                results[i] = exc
        return results

    def _classify(self, images: list[np.ndarray]) -> list[list[CategoryResult]]:
        """Every model's verdict on every image, one batched forward per model."""
        per_image: list[list[CategoryResult]] = [[] for _ in images]
        for clf in self.classifiers:
            probs = clf.predict_proba(images) if images else np.zeros((0, len(clf.labels)))
            p_unsafe = clf.unsafe_probability(probs) if images else []
            for cats, row, p in zip(per_image, probs, p_unsafe):
                cats.append(
                    CategoryResult(
                        category=clf.category,
                        model=clf.name,
                        probabilities={label: float(v) for label, v in zip(clf.labels, row)},
                        unsafe_probability=float(p),
                        unsafe=self._is_unsafe(float(p)),
                        taxonomy=TAXONOMY.get(clf.category),
                    )
                )
        return per_image

    def _explain(self, loaded: LoadedImage, categories: list[CategoryResult], timings: dict[str, float]) -> ScanResult:
        """CSE for every unsafe category of one classified image, the rationale, and the result."""
        t0 = time.perf_counter()
        image = loaded.array
        artifacts = ScanArtifacts(image=image)
        counterfactuals: list[CounterfactualResult] = []
        evidence: dict[str, dict] = {}
        current, union = image, np.zeros(image.shape[:2], bool)
        obfuscator = Obfuscator(self.style, **self.style_params)
        flagged = sorted(
            (pair for pair in zip(self.classifiers, categories) if pair[1].unsafe),
            key=lambda pair: -pair[1].unsafe_probability,
        )
        for stage in ("attribute", "segment", "search"):
            timings[stage] = 0.0
        for clf, cat in flagged:
            unsafe_idx = clf.unsafe_indices
            probs_now = clf.predict_proba(current[None])[0]
            if not self._is_unsafe(float(probs_now[unsafe_idx].sum())):
                continue  # an earlier category's obfuscation already made it safe for this model
            target = unsafe_idx[int(np.argmax(probs_now[unsafe_idx]))]

            t = time.perf_counter()
            attribution = attribution_map(clf, current, target, method=self.attribution)
            timings["attribute"] += time.perf_counter() - t

            t = time.perf_counter()
            params = cse_segmentation_params(self.segmentation, current.shape[:2], self.segmentation_params)
            labels = segment(current, method=self.segmentation, attribution=attribution, **params)
            timings["segment"] += time.perf_counter() - t

            t = time.perf_counter()
            order = rank_regions(region_scores(attribution, labels))
            cf = greedy_search(
                clf,
                current,
                labels,
                order,
                source_class=target,
                threshold=self.threshold,
                max_regions=self.max_regions,
                obfuscator=obfuscator,
                prune=self.prune,
                flip_rule=self._flip_rule(clf),
                original_probabilities=probs_now,
                batch_size=search_batch_size(clf.device),
            )
            mask = cf.mask
            if not cf.found:
                mask = {"full": np.ones_like(mask), "prefix": mask, "none": np.zeros_like(mask)}[self.fallback]
            output = cf.output if cf.found else obfuscator(current, mask)
            timings["search"] += time.perf_counter() - t

            after = _unsafe_probability(clf, output)
            steps = [float(np.asarray(row)[unsafe_idx].sum()) for row in cf.probabilities]
            counterfactuals.append(
                CounterfactualResult(
                    category=clf.category,
                    model=clf.name,
                    attribution=self.attribution,
                    segmentation=self.segmentation,
                    style=self.style,
                    found=cf.found,
                    regions=cf.regions,
                    depth=cf.depth,
                    greedy_depth=cf.greedy_depth,
                    n_regions=int(labels.max()) + 1,
                    queries=cf.queries,
                    obfuscated_fraction=float(mask.mean()),
                    unsafe_probability_steps=steps,
                    unsafe_probability_after=after,
                    mask=RLE.from_mask(mask),
                )
            )
            evidence[clf.category] = {
                "model": clf.name,
                "found": cf.found,
                "depth": cf.depth,
                "fraction": float(mask.mean()),
                "steps": steps,
                "after": after,
                "mask": mask,
            }
            artifacts.attributions[clf.category] = attribution
            artifacts.segments[clf.category] = labels
            artifacts.masks[clf.category] = mask
            current, union = output, union | mask

        verdict = "unsafe" if any(c.unsafe for c in categories) else "safe"
        result_kwargs: dict = {}
        if union.any():
            t = time.perf_counter()
            after_all = {clf.category: _unsafe_probability(clf, current) for clf in self.classifiers}
            timings["recheck"] = time.perf_counter() - t
            artifacts.obfuscated = current
            result_kwargs = {
                "mask": RLE.from_mask(union),
                "obfuscated_fraction": float(union.mean()),
                "obfuscated_safe": not any(self._is_unsafe(p) for p in after_all.values()),
                "unsafe_probability_after": after_all,
            }

        t = time.perf_counter()
        control = {c.category: c.unsafe_probability for c in categories}
        explanation = make_rationale(
            image, control, evidence, backend=self.rationale_backend, threshold=self.threshold, **self.rationale_options
        )
        timings["rationale"] = time.perf_counter() - t
        timings["total"] = timings["load"] + timings["classify"] + time.perf_counter() - t0

        result = ScanResult(
            input=InputInfo(
                path=None if loaded.source.startswith("<") else loaded.source,
                sha256=loaded.sha256,
                width=loaded.width,
                height=loaded.height,
                format=loaded.format,
                mode=loaded.mode,
                frames=loaded.frames,
            ),
            verdict=verdict,
            categories=categories,
            counterfactuals=counterfactuals,
            rationale=explanation,
            timings=timings,
            versions=self._versions(),
            **result_kwargs,
        )
        result._artifacts = artifacts
        return result


def _unsafe_probability(clf: Classifier, image: np.ndarray) -> float:
    return float(clf.unsafe_probability(clf.predict_proba(image[None]))[0])


def _load(source: str | os.PathLike | bytes | np.ndarray | LoadedImage) -> LoadedImage:
    if isinstance(source, LoadedImage):
        return source
    if isinstance(source, np.ndarray):
        import hashlib

        array = as_rgb_array(source)
        return LoadedImage(array, hashlib.sha256(array.tobytes()).hexdigest(), "array", "RGB", 1, "<array>")
    return load_image_info(source)
