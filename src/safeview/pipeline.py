"""The whole system (paper, Fig. 1): classify with every model, and for each unsafe verdict run
CSE (:func:`safeview.counterfactual.cse`: attribution, segmentation guided by it, Def. 1, the
greedy search, evidence completion, robust verification), then explain the verdict.

``Safeguard`` is configured once (models are loaded, settings validated) and ``scan`` is called per
image. Categories flagged together are handled one after another, most confident first, each CSE
running on the output of the previous one; the final output is verified against every model, with
the margin and on re-upload copies, and is called safe (``obfuscated_safe``) only when that passed.
Otherwise the fallback is applied and the result says "not verified".
"""

from __future__ import annotations

import os
import time
import logging
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from . import __version__
from .attributes import SECOND_OPINION_COPIES, SecondOpinion, add_findings, detect, detect_soon, second_opinion
from .classify import Classifier, load_model_set, remembered
from .config import ConfigError, ScanConfig
from .errors import ModelError
from .counterfactual import cse
from .images import LoadedImage, full_mask, load_array, load_image_info, working_copy
from .protect import ProtectedRegion, kept_shares, resolve as resolve_protection, union as protection_union, working_protection
from .rationale import rationale as make_rationale
from .schema import (
    RLE,
    AttributeReportModel,
    ProtectedRegionModel,
    SecondOpinionModel,
    TAXONOMY,
    CategoryResult,
    CounterfactualResult,
    InputInfo,
    ScanResult,
    VerificationResult,
    Versions,
)
from .verify import verify
from .windows import Windowed, content_box, tile_boxes, view_boxes, windowed

log = logging.getLogger(__name__)

#: one image's protected regions, as :meth:`Safeguard.scan` takes them
Protect = Sequence[ProtectedRegion | Mapping[str, Any] | np.ndarray] | None


@dataclass
class ScanArtifacts:
    """In-memory arrays behind a :class:`ScanResult` (for reports and callers; never serialised)."""

    image: np.ndarray
    obfuscated: np.ndarray | None = None
    attributions: dict[str, np.ndarray] = field(default_factory=dict)
    segments: dict[str, np.ndarray] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    protected: list[ProtectedRegion] = field(default_factory=list)
    #: the pixels the second opinion's findings added to the obfuscated area (None: it added none)
    grown: np.ndarray | None = None


