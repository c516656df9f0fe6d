"""Speed of whole CSE against the reference stack, LIME, SEDC and Ablation-CAM, measured in one run
on the same images and the same models.

The reference stack is what CSE is built from off the shelf: pytorch-grad-cam's FullGrad
(``fullgrad-ref``), scikit-image's SLIC at the paper's settings (25 segments, compactness 1) and a
sequential greedy search that classifies one image per step (mask the top-1, top-2, … regions by
Def. 1 until the decision flips, at most 10) forwarding the torch module itself, then obfuscation.
SafeView runs the same stages as
``safeview scan`` does: its own batched FullGrad, BASS guided by the map (and SLIC, as a second
row), Def. 1 ranking, the pruned greedy search (one prefix per forward on a CPU, growing batches on a GPU) with the user's obfuscation, and the
full-image fallback when nothing flips, its predictions through the runtime a loaded checkpoint
gets (``safeview.runtime.TorchRuntime``); ``safeview scan`` as a whole (``Safeguard.scan``: classify,
CSE, re-check, rationale) is timed too. LIME (1,000 samples) and SEDC run on the first
``--lime-images`` / ``--sedc-images`` images, Ablation-CAM through the library on the first
``--ablation-images`` (it runs the whole network per channel: minutes per ResNet-50 image).

Two models: ResNet-50 (torchvision, random weights, its last layer fitted as a linear probe on
``--probe`` held-out synthetic images, so that its decision can flip; on unseen images it follows
the photo more than the stand-in, so its found % is a sanity figure, not a quality one) at ``--size``²
for timing, and the demo model ``demo-sexual`` (trained, a small CNN at 128² input), whose found %
is meaningful. Images are benign scikit-image sample photos with a drawn stand-in (``safeview.synth``,
held-out seeds), the first each model flags (``safeview scan`` runs CSE on those alone), all methods
interleaved image by image so that the machine's load falls on all of them alike. The search starts
from the class the model predicts and stops when another class exceeds 0.5. Hide mode's found %
counts outputs that reach its margin and pass verification, so the reference's search is also run
on, untimed, to that criterion (its margin, then the same verification) for a like-for-like count.

    .venv/bin/python bench/speed.py --threads 2 --images 4 --demo-images 12 --lime-images 1 --sedc-images 1 \
        --ablation-images 1 --out bench/results/speed.md

On two busy CPU cores that run takes about 20 minutes, 18 of them in the three slow references on
one ResNet-50 image (pytorch-grad-cam's Ablation-CAM, LIME, SEDC); ``--sedc-images 0`` and
``--ablation-images 0`` leave them out. ``--device cuda`` runs the same on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's Ablation-CAM progress bars

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from segment import emit  # noqa: E402

from safeview import nets  # noqa: E402
from safeview.attribute import attribution_map  # noqa: E402
from safeview.baselines.lime import lime_counterfactual  # noqa: E402
from safeview.baselines.sedc import sedc  # noqa: E402
from safeview.classify import Classifier, Preprocess, load_classifier  # noqa: E402
from safeview.counterfactual import CSEConfig, cse, default_flip_rule, rank_regions, region_scores  # noqa: E402
from safeview.obfuscate import Obfuscator  # noqa: E402
from safeview.pipeline import Safeguard  # noqa: E402
from safeview.runtime import TorchRuntime  # noqa: E402
from safeview.synth import make_sample  # noqa: E402
from safeview.threads import set_threads  # noqa: E402
from safeview.verify import verify  # noqa: E402

THRESHOLD = 0.5
MAX_REGIONS = 10
STAGES = ("attribute", "segment", "search", "total")
HELD_OUT_SEED = 7_000_000  # the demo models were trained on synth seed 0


# --- images and models ---------------------------------------------------------------------------


def photo_seeds(n: int, start: int = HELD_OUT_SEED) -> list[int]:
    """The first ``n`` synth seeds from ``start`` whose background is a scikit-image photo
    (``synth.make_background`` draws a photo when its first uniform number is below 0.6)."""
    seeds, seed = [], start
    while len(seeds) < n:
        if np.random.default_rng([seed, 0]).random() < 0.6:
            seeds.append(seed)
        seed += 1
    return seeds


def images_for(n: int, size: int) -> list[np.ndarray]:
    return [make_sample("sexual", True, seed=s, size=size).image for s in photo_seeds(n)]


def flagged_images(clf: Classifier, n: int, size: int) -> list[np.ndarray]:
    """The first ``n`` of :func:`images_for`'s images that ``clf`` flags (an unsafe label most
    probable): ``safeview scan`` runs CSE only on those, and on an image the model calls safe the
    reference's "flip" would search towards unsafe."""
    unsafe = set(clf.unsafe_indices)
    images: list[np.ndarray] = []
    for seed in photo_seeds(50 * n):
        image = make_sample("sexual", True, seed=seed, size=size).image
        if int(np.argmax(clf.predict_proba(image[None])[0])) in unsafe:
            images.append(image)
            if len(images) == n:
                return images
    raise SystemExit(f"{clf.name} flags only {len(images)} of {50 * n} benchmark images; fewer than --images {n}")


