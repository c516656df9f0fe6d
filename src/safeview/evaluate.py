"""Evaluating an unsafe-image classifier on labelled images: the metrics of the paper's classifier
table (accuracy on the held-out test split) plus precision, recall, F1 and ROC-AUC of the unsafe
labels, the confusion matrix, and the expected calibration error (Guo et al. 2017, 15 equal-width
bins), which says whether the search's 0.5 threshold means what it says. Reports are JSON and an
HTML page with plots; the thumbnails of misclassified images are blurred unless asked otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from .errors import SafeViewError
from .metrics import classification_metrics

THUMB = 160  # longest side of an error thumbnail, px

#: checkpoint metadata key: the fraction of benign real photos the model calls unsafe, measured
#: outside training (e.g. ``safeview evaluate`` on real photos mapped to safe), with the number of
#: photos under ``real_false_alarm_images``
REAL_FALSE_ALARM_KEY = "real_false_alarm_rate"


def evaluate_classifier(
    classifier,
    data: str | Path,
    *,
    class_map: Mapping[str, str] | None = None,
    part: str = "all",
    split: str | Path | None = None,
    workers: int = 0,
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``classifier`` on the labelled images of ``data`` (a folder with one sub-folder per
    label, or folders mapped to labels by ``class_map``, or a CSV/JSONL manifest; see
    :func:`safeview.train.read_dataset`). ``part`` ("train", "val", "test") keeps the images that
    the checkpoint's split file (``split``, default next to the checkpoint) put in that part;
    "all" keeps every image. Unreadable images are skipped and listed. Returns the report dict:
    the model, the data, ``metrics`` (:func:`classification_metrics`, the model's temperature
    judged too), ``warnings`` (the metrics' plain-words warnings that the model cannot be trusted,
    then those its training recorded), ``errors`` (misclassified images, most confident first) and
    ``skipped``."""
    import torch

    from .inputs import file_sha256
    from .data import PARTS, decode_images, read_dataset, read_split, split_path

    root = Path(data).expanduser()
    classes: Sequence[str] = classifier.labels
    if root.is_dir() and not class_map:
        classes = [label for label in classifier.labels if (root / label).is_dir()]
        if not classes:
            raise SafeViewError(f"{root}: holds none of the model's label folders ({', '.join(classifier.labels)}); use --map FOLDER=LABEL")
    dataset = read_dataset(root, class_map=class_map, classes=classes)
    foreign = [c for c in dataset.classes if c not in classifier.labels]
    if foreign:
        raise SafeViewError(f"classes {foreign} are not labels of {classifier.name} ({', '.join(classifier.labels)}); use --map FOLDER=LABEL")
    to_model = [classifier.labels.index(c) for c in dataset.classes]
    paths, targets, skipped = dataset.paths, [to_model[label] for label in dataset.labels], []
    if part != "all":
        if part not in PARTS:
            raise SafeViewError(f"unknown part {part!r}; choose all, {', '.join(PARTS)}")
        if split is None:
            if "path" not in classifier.metadata:
                raise SafeViewError("give the split file (--split) to evaluate one part with a model that was not loaded from a file")
            split = split_path(classifier.metadata["path"])
        parts = read_split(split)
        kept = []
        for path, target in zip(paths, targets):
            try:
                if parts.get(file_sha256(path)) == part:
                    kept.append((path, target))
            except OSError as exc:
                skipped.append(f"{path}: cannot be read ({exc.strerror or exc})")
        if not kept:
            raise SafeViewError(f"{root}: none of its images is in the {part} part of {split}")
        paths, targets = [p for p, _ in kept], [t for _, t in kept]

    rows, probabilities, chunk = [], [], []

    def flush() -> None:
        with torch.inference_mode():
            x = torch.from_numpy(np.stack([a for _, a in chunk])).to(classifier.device)
            probabilities.append(torch.softmax(classifier.logits(x).float(), 1).cpu().numpy())
        rows.extend(i for i, _ in chunk)
        chunk.clear()

    for done, (i, _sha, array, error) in enumerate(decode_images(paths, classifier.preprocess.array, workers=workers), 1):
        if error is not None:
            skipped.append(error)
        else:
            chunk.append((i, array))
            if len(chunk) == batch_size:
                flush()
        if progress:
            progress(done, len(paths))
    if chunk:
        flush()
    if not rows:
        raise SafeViewError(f"{root}: none of its {len(paths)} files is a readable image")
    p = np.concatenate(probabilities)
    y = np.asarray([targets[i] for i in rows])
    metrics = classification_metrics(y, p, labels=classifier.labels, unsafe_indices=classifier.unsafe_indices, temperature=classifier.temperature)
    unsafe_score = p[:, classifier.unsafe_indices].sum(axis=1)
    wrong = [k for k in np.argsort(-p.max(axis=1), kind="stable") if p[k].argmax() != y[k]]
    errors = [
        {
            "path": str(paths[rows[k]]), "true": classifier.labels[y[k]], "predicted": classifier.labels[int(p[k].argmax())],
            "confidence": float(p[k].max()), "unsafe_probability": float(unsafe_score[k]),
        }
        for k in wrong
    ]
    return {
        "model": classifier.name,
        "category": classifier.category,
        "model_sha256": classifier.metadata.get("sha256"),
        "temperature": classifier.temperature,
        "data": str(root),
        "part": part,
        "split": str(split) if split is not None else None,
        "n_images": len(rows),
        "metrics": metrics,
        "warnings": metrics["warnings"] + [f"when trained: {w}" for w in classifier.metadata.get("warnings", [])],
        "errors": errors,
        "skipped": skipped,
    }