class Safeguard:
    """Configured CSE pipeline: ``Safeguard("default").scan("photo.jpg") -> ScanResult``, whose
    ``artifacts`` hold its arrays (image, output, attribution maps, segments, masks).

    ``config`` is a :class:`~safeview.config.ScanConfig`; without it, ``settings`` (its fields as
    keyword arguments: ``mode``, ``margin``, ``fallback``, ``rationale``, …) build one, validated
    here, once. ``models`` is a ``--models`` spec (overriding the config's) or a list of
    classifiers to use as they are.
    """

    def __init__(
        self, models: str | Sequence[Classifier] | None = None, config: ScanConfig | None = None, **settings: Any
    ) -> None:
        if config is not None and settings:
            raise ConfigError(f"give either a ScanConfig or settings, not both (got {', '.join(sorted(settings))})")
        if config is None:
            config = ScanConfig.build(**settings, **({"models": models} if isinstance(models, str) else {}))
        elif isinstance(models, str):
            config = config.updated(models=models)
        self.scan_config = config
        self.config = config.cse
        self.classifiers = (
            load_model_set(config.models, device=config.device) if models is None or isinstance(models, str) else list(models)
        )
        if not self.classifiers:
            raise ConfigError("no models: a scan with no classifier would call every image safe; give at least one model")
        log.info("models: %s; mode %s", ", ".join(c.name for c in self.classifiers), config.mode)

    def warm_up(self) -> None:
        """Load now what the first unsafe image would load lazily (a classifier's torch module
        that predictions did not need, the attribute detectors' models and their first-run
        buffers), so a worker can cap its memory afterwards (service workers)."""
        for classifier in self.classifiers:
            classifier.module  # noqa: B018 - builds a deferred module (Open-NSFW's) now
        if self.scan_config.attributes:
            detect(np.full((64, 64, 3), 127, np.uint8), self.scan_config.attributes)

    # -- helpers ------------------------------------------------------------------------------
    def _is_unsafe(self, unsafe_probability: float) -> bool:
        # unsafe unless the safe side exceeds the threshold (the paper's flip rule, mirrored)
        return not (1.0 - unsafe_probability > self.config.threshold)

    def _versions(self) -> Versions:
        return Versions(
            safeview=__version__,
            torch=_torch_version(),
            models={c.name: str(c.metadata.get("sha256", "unknown")) for c in self.classifiers},
        )

    # -- the scan -----------------------------------------------------------------------------
    def scan(self, source: str | os.PathLike | bytes | np.ndarray | LoadedImage, *, protect: Protect = None) -> ScanResult:
        """Scan one image (path, encoded bytes, decoded :class:`LoadedImage` or uint8 array);
        ``protect``: its protected regions (:class:`~safeview.protect.ProtectedRegion` s, specs such
        as ``{"box": [x0, y0, x1, y1], "label": "tattoo"}``, or boolean masks)."""
        return self.scan_many([source], return_exceptions=False, protect=[protect])[0]  # type: ignore[return-value]

    def scan_many(
        self, sources: Sequence[str | os.PathLike | bytes | np.ndarray | LoadedImage], *, return_exceptions: bool = True,
        protect: Sequence[Protect] | None = None,
    ) -> list[ScanResult | Exception]:
        """:meth:`scan_iter` as a list."""
        return list(self.scan_iter(sources, return_exceptions=return_exceptions, protect=protect))

    def scan_iter(
        self, sources: Sequence[str | os.PathLike | bytes | np.ndarray | LoadedImage], *, return_exceptions: bool = True,
        protect: Sequence[Protect] | None = None,
    ) -> Iterator[ScanResult | Exception]:
        """Scan several images, classifying them together (one batched forward per model, the step
        every image pays), then yield each result, in order, as soon as its CSE is done (so
        progress can be shown per image). With ``return_exceptions`` a failing image yields its
        exception in its place instead of stopping the others. ``protect``: per source, its
        protected regions (as :meth:`scan` takes them)."""
        if protect is not None and len(protect) != len(sources):
            raise ValueError(f"protect has {len(protect)} entries for {len(sources)} sources; give one per source")
        loaded: list[LoadedImage | Exception] = []
        load_seconds: list[float] = []
        for source in sources:
            t = time.perf_counter()
            try:
                loaded.append(_load(source, self.scan_config))
            except Exception as exc:
                if not return_exceptions:
                    raise
                loaded.append(exc)
            load_seconds.append(time.perf_counter() - t)

        def failed(item: LoadedImage, exc: Exception) -> Exception:
            if not return_exceptions:
                raise exc
            log.debug("%s: scan failed", item.source, exc_info=exc)
            if isinstance(exc, ModelError) and item.source not in str(exc):  # the one line names the image too
                return ModelError(f"{item.source}: {exc}")
            return exc

        with remembered(self.classifiers):  # no input is forwarded twice by the same model within these scans
            t = time.perf_counter()
            for i, item in enumerate(loaded):
                if isinstance(item, LoadedImage):
                    try:
                        loaded[i] = self._most_unsafe_frame(item)
                    except Exception as exc:
                        loaded[i] = failed(item, exc)
            ok = [item for item in loaded if isinstance(item, LoadedImage)]
            try:
                verdicts: list = self._classify([item.array for item in ok])
            except Exception as exc:  # one image a model fails on must not fail the others: each on its own
                if not return_exceptions:
                    raise
                verdicts = []
                for item in ok:
                    try:
                        verdicts.extend(self._classify([item.array]))
                    except Exception as one:
                        verdicts.append(failed(item, one))
            categories = iter(verdicts)
            classify_share = (time.perf_counter() - t) / max(1, len(ok))
            for item, seconds, regions in zip(loaded, load_seconds, protect or [None] * len(loaded)):
                if isinstance(item, Exception):
                    yield item
                    continue
                verdict = next(categories)
                if isinstance(verdict, Exception):
                    yield verdict
                    continue
                try:
                    yield self._explain(item, verdict, {"load": seconds, "classify": classify_share}, regions)
                except Exception as exc:
                    yield failed(item, exc)

    def _most_unsafe_frame(self, loaded: LoadedImage) -> LoadedImage:
        """An animated image as the frame of its sampled ones (``LoadedImage.samples``, the first
        included), and an image with transparent pixels as the rendering (``LoadedImage.views``),
        that the models find most unsafe: the scan's verdict, CSE and output are that one's, so
        content shown only in a later frame, or only where a viewer or re-encoder renders the
        transparency otherwise, is not passed as safe on the strength of the first frame onto white."""
        candidates = [(0, None, loaded.array), *((i, None, a) for i, a in loaded.samples), *loaded.views]
        if len(candidates) == 1:
            return loaded
        worst = np.zeros(len(candidates))
        for clf in self.classifiers:
            worst = np.maximum(worst, clf.unsafe_probability(Windowed(clf, self.scan_config.tiles).predict_proba([a for _, _, a in candidates])))
        k = int(np.argmax(worst))  # ties keep the first frame as composited
        if k == 0:
            return loaded
        index, rendering, array = candidates[k]
        return replace(loaded, array=array, frame=index, rendering=rendering)

    def _classify(self, images: list[np.ndarray]) -> list[list[CategoryResult]]:
        """Every model's verdict on every image, one batched forward per model (each image's views in
        it too, :func:`safeview.windows.view_boxes`: its probabilities are those of the most unsafe)."""
        per_image: list[list[CategoryResult]] = [[] for _ in images]
        for clf in self.classifiers:
            probs, seen = Windowed(clf, self.scan_config.tiles).predictions(images) if images else (np.zeros((0, len(clf.labels))), [])
            p_unsafe = clf.unsafe_probability(probs) if images else []
            for cats, row, p, box in zip(per_image, probs, p_unsafe, seen):
                cats.append(
                    CategoryResult(
                        category=clf.category,
                        model=clf.name,
                        probabilities={"safe": 1.0 - float(p), "unsafe": float(p)},
                        labels={label: float(v) for label, v in zip(clf.labels, row)},
                        unsafe_labels=list(clf.unsafe_labels),
                        unsafe_probability=float(p),
                        unsafe=self._is_unsafe(float(p)),
                        taxonomy=TAXONOMY.get(clf.category),
                        seen_in=box,
                    )
                )
        return per_image

    def _protection(self, loaded: LoadedImage, given: Protect) -> list[ProtectedRegion]:
        """The protected regions of a flagged image: the caller's, then the faces the built-in
        detector finds when ``protect_faces`` is on."""
        regions = resolve_protection(given, loaded.array.shape[:2], where=loaded.source)
        if self.scan_config.protect_faces:
            from .faces import detect_faces

            regions += detect_faces(loaded.array)
        return regions

    def _explain(
        self, loaded: LoadedImage, categories: list[CategoryResult], timings: dict[str, float], protect: Protect = None
    ) -> ScanResult:
        """CSE for every unsafe category of one classified image (keeping its protected regions
        visible where the content allows), the final verification, the fallback when it failed,
        the rationale, and the result."""
        t0 = time.perf_counter()
        image = loaded.array
        config = self.config
        artifacts = ScanArtifacts(image=image)
        obfuscate = config.obfuscator()  # one per image: its obfuscated frame is computed once
        counterfactuals: list[CounterfactualResult] = []
        # CSE runs on a working copy of at most working_side pixels a side; its masks are mapped back
        work = working_copy(image, self.scan_config.working_side)
        current, union = work, np.zeros(work.shape[:2], bool)
        models = windowed(self.classifiers, self.scan_config.tiles)  # each candidate and copy classified in its views too
        pairs = list(zip(models, categories))
        flagged = sorted((pair for pair in pairs if pair[1].unsafe), key=lambda pair: -pair[1].unsafe_probability)
        t = time.perf_counter()
        artifacts.protected = self._protection(loaded, protect) if flagged else []
        protected = protection_union(artifacts.protected, image.shape[:2]) if artifacts.protected else None
        protected_work = working_protection(protected, work.shape[:2]) if protected is not None else None
        timings["protect"] = time.perf_counter() - t
        flagged_models = [clf.name for clf, _ in flagged]
        for stage in ("attribute", "segment", "search"):
            timings[stage] = 0.0
        searched_all, last_check = True, None
        for clf, cat in flagged:
            probs_now = (  # the classification step's forward, reused while nothing is obfuscated yet
                np.array([cat.labels[label] for label in clf.labels]) if current is image
                else clf.predict_proba(current[None])[0]
            )
            if float(probs_now[clf.unsafe_indices].sum()) <= config.stop_level:
                continue  # an earlier category's obfuscation already hid it for this model
            result = cse(clf, current, config=config, original_probabilities=probs_now, protected=protected_work)
            for stage in ("attribute", "segment", "search"):
                timings[stage] += result.timings.get(stage, 0.0)
            steps = [float(np.asarray(row)[clf.unsafe_indices].sum()) for row in result.search.probabilities]
            after = (
                result.verification.unsafe_probabilities[clf.name]["output"] if result.verification else steps[-1]
            )
            counterfactuals.append(
                CounterfactualResult(
                    category=clf.category, model=clf.name, mode=config.mode, attribution=config.attribution,
                    segmentation=config.segmentation, style=config.style, found=result.found,
                    verified=result.verified, regions=[*result.regions, *result.completed], completed=result.completed,
                    depth=len(result.regions) + len(result.completed), greedy_depth=result.search.greedy_depth,
                    n_regions=int(result.segments.max()) + 1, queries=result.queries,
                    obfuscated_fraction=result.obfuscated_fraction, unsafe_probability_steps=steps,
                    unsafe_probability_after=after, mask=RLE.from_mask(mask_full := full_mask(result.mask, image.shape[:2])),
                )
            )
            artifacts.attributions[clf.category] = result.attribution
            artifacts.segments[clf.category] = result.segments
            artifacts.masks[clf.category] = mask_full
            if result.output is None or not result.verified:
                searched_all = False
                if result.output is not None:  # what the search found, for the 'prefix' fallback
                    current, union = result.output, union | result.mask
                break  # no verified output is possible for this model: the fallback decides the rest
            current, union, last_check = result.output, union | result.mask, result.verification

        if work is not image:  # the mask, mapped to full resolution, obfuscates the original; verified there
            full = full_mask(union, image.shape[:2])
            if protected is not None:  # the mapping's rounding never reaches protected pixels CSE kept
                full &= ~protected | full_mask(union & protected_work, image.shape[:2])
            union = full
            current = obfuscate(image, union) if union.any() else image
            last_check = None
        verdict = "unsafe" if any(c.unsafe for c in categories) else "safe"
        result_kwargs: dict = {}
        found = None  # the attributes real detectors see on a flagged original (rationale, second opinion)
        if verdict == "unsafe":
            t = time.perf_counter()
            detectors = self.scan_config.attributes
            # the detectors read the original on a detector thread while the classifiers verify, and the
            # second opinion's passes queue behind it: eight passes on two threads cost what seven do
            original = detect_soon(image, detectors) if detectors else None
            check = verify(
                models, current, threshold=config.threshold, margin=config.margin,
                perturbations=config.perturbations, flagged=flagged_models, known=last_check,
            )
            # the detectors also read the re-upload copies verification checks, except the mirror (SECOND_OPINION_COPIES)
            copies = [name for name in config.perturbations if name in SECOND_OPINION_COPIES]
            opinion = second_opinion(current, detectors, copies) if detectors and check.passed and union.any() else None
            found = original.result() if original is not None else None
            # the detectors' own time on the original (it ran beside verification, whose time holds the rest)
            timings["attributes"] = sum(run.seconds for run in found.runs) if found is not None else 0.0
            if opinion is not None and not opinion.passed:
                # a detector still sees an unsafe attribute (readable offensive text, on the output or a copy,
                # mapped back onto the output): it is in the image, so it is reported; hide it too, check again
                found = add_findings(found, opinion)
                grown = _attribute_area(opinion, image.shape[:2], protected) & ~union
                artifacts.grown, union = (grown if grown.any() else None), union | grown
                current = obfuscate(image, union)
                check = verify(models, current, threshold=config.threshold, margin=config.margin,
                               perturbations=config.perturbations, flagged=flagged_models)
                opinion = second_opinion(current, detectors, copies)
                found = add_findings(found, opinion)
            timings["verify"] = time.perf_counter() - t
            passed = searched_all and check.passed and bool(union.any()) and (opinion is None or opinion.passed)
            fallback = None
            if not passed:
                fallback = self.scan_config.fallback
                union = {"full": np.ones_like(union), "prefix": union, "none": np.zeros_like(union)}[fallback]
                # the verification recorded stays that of the search's output, the one that failed
                current = obfuscate(image, union) if fallback == "full" else current
            artifacts.obfuscated = current if union.any() else None
            if artifacts.grown is not None and not (artifacts.grown & union).any():
                artifacts.grown = None  # fallback 'none': nothing the second opinion found is obfuscated either
            kept = kept_shares(image, current if union.any() else None, artifacts.protected)
            result_kwargs = {
                "protected": [
                    ProtectedRegionModel(label=r.label, source=r.source, detector=r.detector, box=r.box,
                                         pixels=int(r.mask.sum()), kept=share)
                    for r, share in zip(artifacts.protected, kept)
                ],
                "mask": RLE.from_mask(union) if union.any() else None,
                "obfuscated_fraction": float(union.mean()),
                "obfuscated_safe": passed,
                "output_status": "verified" if passed else "not verified",
                "fallback": fallback,
                "verification": VerificationResult(
                    **check.as_dict(), second_opinion=SecondOpinionModel.from_opinion(opinion) if opinion else None,
                ),
                "unsafe_probability_after": {
                    clf.category: check.unsafe_probabilities[clf.name]["output"] for clf in self.classifiers
                },
            }

        t = time.perf_counter()
        control = {c.category: c.unsafe_probability for c in categories}
        # the obfuscated regions the rationale places attributes in: each category's, then what the second opinion added
        regions = [*artifacts.masks.values(), artifacts.grown] if artifacts.grown is not None else None
        explanation = make_rationale(
            image, control, _evidence(counterfactuals, artifacts, result_kwargs), backend=self.scan_config.rationale,
            threshold=config.threshold, attributes=found, regions=regions, **self.scan_config.rationale_options,
        )
        timings["rationale"] = time.perf_counter() - t
        timings["total"] = timings["load"] + timings["classify"] + time.perf_counter() - t0

        inside = content_box(loaded.array)
        result = ScanResult(
            input=InputInfo(
                path=None if loaded.source.startswith("<") else loaded.source,
                sha256=loaded.sha256,
                width=loaded.width,
                height=loaded.height,
                format=loaded.format,
                mode=loaded.mode,
                frames=loaded.frames,
                frame=loaded.frame,
                frames_checked=1 + len(loaded.samples),
                frame_gap=loaded.frame_gap,
                rendering=loaded.rendering,
                windows=len(view_boxes(loaded.array)) - (inside is not None),  # the whole image's windows and its content box's
                content_box=inside,
                tiles=len(tile_boxes(loaded.array.shape)) if self.scan_config.tiles else 0,
            ),
            verdict=verdict,
            attributes=AttributeReportModel.from_report(found) if found is not None else None,
            categories=categories,
            counterfactuals=counterfactuals,
            rationale=explanation,
            timings=timings,
            versions=self._versions(),
            **result_kwargs,
        )
        result._artifacts = artifacts
        log.debug("%s: %s in %.2f s (%s)", loaded.source, verdict, timings["total"],
                  ", ".join(f"{k} {v:.3f}" for k, v in timings.items() if k != "total"))
        return result