def build_model(name: str, size: int, device: str, probe_images: int) -> Classifier:
    """A built-in or checkpoint model by name, or architecture ``name`` with random weights whose
    last layer is then fitted as a linear probe (logistic regression on its pooled random features)
    to tell ``probe_images`` held-out synthetic images with a stand-in from the same without one:
    a random net's decision never flips, which would make every search run to its budget."""
    if name.startswith("demo-") or name in ("open-nsfw",) or name.endswith(".safeview"):
        return load_classifier(name, device=device)
    from sklearn.linear_model import LogisticRegression

    torch.manual_seed(0)
    module = nets.build(name, 2)
    clf = Classifier.from_module(
        module, ["safe", "unsafe"], ["unsafe"], name=f"{name} (random features, linear probe)",
        category="sexual", preprocess=Preprocess(resize=(size, size)), device=device,
    )
    head = module.fc
    seeds = photo_seeds(probe_images, start=HELD_OUT_SEED + 500_000)
    images = [make_sample("sexual", i % 2 == 0, seed=s, size=size).image for i, s in enumerate(seeds)]
    labels = np.array([i % 2 == 0 for i in range(len(images))], dtype=int)
    module.fc = torch.nn.Identity()
    try:
        with torch.inference_mode():
            features = np.concatenate([clf.logits(clf.tensor(images[i : i + 8])).cpu().numpy() for i in range(0, len(images), 8)])
    finally:
        module.fc = head
    scale = features.std(axis=0) + 1e-6
    fit = LogisticRegression(C=1.0, max_iter=2000).fit(features / scale, labels)
    with torch.no_grad():
        weight = torch.as_tensor(fit.coef_[0] / scale, dtype=head.weight.dtype)
        head.weight.copy_(torch.stack([-weight / 2, weight / 2]))
        head.bias.copy_(torch.as_tensor([-fit.intercept_[0] / 2, fit.intercept_[0] / 2], dtype=head.bias.dtype))
    clf.metadata["probe_train_accuracy"] = float(fit.score(features / scale, labels))
    # predictions as a loaded checkpoint makes them (onnxruntime on its export), from the fitted weights
    return dataclasses.replace(clf, runtime=TorchRuntime(module, (size, size)))


# --- the stacks ----------------------------------------------------------------------------------


def clock() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def reference_stack(clf: Classifier, image: np.ndarray, source: int, obfuscator: Obfuscator) -> dict:
    """pytorch-grad-cam FullGrad + scikit-image SLIC + a sequential greedy search (one forward per
    step, no pruning) + obfuscation (the whole image when nothing flips).

    After the timed part, the same sequential search goes on, untimed, to hide mode's stop (the
    unsafe probability at most ``CSEConfig().stop_level``) within hide's budget of regions:
    ``margin_found`` says whether the reference reaches hide's stop level, ``margin_verified`` whether
    that output also passes hide's verification: the criterion hide mode's found % counts."""
    from skimage.segmentation import slic

    flipped = default_flip_rule(source, THRESHOLD)
    t0 = clock()
    attribution = attribution_map(clf, image, source, "fullgrad-ref")
    t1 = clock()
    labels = slic(image, n_segments=25, compactness=1.0, start_label=0)
    t2 = clock()
    ranked = rank_regions(region_scores(attribution, labels))
    mask, found, queries, depth, output = np.zeros(labels.shape, bool), False, 0, 0, None
    for depth, region in enumerate(ranked[:MAX_REGIONS], start=1):
        mask = mask | (labels == region)
        candidate = obfuscator(image, mask)
        queries += 1
        if flipped(clf.predict_proba(candidate[None]))[0]:
            found, output = True, candidate
            break
    if not found:
        output = obfuscator(image, np.ones(labels.shape, bool))
    t3 = clock()
    margin_depth, margin_verified = reference_at_margin(clf, image, labels, ranked, obfuscator)
    return {
        "seconds": {"attribute": t1 - t0, "segment": t2 - t1, "search": t3 - t2, "total": t3 - t0},
        "found": found, "depth": depth if found else None, "queries": queries, "regions": int(labels.max()) + 1,
        "margin_found": margin_depth is not None, "margin_depth": margin_depth, "margin_verified": margin_verified,
    }