def real_photo_false_alarms(classifier, views: Sequence[tuple[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """How often ``classifier`` calls a benign real photo unsafe: on ``views`` (default: six views
    of each colour photo the demo models never trained on, :func:`safeview.synth.real_photo_views`,
    and the 200 small grey photos of :func:`safeview.synth.lfw_views`), the share whose unsafe
    probability exceeds 0.5, which views and which photos those are (a label is ``photo/view``),
    and the highest probability seen. The figure :data:`REAL_FALSE_ALARM_KEY` records."""
    from .synth import lfw_views, real_photo_views

    views = list(real_photo_views() + lfw_views() if views is None else views)
    if not views:
        raise SafeViewError("no real photos to measure false alarms on")
    unsafe = classifier.unsafe_probability(classifier.predict_proba([image for _, image in views]))
    flagged = [label for (label, _), p in zip(views, unsafe) if p > 0.5]
    photos = sorted({label.split("/")[0] for label, _ in views})
    return {
        REAL_FALSE_ALARM_KEY: len(flagged) / len(views),
        "real_false_alarm_images": len(views),
        "real_false_alarm_photos": photos,
        "real_false_alarms": flagged,
        "real_false_alarm_photos_flagged": sorted({label.split("/")[0] for label in flagged}),
        "real_max_unsafe_probability": float(np.max(unsafe)),
    }


def _origin(origin: Mapping[str, Any] | None) -> str:
    """`` (safeview synth, recipe train, seed 0, 256 px)`` for data ``synth_origin`` recognised."""
    if not origin:
        return ""
    return f" ({origin.get('generator')}, recipe {origin.get('recipe')}, seed {origin.get('seed')}, {origin.get('size')} px)"


def describe_model(metadata: Mapping[str, Any]) -> str:
    """One line on what a checkpoint is worth, from its metadata: the held-out test accuracy and on
    how many images, what it was trained on, and its false-alarm rate on real photos
    (:data:`REAL_FALSE_ALARM_KEY`) or "not measured", so that no model is listed as better than shown."""
    n = metadata.get("n_images") or {}
    accuracy = metadata.get("test_accuracy")
    parts = [
        f"held-out test accuracy {accuracy:.3f} on {n.get('test', '?')} images" if accuracy is not None else "no held-out test accuracy recorded",
        f"trained on {n.get('train', '?')} images from {metadata.get('trained_on') or 'an unrecorded source'}{_origin(metadata.get('data_origin'))}",
    ]
    rate = metadata.get(REAL_FALSE_ALARM_KEY)
    if rate is None:
        parts.append("false-alarm rate on real photos not measured")
    else:
        views, photos = metadata.get("real_false_alarm_images"), metadata.get("real_false_alarm_photos")
        counted = f"{views} views of {len(photos)} photos" if views and photos else f"{views} photos" if views else ""
        if photos and "real_false_alarm_photos_flagged" in metadata:
            counted += f"; {len(metadata['real_false_alarm_photos_flagged'])} photo(s) flagged"
        parts.append(f"false-alarm rate on real photos {100 * float(rate):.1f} %" + (f" ({counted})" if counted else ""))
    return "; ".join(parts)


def model_card(name: str, category: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """What a model is worth, for ``safeview models`` and the scan report: its name, category,
    :func:`describe_model`'s line (or, for a model trained elsewhere, where its weights come from)
    and the warnings recorded with it."""
    if "n_images" not in metadata and metadata.get("source"):
        summary = f"weights from {metadata['source']} ({metadata.get('licence', 'licence unrecorded')}); SafeView recorded no held-out accuracy or false-alarm rate for it"
    else:
        summary = describe_model(metadata)
    return {"name": name, "category": category, "summary": summary, "warnings": list(metadata.get("warnings") or [])}


def _plots(metrics: dict[str, Any], folder: Path) -> dict[str, str]:
    """ROC curve, reliability diagram and confusion matrix as PNGs (matplotlib's object API, so no
    global backend is touched)."""
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    files = {}

    fig = Figure(figsize=(4, 4), dpi=110, layout="tight")
    ax = fig.add_subplot()
    auc = metrics["roc_auc"]
    ax.plot(metrics["roc"]["fpr"], metrics["roc"]["tpr"], color="#c0392b", label=f"AUC {auc:.3f}" if auc is not None else "AUC n/a")
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1)
    ax.set(xlabel="false-positive rate", ylabel="true-positive rate (unsafe)", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    fig.savefig(folder / "roc.png")
    files["roc"] = "roc.png"

    fig = Figure(figsize=(4, 4), dpi=110, layout="tight")
    ax = fig.add_subplot()
    bins = [b for b in metrics["reliability"] if b["count"]]
    width = metrics["reliability"][0]["hi"] - metrics["reliability"][0]["lo"]
    ax.bar([b["lo"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge", color="#2e86c1", edgecolor="white", label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#1d2430", markersize=3, label="(mean confidence, accuracy)")
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1)
    ax.set(xlabel="confidence", ylabel="accuracy", title=f"Reliability (ECE {metrics['ece']:.3f})", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="upper left")
    fig.savefig(folder / "reliability.png")
    files["reliability"] = "reliability.png"

    matrix = np.asarray(metrics["confusion_matrix"])
    side = 2.2 + 0.7 * len(matrix)
    fig = Figure(figsize=(side, side), dpi=110, layout="tight")
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for (r, c), v in np.ndenumerate(matrix):
        ax.text(c, r, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "#1d2430")
    ticks = range(len(matrix))
    ax.set_xticks(ticks, metrics["labels"], rotation=30)
    ax.set_yticks(ticks, metrics["labels"])
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    fig.savefig(folder / "confusion.png")
    files["confusion"] = "confusion.png"
    return files


def _thumbnail(path: str, target: Path, *, reveal: bool) -> str | None:
    from PIL import Image

    from .errors import ImageError
    from .images import load_image
    from .obfuscate import obfuscate

    try:
        image = load_image(path)
    except ImageError:
        return None
    h, w = image.shape[:2]
    scale = min(1.0, THUMB / max(h, w))
    small = np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))
    if not reveal:
        small = obfuscate(small, np.ones(small.shape[:2], bool), "blur")
    Image.fromarray(small).save(target, quality=85)
    return target.name


def write_evaluation(report: dict[str, Any], out: str | Path, *, reveal: bool = False, max_errors: int = 24) -> Path:
    """Write ``report.json``, ``report.html`` and its plots and error thumbnails (blurred unless
    ``reveal``; at most ``max_errors`` per true class) into ``out``; returns the HTML path."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    plots = _plots(report["metrics"], out / "plots")
    thumbs = out / "errors"
    thumbs.mkdir(exist_ok=True)
    by_class: dict[str, list[dict[str, Any]]] = {}
    for n, error in enumerate(report["errors"]):
        shown = by_class.setdefault(error["true"], [])
        if len(shown) < max_errors:
            name = _thumbnail(error["path"], thumbs / f"{n:05d}.jpg", reveal=reveal)
            shown.append({**error, "thumbnail": f"errors/{name}" if name else None})
    env = Environment(loader=PackageLoader("safeview", "templates"), autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("evaluate.html.j2").render(
        report=report, m=report["metrics"], plots={k: f"plots/{v}" for k, v in plots.items()}, errors=by_class,
        error_counts={c: sum(e["true"] == c for e in report["errors"]) for c in by_class}, reveal=reveal,
    )
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