def _evidence(counterfactuals: list[CounterfactualResult], artifacts: ScanArtifacts, outcome: dict) -> dict:
    """What the rationale may state, from the typed results only: per category the search's
    outcome and its mask, and for the image whether the output was verified, which fallback was
    applied, what the protected regions kept, and what the attribute detectors' second opinion
    covered (the detectors that ran, the copies they looked at) and still found."""
    evidence: dict = {
        c.category: {
            "model": c.model, "found": c.found, "verified": c.verified, "depth": len(c.regions) - len(c.completed),
            "completed": len(c.completed), "fraction": c.obfuscated_fraction, "steps": c.unsafe_probability_steps,
            "after": c.unsafe_probability_after, "mask": artifacts.masks.get(c.category),
        }
        for c in counterfactuals
    }
    if outcome:
        verification = outcome["verification"]
        evidence["_output"] = {
            "verified": outcome["obfuscated_safe"], "fallback": outcome["fallback"],
            "fraction": outcome["obfuscated_fraction"], "perturbations": list(verification.perturbations),
            "models": list(verification.models),
            "protected": [{"label": r.label, "source": r.source, "kept": r.kept} for r in outcome["protected"]],
            "second_opinion": _opinion_evidence(verification.second_opinion, artifacts.grown is not None),
        }
    return evidence