def reference_at_margin(clf: Classifier, image: np.ndarray, labels: np.ndarray, ranked: np.ndarray, obfuscator: Obfuscator) -> tuple[int | None, bool]:
    """The reference's sequential search run to hide mode's stop instead of the flip: the first
    prefix of ``ranked`` (at most hide's default budget) whose obfuscation brings the unsafe
    probability to hide's stop level or below (None if none does), and whether that output passes
    the verification hide mode's outputs must pass (``safeview.verify.verify``: the output and its
    re-upload copies, hide's margin)."""
    hide = CSEConfig()
    unsafe = list(clf.unsafe_indices)
    mask = np.zeros(labels.shape, bool)
    for depth, region in enumerate(ranked[: hide.max_regions], start=1):
        mask = mask | (labels == region)
        output = obfuscator(image, mask)
        if clf.predict_proba(output[None])[0][unsafe].sum() <= hide.stop_level:
            checked = verify([clf], output, threshold=hide.threshold, margin=hide.margin, perturbations=hide.perturbations)
            return depth, checked.passed
    return None, False


def safeview_stack(
    clf: Classifier, image: np.ndarray, source: int, obfuscator: Obfuscator, segmentation: str,
    probabilities: np.ndarray | None = None, mode: str = "hide",
) -> dict:
    """CSE as ``Safeguard.scan`` runs it for one flagged category (``counterfactual.cse``, the same
    unit): FullGrad, the segmentation guided by it, Def. 1 order, the search of ``mode`` (the
    leak-free default with completion and verification, or the paper's), full-image fallback."""
    t0 = clock()
    result = cse(clf, image, source, config=CSEConfig(mode=mode, segmentation=segmentation), original_probabilities=probabilities)
    ok = result.found if mode == "paper" else result.verified
    output = result.output if ok else obfuscator(image, np.ones(image.shape[:2], bool))
    t3 = clock()
    assert output is not None
    seconds = {k: result.timings[k] for k in ("attribute", "segment", "search")}
    return {
        "seconds": {**seconds, "total": t3 - t0},
        # the paper counts a flip as found; the default only a verified output
        "found": ok, "depth": len(result.regions) if ok else None, "queries": result.queries,
        "regions": int(result.segments.max()) + 1,
    }


def whole_scan(guard: Safeguard, image: np.ndarray) -> dict:
    t0 = clock()
    result = guard.scan(image)
    t1 = clock()
    cf = result.counterfactuals[0] if result.counterfactuals else None
    return {
        "seconds": {"total": t1 - t0, **{k: v for k, v in result.timings.items() if k in ("attribute", "segment", "search")}},
        "flagged": result.verdict == "unsafe",
        "found": None if cf is None else cf.found, "depth": None if cf is None or not cf.found else cf.depth - len(cf.completed),  # the search's, as the CSE rows
        "queries": None if cf is None else cf.queries,
    }


def baseline(method: Callable, clf: Classifier, image: np.ndarray, source: int, obfuscator: Obfuscator) -> dict:
    t0 = clock()
    cf = method(clf, image, source_class=source, threshold=THRESHOLD, max_regions=MAX_REGIONS, obfuscator=obfuscator,
                flip_rule=default_flip_rule(source, THRESHOLD))
    t1 = clock()
    return {"seconds": {"total": t1 - t0}, "found": cf.found, "depth": cf.depth if cf.found else None, "queries": cf.queries}


def ablation(clf: Classifier, image: np.ndarray, source: int, method: str) -> tuple[float, np.ndarray]:
    t0 = clock()
    amap = attribution_map(clf, image, source, method)
    return clock() - t0, amap


# --- one model -------------------------------------------------------------------------------------


