"""The ``safeview`` command (Typer + Rich). Torch and the models are imported inside the commands
that need them, so ``--help`` and ``--version`` stay fast."""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from . import __version__

app = typer.Typer(
    help="SafeView: find the unsafe regions of an image, obfuscate only them, and explain why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"safeview {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """SafeView command line."""


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit non-zero."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def expand_inputs(items: list[str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (recursive, image suffixes only) and globs -> (files, [(item, error)])."""
    from .images import IMAGE_SUFFIXES

    files: list[Path] = []
    errors: list[tuple[str, str]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append((item, "folder holds no image files (looked for " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                errors.append((item, "no such file, folder or matching glob"))
            files.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique, errors


@app.command()
def scan(
    paths: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) or globs."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for results, obfuscated images and report.html."),
    models: str = typer.Option("default", help="Model set: 'default' (Open-NSFW), 'demo' (synthetic stand-ins), model names, checkpoint paths or a model-set .toml file, comma-separated."),
    attribution: str = typer.Option("fullgrad", help="Attribution method: fullgrad (fast, default), fullgrad-ref (pytorch-grad-cam), gradcam, gradcam++, xgradcam, ablationcam."),
    segmentation: str = typer.Option("slic", help="Segmentation: slic, felzenszwalb, watershed, bass."),
    style: str = typer.Option("blur", help="Obfuscation style: blur, pixelate, fill, mean."),
    threshold: float = typer.Option(0.5, help="Flip threshold: the search stops when the safe class exceeds it."),
    max_regions: int = typer.Option(10, help="Search budget: most regions the counterfactual may obfuscate."),
    fallback: str = typer.Option("full", help="When no counterfactual is found: obfuscate 'full' image, the 'prefix' tried, or 'none'."),
    max_pixels: int = typer.Option(40_000_000, help="Refuse images with more pixels than this (decompression-bomb guard)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON result per line on stdout."),
    force: bool = typer.Option(False, "--force", help="Overwrite results already in --out."),
) -> None:
    """Scan images: classify, find and obfuscate the minimal unsafe regions, explain, report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    files, errors = expand_inputs(paths)
    for item, message in errors:
        console.print(f"[red]error:[/] {item}: {message}", highlight=False, soft_wrap=True)
    out = out.expanduser()
    if out.exists() and not out.is_dir():
        fail(f"{out}: exists and is not a folder; choose another --out")
    if out.exists() and any((out / n).exists() for n in ("results.jsonl", "report.html")) and not force:
        fail(f"{out}: already holds results; pass --force to overwrite them or choose another --out")
    if not files:
        fail("no images to scan", 1 if errors else 2)

    from .errors import SafeViewError
    from .images import load_image_info
    from .pipeline import Safeguard
    from .report import write_assets, write_report

    try:
        guard = Safeguard(
            models, attribution=attribution, segmentation=segmentation, style=style,
            threshold=threshold, max_regions=max_regions, fallback=fallback,
        )
    except (SafeViewError, ValueError) as exc:
        fail(str(exc))

    out.mkdir(parents=True, exist_ok=True)
    inputs = set(files)
    entries: list[dict] = []
    failed = 0
    with open(out / "results.jsonl", "w", encoding="utf-8") as jsonl, Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=console, disable=json_out or not console.is_terminal,
    ) as progress:
        task = progress.add_task("scanning", total=len(files))
        for path in files:
            progress.update(task, description=f"scanning {path.name[:40]}")
            try:
                loaded = load_image_info(path, max_pixels=max_pixels)
                result = guard.scan(loaded)
                key = f"{path.stem}-{loaded.sha256[:8]}"
                targets = {"json": out / f"{key}.json"}
                if result.artifacts.obfuscated is not None:
                    targets["obfuscated"] = out / f"{key}.safe.png"
                clash = [str(t) for t in targets.values() if t.resolve() in inputs]
                if clash:
                    raise SafeViewError(f"output {clash[0]} would overwrite an input; choose another --out")
                if "obfuscated" in targets:
                    from PIL import Image

                    Image.fromarray(result.artifacts.obfuscated).save(targets["obfuscated"])  # PNG: lossless
                result.outputs = {k: str(v) for k, v in targets.items()}
                assets = write_assets(result, out / "assets", key)
                text = result.model_dump_json()
                targets["json"].write_text(json.dumps(json.loads(text), indent=2) + "\n", encoding="utf-8")
                jsonl.write(text + "\n")
                entries.append({"result": json.loads(text), "assets": assets})
                if json_out:
                    sys.stdout.write(text + "\n")
                elif not console.is_terminal:
                    console.print(f"{result.verdict:6s} {path}", highlight=False, soft_wrap=True)
            except SafeViewError as exc:
                failed += 1
                entries.append({"path": str(path), "error": str(exc)})
                console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            progress.advance(task)
    for item, message in errors:
        entries.append({"path": item, "error": message})
    report = write_report(entries, out / "report.html")
    n_unsafe = sum(1 for e in entries if "result" in e and e["result"]["verdict"] == "unsafe")
    total_failed = failed + len(errors)
    console.print(
        f"{len(files) - failed} scanned, {n_unsafe} unsafe, {total_failed} failed. Report: {report}", highlight=False, soft_wrap=True
    )
    if total_failed:
        raise typer.Exit(1)


@app.command("models")
def models_command() -> None:
    """List the built-in models and model sets."""
    from .classify import BUILTIN_MODELS, MODEL_SETS

    typer.echo("Built-in models:")
    for name, target in BUILTIN_MODELS.items():
        typer.echo(f"  {name:24s} {target}")
    typer.echo("Model sets (--models):")
    for name, members in MODEL_SETS.items():
        typer.echo(f"  {name:24s} {', '.join(members)}")


@app.command()
def train(
    data: Path = typer.Argument(..., help="Image folder with one sub-folder per class (safe/, unsafe/), or a CSV/JSONL manifest of path,label."),
    category: str = typer.Option(..., help="Category the model detects (sexual, cyberbullying, self_harm, …)."),
    out: Path = typer.Option(..., "--out", "-o", help="Checkpoint file to write (.safeview); the split goes next to it (.split.json)."),
    class_map: Optional[list[str]] = typer.Option(None, "--map", help="FOLDER=CLASS, repeatable: which folders (or manifest labels) form which class, e.g. --map neutral=safe --map porn=unsafe."),
    unsafe: Optional[list[str]] = typer.Option(None, "--unsafe", help="Unsafe class, repeatable (default: unsafe)."),
    arch: str = typer.Option("small", help="Architecture: small, resnet18, resnet34, resnet50, mobilenet_v3_small."),
    width: Optional[int] = typer.Option(None, help="Width of the 'small' architecture."),
    init: Optional[Path] = typer.Option(None, help="Local weights to start from (e.g. torchvision's resnet50 .pth); without it, training starts from scratch."),
    epochs: int = typer.Option(12, help="Training epochs; the best validation epoch is kept (the paper: 50)."),
    image_size: int = typer.Option(128, help="Input side in pixels (the paper: 224)."),
    batch_size: int = typer.Option(64, help="Batch size."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (AdamW, one-cycle cosine schedule)."),
    weight_decay: float = typer.Option(1e-4, help="AdamW weight decay."),
    augment: str = typer.Option("dihedral", help="Augmentation: dihedral (flips and 90° turns), flip, none."),
    patience: Optional[int] = typer.Option(None, help="Stop early after this many epochs without a better validation accuracy."),
    seed: int = typer.Option(0, help="Seed of the split, initialisation and batches."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its saved state (same options)."),
    workers: int = typer.Option(2, help="Processes decoding images."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda when present)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing checkpoint."),
) -> None:
    """Train a safe/unsafe classifier (stratified 80/10/10 split, best validation kept, temperature-calibrated)."""
    from .train import TrainingInterrupted, parse_class_map, state_path, train_classifier

    if out.exists() and not force and not (resume and state_path(out).exists()):
        fail(f"{out}: already exists; pass --force to overwrite it")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .errors import SafeViewError

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"), TimeRemainingColumn(),
        console=console, disable=not console.is_terminal,
    ) as bar:
        task = None

        def report(event) -> None:
            nonlocal task
            if event.kind == "step":
                if task is None:
                    task = bar.add_task("training", total=event.epochs * event.steps, stats="")
                bar.update(
                    task, completed=(event.epoch - 1) * event.steps + event.step,
                    description=f"epoch {event.epoch}/{event.epochs}", stats=f"loss {event.loss:.4f} acc {event.accuracy:.3f}",
                )
            else:
                bar.console.print(str(event), highlight=False, soft_wrap=True)

        try:
            clf = train_classifier(
                data, category=category, out=out, class_map=parse_class_map(class_map or []), unsafe_classes=unsafe or ("unsafe",),
                arch=arch, arch_kwargs={"width": width} if width else None, init=init, epochs=epochs, image_size=image_size,
                batch_size=batch_size, lr=lr, weight_decay=weight_decay, augment=augment, patience=patience, seed=seed,
                resume=resume, workers=workers, device=device, progress=report,
            )
        except TrainingInterrupted as exc:
            bar.stop()
            console.print(f"[yellow]{exc}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(130)
        except (SafeViewError, ValueError) as exc:
            bar.stop()
            fail(str(exc))
    meta = clf.metadata
    test = f"test accuracy {meta['test_accuracy']:.3f}, " if meta["test_accuracy"] is not None else ""
    console.print(
        f"saved {out}: val accuracy {meta['val_accuracy']:.3f}, {test}temperature {meta['temperature']:.2f}, "
        f"{len(meta['skipped'])} images skipped; split in {meta['split_file']}",
        highlight=False, soft_wrap=True,
    )


@app.command()
def evaluate(
    model: str = typer.Argument(..., help="Checkpoint path or built-in model name."),
    data: Path = typer.Argument(..., help="Image folder with one sub-folder per label, or a CSV/JSONL manifest of path,label."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for report.json, report.html and plots."),
    class_map: Optional[list[str]] = typer.Option(None, "--map", help="FOLDER=LABEL, repeatable: which folders (or manifest labels) are which model label."),
    part: str = typer.Option("all", help="Evaluate only the images the training split put in: train, val, test; or all."),
    split: Optional[Path] = typer.Option(None, help="Split file (default: the one next to the checkpoint)."),
    reveal: bool = typer.Option(False, "--reveal", help="Show error thumbnails unblurred."),
    workers: int = typer.Option(2, help="Processes decoding images."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    force: bool = typer.Option(False, "--force", help="Overwrite a report already in --out."),
) -> None:
    """Evaluate a classifier: accuracy, precision, recall, F1, ROC-AUC, confusion matrix, calibration (ECE), errors."""
    if out is not None and (out / "report.json").exists() and not force:
        fail(f"{out}: already holds a report; pass --force to overwrite it or choose another --out")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from .classify import load_classifier
    from .errors import SafeViewError
    from .evaluate import evaluate_classifier, write_evaluation
    from .train import parse_class_map

    try:
        clf = load_classifier(model)
        with Progress(BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console, disable=not console.is_terminal) as bar:
            task = bar.add_task("evaluating")
            report = evaluate_classifier(
                clf, data, class_map=parse_class_map(class_map or []), part=part, split=split, workers=workers,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
        page = write_evaluation(report, out, reveal=reveal) if out is not None else None
    except (SafeViewError, ValueError) as exc:
        fail(str(exc))
    for line in report["skipped"]:
        console.print(f"[red]skipped:[/] {line}", highlight=False, soft_wrap=True)
    m = report["metrics"]
    shown = ", ".join(f"{name} {'n/a' if m[key] is None else format(m[key], '.3f')}" for name, key in (
        ("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("F1", "f1"), ("ROC-AUC", "roc_auc"), ("ECE", "ece"),
    ))
    console.print(
        f"{report['n_images']} images: {shown}" + (f". Report: {page}" if page else ""),
        highlight=False, soft_wrap=True,
    )
    if json_out:
        sys.stdout.write(json.dumps(report) + "\n")


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write the synthetic benchmark into."),
    n: int = typer.Option(3000, "--n", help="Number of images in total, split evenly across categories."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same files."),
    size: int = typer.Option(256, help="Image side in pixels."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder."),
) -> None:
    """Generate the synthetic benchmark: benign photos with drawn unsafe stand-ins and exact masks."""
    from rich.progress import Progress

    from .synth import generate

    with Progress(console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("generating", total=n)
        try:
            manifest = generate(out, n=n, seed=seed, size=size, force=force, progress=lambda i, total: progress.update(task, completed=i))
        except (FileExistsError, ValueError) as exc:
            fail(str(exc))
    console.print(f"wrote {n} images and {manifest}", highlight=False)


if __name__ == "__main__":
    app()