def _opinion_evidence(opinion: SecondOpinionModel | None, grown: bool) -> dict | None:
    """The second opinion as the rationale may state it (None: no detector was asked); ``grown``:
    the obfuscated area was grown over what an earlier pass of it found."""
    if opinion is None:
        return None
    return {
        "passed": opinion.passed, "complete": opinion.complete, "copies": list(opinion.copies), "grown": grown,
        "detectors": [v.detector for v in opinion.verdicts if v.verdict != "not checked"],
        "not_checked": [v.detector for v in opinion.verdicts if v.verdict == "not checked"],
        "found": [{"name": a.name, "text": a.text, "seen_on": a.seen_on} for v in opinion.verdicts for a in v.found],
    }


def _attribute_area(opinion: SecondOpinion, shape: tuple[int, int], protected: np.ndarray | None) -> np.ndarray:
    """The pixels of every unsafe attribute the second opinion still found (on the output or on a
    copy, mapped back onto the output), with a margin of 2 % of the shorter side (a detector's box
    is tight around what it read). The margin stays out of ``protected`` pixels; the attribute
    itself does not (it is the content, and cannot be hidden otherwise)."""
    import cv2

    area = np.zeros(shape, bool)
    for verdict in opinion.verdicts:
        for attribute in verdict.found:
            area |= attribute.area(shape)
    radius = max(1, round(0.02 * min(shape)))
    grown = cv2.dilate(area.astype(np.uint8), np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)) > 0
    return grown if protected is None else area | (grown & ~protected)


@lru_cache(maxsize=1)
def _torch_version() -> str:
    """The installed torch's version (from its package metadata: a scan of safe images need not
    import torch to report it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:
        return "unknown"


def _load(source: str | os.PathLike | bytes | np.ndarray | LoadedImage, config: ScanConfig) -> LoadedImage:
    if isinstance(source, LoadedImage):
        return source
    if isinstance(source, np.ndarray):
        return load_array(source)
    return load_image_info(source, **config.image_limits)