def run_model(clf: Classifier, images: list[np.ndarray], args: argparse.Namespace, log: Callable[[str], None]) -> dict:
    obfuscator = Obfuscator("blur")
    guard = Safeguard([clf], attribution="fullgrad", segmentation="bass", style="blur")
    predictions = [clf.predict_proba(im[None])[0] for im in images]  # as the pipeline's classify step, not timed
    sources = [int(np.argmax(p)) for p in predictions]

    # warm-up outside the timings: numba's BASS kernels, SLIC, the model's first calls
    warm = make_sample("sexual", True, seed=HELD_OUT_SEED - 1, size=images[0].shape[0]).image
    reference_stack(dataclasses.replace(clf, runtime=None), warm, 0, obfuscator)
    for seg in ("bass", "slic"):
        safeview_stack(clf, warm, 0, obfuscator, seg)
    ablation(clf, warm, 0, "ablationcam")
    guard.scan(warm)

    plain = dataclasses.replace(clf, runtime=None)  # the reference stack forwards the module itself
    rows: dict[str, list[dict]] = {k: [] for k in ("reference", "safeview-bass", "safeview-paper", "safeview-slic", "scan", "lime", "sedc")}
    abl: dict[str, list] = {"fast": [], "library": [], "pearson": [], "max_abs": []}
    for i, (image, source, prediction) in enumerate(zip(images, sources, predictions)):
        rows["reference"].append(reference_stack(plain, image, source, obfuscator))
        rows["safeview-bass"].append(safeview_stack(clf, image, source, obfuscator, "bass", prediction))
        rows["safeview-paper"].append(safeview_stack(clf, image, source, obfuscator, "bass", prediction, mode="paper"))
        rows["safeview-slic"].append(safeview_stack(clf, image, source, obfuscator, "slic", prediction))
        rows["scan"].append(whole_scan(guard, image))
        if i < args.ablation_fast_images:
            seconds, fast = ablation(clf, image, source, "ablationcam")
            abl["fast"].append(seconds)
            if i < args.ablation_images:
                seconds, library = ablation(clf, image, source, "ablationcam-ref")
                abl["library"].append(seconds)
                abl["pearson"].append(float(np.corrcoef(fast.ravel(), library.ravel())[0, 1]))
                abl["max_abs"].append(float(np.abs(fast - library).max()))
        if i < args.lime_images:
            rows["lime"].append(baseline(lime_counterfactual, clf, image, source, obfuscator))
        if i < args.sedc_images:
            rows["sedc"].append(baseline(sedc, clf, image, source, obfuscator))
        done = {"reference": rows["reference"][-1]["seconds"]["total"], "safeview+bass": rows["safeview-bass"][-1]["seconds"]["total"]}
        if i < args.ablation_fast_images:
            done["ablation-cam"] = abl["fast"][-1]
        if i < args.ablation_images:
            done["ablation-cam-ref"] = abl["library"][-1]
        for key in ("lime", "sedc"):
            if i < getattr(args, f"{key}_images"):
                done[key] = rows[key][-1]["seconds"]["total"]
        log(f"{clf.name}: image {i + 1}/{len(images)}: " + ", ".join(f"{k} {v:.2f} s" for k, v in done.items()))
    return {"model": clf.name, "images": len(images), "sources": sources, "rows": rows, "ablation": abl,
            "probe_accuracy": clf.metadata.get("probe_train_accuracy")}


# --- reporting -------------------------------------------------------------------------------------


def spread(values: list[float], spec: str = ".3f", unit: str = "") -> str:
    """Median (min–max) of ``values``; a single value alone."""
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:{spec}}{unit}"
    return f"{statistics.median(values):{spec}}{unit} ({min(values):{spec}}–{max(values):{spec}}{unit})"


def seconds(rows: list[dict], stage: str) -> list[float]:
    return [r["seconds"][stage] for r in rows if stage in r["seconds"]]


def ratios(numerator: list[dict], denominator: list[dict], stage: str) -> list[float]:
    """Per-image ratios (paired: the same image, measured back to back)."""
    return [a["seconds"][stage] / b["seconds"][stage] for a, b in zip(numerator, denominator) if b["seconds"].get(stage)]


def found(rows: list[dict]) -> str:
    done = [r for r in rows if r.get("found") is not None]
    if not done:
        return "–"
    k = sum(bool(r["found"]) for r in done)
    return f"{k}/{len(done)} ({100 * k / len(done):.0f} %)"


def mean_of(rows: list[dict], key: str, spec: str = ".1f") -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    return format(statistics.fmean(values), spec) if values else "–"


LABELS = {
    "reference": "reference: pytorch-grad-cam FullGrad + skimage SLIC + sequential search",
    "safeview-bass": "**SafeView CSE** (leak-free default: margin, completion, robust verification): FullGrad + BASS",
    "safeview-paper": "SafeView CSE, paper mode (greedy prefix at the first flip; verification recorded): FullGrad + BASS",
    "safeview-slic": "SafeView CSE (leak-free default): FullGrad + SLIC",
    "scan": "`safeview scan` whole (classify, CSE with BASS, re-check, rationale)",
    "lime": "LIME (1,000 samples, quickshift) + search",
    "sedc": "SEDC (quickshift, ≤ 2,000 queries)",
}


def model_section(result: dict, targets: bool) -> list[str]:
    rows = result["rows"]
    ref = rows["reference"]
    lines = [
        f"### {result['model']} — {result['images']} images",
        "",
        "Seconds per image, median (min–max). Speed-up: reference ÷ this, median (min–max) of the per-image ratios "
        "(the same image back to back)."
        + ("" if result.get("probe_accuracy") is None else f" Linear probe's training accuracy: {result['probe_accuracy']:.2f}."),
        "",
        "| stack | n | attribution | segmentation | search + obfuscation | total | speed-up (total) | found | depth | queries |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, label in LABELS.items():
        rs = rows[key]
        if not rs:
            continue
        stage = [spread(seconds(rs, s)) for s in STAGES]
        paired = ref[: len(rs)]
        speed = spread(ratios(paired, rs, "total"), ".1f", "×")
        lines.append(
            f"| {label} | {len(rs)} | {stage[0]} | {stage[1]} | {stage[2]} | {stage[3]} | {speed} | {found(rs)} "
            f"| {mean_of(rs, 'depth', '.2f')} | {mean_of(rs, 'queries')} |"
        )
    ours = rows["safeview-bass"]
    hide = CSEConfig()
    lines += [
        "",
        f"- Per stage, reference ÷ SafeView (BASS), per-image ratios: FullGrad {spread(ratios(ref, ours, 'attribute'), '.1f', '×')}, "
        f"segmentation (SLIC ÷ BASS) {spread(ratios(ref, ours, 'segment'), '.2f', '×')}, "
        f"search + obfuscation {spread(ratios(ref, ours, 'search'), '.2f', '×')}, total {spread(ratios(ref, ours, 'total'), '.1f', '×')}.",
        f"- Found at hide mode's criterion (unsafe probability ≤ {hide.stop_level:.2f} within {hide.max_regions} regions): the "
        f"reference's sequential search run on past its flip, untimed, reaches it on {found([{'found': r['margin_found']} for r in ref])} "
        f"(mean depth {mean_of([{'d': r['margin_depth']} for r in ref], 'd', '.2f')}), and that output passes hide's verification "
        f"(the output and its re-upload copies) on {found([{'found': r['margin_verified']} for r in ref])}; SafeView's leak-free "
        f"default, verified: {found(ours)}.",
    ]
    for key in ("lime", "sedc"):
        if rows[key]:
            n = len(rows[key])
            lines.append(
                f"- {key.upper()} ÷ SafeView (BASS) on the same {n} image(s): {spread(ratios(rows[key], ours[:n], 'total'), '.1f', '×')}; "
                f"found {found(rows[key])} vs SafeView {found(ours[:n])} on those images."
            )
    scans = rows["scan"]
    flagged = sum(bool(r["flagged"]) for r in scans)
    lines.append(f"- `safeview scan` flagged {flagged}/{len(scans)} images (it runs CSE only on flagged ones).")
    if targets and rows["lime"]:
        lime_speed = statistics.median(ratios(rows["lime"], ours[: len(rows["lime"])], "total"))
        lime_target = f"{lime_speed:.0f}× ({'met' if lime_speed >= 100 else 'not met'})"
    else:
        lime_target = "not measured"
    total, speed = statistics.median(seconds(ours, "total")), statistics.median(ratios(ref, ours, "total"))
    lines += [] if not targets else [
        f"- Issue 8's targets for whole CSE (FullGrad + BASS + search + obfuscation): ≤ 0.3 s per image — {total:.2f} s "
        f"({'met' if total <= 0.3 else 'not met'}); ≥ 12× the reference stack — {speed:.1f}× ({'met' if speed >= 12 else 'not met'}); "
        f"≥ 100× LIME — {lime_target}."
    ]
    abl = result["ablation"]
    if abl["fast"]:
        lines += [
            "",
            "| Ablation-CAM | n | s / image, median (min–max) | library ÷ this | Pearson r vs library (min) | max abs. difference |",
            "|---|---|---|---|---|---|",
            f"| pytorch-grad-cam (`ablationcam-ref`, batch 32) | {len(abl['library'])} | {spread(abl['library'], '.2f')} | 1.0× | | |",
        ]
        n = len(abl["library"])
        speed = spread([a / b for a, b in zip(abl["library"], abl["fast"][:n])], ".0f", "×") if n else "–"
        r = f"{min(abl['pearson']):.6f}" if abl["pearson"] else "–"
        d = f"{max(abl['max_abs']):.1e}" if abl["max_abs"] else "–"
        lines.append(f"| **SafeView** (`ablationcam`, batched) | {len(abl['fast'])} | {spread(abl['fast'], '.2f')} | {speed} | {r} | {d} |")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    parser.add_argument("--arch", default="resnet50", help="architecture timed with random weights (default resnet50; '' to skip)")
    parser.add_argument("--probe", type=int, default=96, help="images the --arch model's linear probe is fitted on (default 96)")
    parser.add_argument("--demo-model", default="demo-sexual", help="trained model for found %% (default demo-sexual; '' to skip)")
    parser.add_argument("--size", type=int, default=224, help="image side (default 224)")
    parser.add_argument("--images", type=int, default=8, help="images for --arch (default 8)")
    parser.add_argument("--demo-images", type=int, default=None, help="images for --demo-model (default: --images)")
    parser.add_argument("--lime-images", type=int, default=1, help="images LIME runs on, per model (default 1)")
    parser.add_argument("--sedc-images", type=int, default=1, help="images SEDC runs on, per model (default 1)")
    parser.add_argument("--ablation-images", type=int, default=1, help="images pytorch-grad-cam's Ablation-CAM runs on, per model (default 1)")
    parser.add_argument("--ablation-fast-images", type=int, default=None, help="images our Ablation-CAM runs on (default: all)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "speed.md")
    args = parser.parse_args()
    if args.ablation_fast_images is None:
        args.ablation_fast_images = 1 << 30
    args.ablation_fast_images = max(args.ablation_fast_images, args.ablation_images)

    set_threads(args.threads)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    results = []
    plan = [(args.arch, args.images), (args.demo_model, args.demo_images if args.demo_images is not None else args.images)]
    for name, n in plan:
        if name and n > 0:
            clf = build_model(name, args.size, args.device, args.probe)
            images = flagged_images(clf, n, args.size)
            results.append(run_model(clf, images, args, log))
    wall = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    command = " ".join([".venv/bin/python", *sys.argv])
    try:
        load = "load average {:.1f} / {:.1f} / {:.1f} (1 / 5 / 15 min) at the end".format(*os.getloadavg())
    except OSError:
        load = ""
    device = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else f"{os.cpu_count()} CPU cores, {args.threads} torch/numba threads"
    lines = [
        f"# Speed: CSE against the reference stack, LIME, SEDC and Ablation-CAM ({args.size}², {args.device})",
        "",
        f"Command: `{command}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {device}, torch {torch.__version__}, Python {sys.version.split()[0]}; "
        f"{load}; wall {wall:.0f} s, peak RSS {peak_mib:.0f} MiB.  ",
        "Images: benign scikit-image sample photos with a drawn stand-in (`safeview.synth.make_sample('sexual', True, seed)`, "
        f"held-out seeds from {HELD_OUT_SEED} with a photo background, the first that the model flags), {args.size}×{args.size}. Obfuscation: blur. "
        "Every stack starts from the class the model predicts and stops when another class exceeds 0.5, at most 10 regions. "
        "One warm-up pass per model (BASS's numba kernels, first torch calls) is not timed. "
        "Queries: images the model classified — the reference's one per search step, SafeView's also its pruning (on a CPU "
        "its prefixes go one per forward, as the reference's); LIME's its 1,000 samples as well.",
        "",
    ]
    for result in results:
        lines += model_section(result, targets=result["model"].startswith(f"{args.arch} "))
    text = "\n".join(lines)
    emit(text, args.out)
    args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "wall_s": wall,
                                                         "peak_rss_mib": peak_mib, "results": results}, indent=1, default=float))


if __name__ == "__main__":
    main()
