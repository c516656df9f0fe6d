"""The ``safeview`` command (Typer + Rich). Torch and the models are imported inside the commands
that need them, so ``--help`` and ``--version`` stay fast."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import sys
import unicodedata
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from . import __version__
from .inputs import expand_inputs
from .service.config import DEFAULT_DB, DEFAULT_STORAGE

app = typer.Typer(
    help="SafeView: find the unsafe regions of an image, obfuscate only them, and explain why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"safeview {__version__}")
        raise typer.Exit()


VERBOSITY = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}


@app.callback()
def main(
    version: Optional[bool] = typer.Option(None, "--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More diagnostics on stderr (-v: each step, -vv: debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr: no progress, no summary (results still go to stdout)."),
) -> None:
    """SafeView command line."""
    from rich.logging import RichHandler

    level = VERBOSITY[-1] if quiet else VERBOSITY.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(name)s: %(message)s", handlers=[RichHandler(console=console, show_time=False, show_path=False)])
    console.quiet = quiet


def one_line(text: str) -> str:
    """``text`` (a path, or a message naming one) with its control characters written as escapes
    (a newline as ``\\n``, a terminal escape as ``\\x1b``), so that a hostile file name can neither
    split a result or error line in two nor drive the terminal."""
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) == "Cc" else c for c in text)


def plain(text: str) -> str:
    """``text`` as :func:`one_line`, with Rich markup escaped: a file named ``[bold]x.png`` prints
    as it is, and one whose path holds ``[/x]`` does not stop the run with a MarkupError."""
    return rich_escape(one_line(text))


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit non-zero (the error is printed even with --quiet)."""
    Console(stderr=True).print(f"[bold red]error:[/] {plain(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _rationale_options(backend: str, vlm: Optional[Path], guidance: Optional[float], url: Optional[str], model: Optional[str]) -> dict:
    """The scan flags that belong to the chosen rationale backend."""
    if backend == "instructblip":
        return {"vlm": str(vlm) if vlm else None, **({"guidance": guidance} if guidance is not None else {})}
    if backend == "openai":
        return {"base_url": url, "model": model}
    return {}


def _segmentation_params(segmentation: str, sam: Optional[Path], *, load: bool) -> dict:
    """The segmentation flags that belong to the chosen method: ``--sam PATH`` for SAM. With
    ``load`` the SAM checkpoint is loaded now (and cached), so a bad path is one error up front."""
    if segmentation != "sam":
        if sam is not None:
            fail(f"--sam is for --segmentation sam, not --segmentation {segmentation}")
        return {}
    if sam is None:
        fail("--segmentation sam needs --sam PATH, a local SAM checkpoint directory (SamModel and SamProcessor "
             "saved with save_pretrained, e.g. a copy of facebook/sam-vit-base); SafeView never downloads")
    from .errors import SafeViewError
    from .segment.sam import checkpoint_dir, load_sam

    try:
        load_sam(sam) if load else checkpoint_dir(sam)
    except SafeViewError as exc:
        fail(str(exc))
    return {"checkpoint": str(sam.expanduser())}


#: the choices of the shared options, spelled here so `--help` lists them without importing torch;
#: tests/test_cli.py checks each against the library's own tuple
Mode = Literal["hide", "paper", "minimal"]
Attribution = Literal["fullgrad", "fullgrad-ref", "gradcam", "gradcam++", "xgradcam", "ablationcam", "ablationcam-ref"]
Segmentation = Literal["slic", "felzenszwalb", "watershed", "bass", "sam"]
Style = Literal["blur", "pixelate", "fill", "mean"]
Fallback = Literal["full", "prefix", "none"]
Backend = Literal["evidence", "instructblip", "openai"]
ReportOriginals = Literal["none", "full"]
SynthRecipe = Literal["benchmark", "train", "train_faces", "train_petals"]

#: the options `scan` and `batch` share: each becomes a ScanConfig field (see _scan_config)
SCAN_OPTIONS: dict[str, tuple[Any, Any]] = {
    "config_file": (Optional[Path], typer.Option(None, "--config", help="TOML file of scan settings (ScanConfig's fields, e.g. mode = \"paper\"); options given on the command line win.")),
    "models": (str, typer.Option("default", help="Model set: 'default' (Open-NSFW), 'demo' (synthetic stand-ins), model names, checkpoint paths or a model-set .toml file, comma-separated.")),
    "device": (str, typer.Option("cpu", help="Where the models run: cpu, cuda, cuda:N or mps.")),
    "mode": (Mode, typer.Option("hide", help="CSE mode: hide (default: hide the content; margin, evidence completion, robust verification), paper (the paper's greedy prefix at the first flip), minimal (that prefix pruned to 1-minimal).")),
    "attribution": (Attribution, typer.Option("fullgrad", help="Attribution method: fullgrad (fast, default), fullgrad-ref (pytorch-grad-cam), gradcam, gradcam++, xgradcam, ablationcam (batched), ablationcam-ref (pytorch-grad-cam).")),
    "segmentation": (Segmentation, typer.Option("bass", help="Segmentation: bass (attribution-guided), slic, felzenszwalb, watershed, sam (needs --sam).")),
    "sam": (Optional[Path], typer.Option(None, "--sam", help="Local SAM checkpoint directory (transformers SamModel + SamProcessor), for --segmentation sam.")),
    "style": (Style, typer.Option("blur", help="Obfuscation style: blur, pixelate, fill, mean.")),
    "threshold": (float, typer.Option(0.5, help="Flip threshold: the safe class must exceed it.")),
    "margin": (float, typer.Option(0.3, help="Safety margin: an output counts as safe only when every model that flagged the image gives it an unsafe probability of at most 1 - threshold - margin, also on re-upload copies (JPEG, rescale, mirror, crops).")),
    "max_regions": (Optional[int], typer.Option(None, help="Search budget: most regions the search may obfuscate before completion (default: 16 in hide mode, the paper's 10 in paper and minimal modes); hide mode may go on for two more such budgets over the regions left, re-ranked by the attribution recomputed on what it hid, while less than 60 % of the image is hidden.")),
    "fallback": (Fallback, typer.Option("full", help="When no output can be verified safe: obfuscate the 'full' image, the 'prefix' the search chose, or 'none'; either way the output is labelled not verified.")),
    "attributes": (str, typer.Option("ocr,offensive", help="Attribute detectors run on flagged images, comma-separated (ocr, offensive; 'none' for none): they ground the rationale in what they saw and give verification a second opinion (readable offensive text fails an output). Needs the 'attributes' extra; a detector not installed is reported as not checked.")),
    "protect_faces": (bool, typer.Option(False, "--protect-faces", help="Protect the faces the built-in detector (scikit-image's LBP cascade) finds on flagged images: they stay bit-identical unless the content cannot be hidden otherwise, and the result lists them.")),
    "tiles": (bool, typer.Option(False, "--tiles", help="Also classify, search and verify every image in 9 overlapping tiles of half its short side (at most 16 on long images), so content filling a small part of it, such as one cell of a collage, is seen; costs up to 10× the forwards and raises false positives on models not trained on crops.")),
    "max_pixels": (int, typer.Option(40_000_000, help="Refuse images with more pixels than this (decompression-bomb guard).")),
    "max_aspect": (float, typer.Option(32.0, help="Refuse images more elongated than this: long side / short side.")),
    "max_decoded_mb": (int, typer.Option(256, help="Refuse images whose first frame decodes to more MiB than this (width × height × bytes per pixel); an animated image's sampled frames share the same budget.")),
    "working_side": (int, typer.Option(1024, help="Longest side CSE searches on: larger images are searched on a scaled copy and the mask mapped back to full resolution, where the output is obfuscated and verified (0: always full resolution).")),
    "rationale": (Backend, typer.Option("evidence", help="Rationale backend: evidence (no weights), instructblip (--vlm), openai (--vlm-url, --vlm-model).")),
    "vlm": (Optional[Path], typer.Option(None, help="Local ConditionalVLM (CIIT) checkpoint directory, for --rationale instructblip.")),
    "guidance": (Optional[float], typer.Option(None, help="CIIT guidance weight w (default 1; 0 is the paper's ablation), for --rationale instructblip.")),
    "vlm_url": (Optional[str], typer.Option(None, help="Base URL of an OpenAI-compatible VLM endpoint, for --rationale openai.")),
    "vlm_model": (Optional[str], typer.Option(None, help="Model name at --vlm-url.")),
}


def scan_options(command: Callable[..., None]) -> Callable[..., None]:
    """Give ``command`` the shared scan options and call it with ``config=ScanConfig`` built
    from them (and from ``--config FILE``) once, so `scan` and `batch` cannot drift apart."""
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.name != "config"]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
              for name, (kind, option) in SCAN_OPTIONS.items()]
    context = inspect.Parameter("scan_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)

    @functools.wraps(command)
    def run(**kwargs: Any) -> None:
        values = {name: kwargs.pop(name) for name in SCAN_OPTIONS}
        config = _scan_config(kwargs.pop("scan_context"), values)
        command(**kwargs, config=config)

    run.__signature__ = signature.replace(parameters=own + shared + [context])  # type: ignore[attr-defined]
    run.__annotations__ = {
        **{p.name: p.annotation for p in own}, **{n: k for n, (k, _) in SCAN_OPTIONS.items()}, "scan_context": typer.Context,
    }
    return run


def _scan_config(context: typer.Context, values: dict[str, Any]):
    """The ScanConfig of the shared options: the TOML file's settings, then every option given
    on the command line (or, without a file, every option); one-line error if it cannot run."""
    from .config import ConfigError, ScanConfig

    sources = {n: getattr(context.get_parameter_source(n), "name", "DEFAULT") for n in values}
    given = {n for n, source in sources.items() if source not in ("DEFAULT", "DEFAULT_MAP")}
    config_file = values.pop("config_file")
    chosen = {n: v for n, v in values.items() if config_file is None or n in given}
    settings = {k: v for k, v in chosen.items() if k not in ("sam", "vlm", "guidance", "vlm_url", "vlm_model")}
    if settings.get("working_side") == 0:
        settings["working_side"] = None
    if "attributes" in settings:
        settings["attributes"] = tuple(a.strip() for a in settings["attributes"].split(",") if a.strip() not in ("", "none"))
    segmentation = chosen.get("segmentation", values["segmentation"])
    if {"sam", "segmentation"} & chosen.keys():
        settings["segmentation_params"] = _segmentation_params(segmentation, values["sam"], load=False)
    if {"rationale", "vlm", "guidance", "vlm_url", "vlm_model"} & chosen.keys():
        settings["rationale_options"] = _rationale_options(
            chosen.get("rationale", values["rationale"]), values["vlm"], values["guidance"], values["vlm_url"], values["vlm_model"]
        )
    try:
        return ScanConfig.from_toml(config_file, **settings) if config_file else ScanConfig.build(**settings)
    except ConfigError as exc:
        fail(str(exc))


@app.command()
@scan_options
def scan(
    paths: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) or globs."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for results.jsonl, per-image JSON, obfuscated images and report.html."),
    batch_size: int = typer.Option(8, min=1, help="Images classified together in one forward per model."),
    workers: Optional[int] = typer.Option(None, min=1, help="Worker processes, each loading the models once (default: one per CPU core, at most one per 48 images and as many as free memory holds; 1: scan in this process)."),
    report_originals: Optional[ReportOriginals] = typer.Option(None, help="What report.html holds of the originals: none (default: blurred thumbnails, and a link to the input file) or full (unblurred full-resolution copies in out/assets/)."),
    protect: Optional[Path] = typer.Option(None, "--protect", help='JSON file of regions to keep visible, per image: {"photo.jpg": [{"box": [x0, y0, x1, y1], "label": "tattoo"}, {"polygon": [[x, y], ...]}, {"mask": "photo-mask.png"}]} (keys: paths as given, relative to the file, or file names).'),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON result (or error record) per line on stdout."),
    force: bool = typer.Option(False, "--force", help="Replace an earlier run in --out: remove the files it wrote (only those), then scan."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out: skip the images it already recorded."),
    *,
    config,
) -> None:
    """Scan images: classify, find and obfuscate the unsafe regions, verify, explain, report.

    Prints one line per image on stdout ("safe PATH", "unsafe verified PATH", "unsafe not-verified PATH" or "error PATH", tab-separated; with --json the result or error record itself); diagnostics and progress go to stderr. Every image, failed ones included, gets a record in OUT/results.jsonl.

    Exit code: 2 if any input or setting failed, else 1 if any image is unsafe, else 0.
    """
    from .outputs import ScanRun

    if force and resume:
        fail("--force replaces an earlier run and --resume continues it; give one of them")
    if report_originals is not None:
        config = _updated(config, report_originals=report_originals)
    regions = None
    if protect is not None:
        from .protect import ProtectError, ProtectFile

        try:
            regions = ProtectFile(protect.expanduser())
        except ProtectError as exc:
            fail(str(exc))
    files, errors = expand_inputs(paths, exclude=out.expanduser())
    if not files:
        for item, message in errors:
            console.print(f"[red]error:[/] {plain(f'{item}: {message}')}", highlight=False, soft_wrap=True)
        fail("no images to scan")
    if regions is not None and (unused := regions.unused(files)):
        console.print(f"[yellow]warning:[/] {plain(f'{protect}: no input matches ' + ', '.join(unused))}", highlight=False, soft_wrap=True)
    try:
        run = ScanRun(out.expanduser(), force=force, resume=resume)
    except ValueError as exc:
        fail(str(exc))
    checkpoint = config.segmentation_params.get("checkpoint")
    if config.segmentation == "sam":  # load the checkpoint now, so a bad one is one error before any image
        _segmentation_params("sam", Path(checkpoint) if checkpoint else None, load=True)
    from .config import ConfigError
    from .errors import SafeViewError
    from .pipeline import Safeguard

    try:
        guard = Safeguard(config=config)
    except (SafeViewError, ConfigError) as exc:
        fail(str(exc))
    from .evaluate import model_card

    models = [model_card(c.name, c.category, c.metadata) for c in guard.classifiers]

    def emit(record: dict, path: str) -> None:
        if json_out:
            sys.stdout.write(json.dumps(record) + "\n")
        elif "error" in record:
            console.print(f"[red]error:[/] {plain(record['error'])}", highlight=False, soft_wrap=True)
            sys.stdout.write(f"error\t{one_line(path)}\n")
        else:  # one verdict line per image on stdout, for grep and scripts; the rest goes to stderr
            status = "" if record["verdict"] == "safe" else f" {(record['output_status'] or 'not verified').replace(' ', '-')}"
            sys.stdout.write(f"{record['verdict']}{status}\t{one_line(path)}\n")
        sys.stdout.flush()

    with run:
        for item, message in errors:
            emit(run.record_error(item, f"{item}: {message}", "InputError"), item)
        todo = run.todo(files)
        if len(todo) < len(files):
            console.print(f"resuming: {len(files) - len(todo)} of {len(files)} images already recorded", highlight=False)
        groups = [todo[start : start + batch_size] for start in range(0, len(todo), batch_size)]
        try:
            with _image_progress(len(todo), disable=json_out) as advance:
                for path, outcome in _scan_outcomes(guard, config, groups, regions, workers):
                    if isinstance(outcome, dict):  # a worker's error record
                        emit(run.record_error(str(path), **outcome), str(path))
                    else:
                        emit(run.record(path, outcome, originals=config.report_originals), str(path))
                    advance(path)
        except KeyboardInterrupt:
            report = run.finish(models)
            fail(f"interrupted; {report} holds what was scanned; rerun with --resume to continue into {out}", 130)
        report = run.finish(models)
    counts = run.counts()
    console.print(
        f"{counts['scanned']} scanned, {counts['unsafe']} unsafe, {counts['failed']} failed. Report: {plain(str(report))}", highlight=False, soft_wrap=True
    )
    # exit codes, as virus scanners have them: 2 if anything failed, else 1 if anything is unsafe, else 0
    if counts["failed"]:
        raise typer.Exit(2)
    if counts["unsafe"]:
        raise typer.Exit(1)


def _scan_outcomes(guard, config, groups: list[list[Path]], regions, workers: int | None):
    """``(path, outcome)`` for every image of ``groups``, in order: each group classified together,
    in this process or in worker processes (:mod:`safeview.workers`; ``None``: as many as pay)."""
    from .workers import auto_workers, in_workers, scan_group

    def given(group: list[Path]) -> list | None:
        return [regions.specs_for(p) for p in group] if regions is not None else None

    workers = min(workers or auto_workers(sum(map(len, groups))), len(groups))
    if workers <= 1:
        for group in groups:
            yield from zip(group, guard.scan_iter([str(p) for p in group], protect=given(group)))
        return
    from concurrent.futures.process import BrokenProcessPool

    jobs = ((config, [str(p) for p in group], given(group)) for group in groups)
    try:
        for group, outcomes in zip(groups, in_workers(scan_group, jobs, workers)):
            yield from zip(group, outcomes)
    except BrokenProcessPool:
        fail("a worker process stopped (out of memory?); rerun with --workers 1 and --resume to continue")


@contextlib.contextmanager
def _image_progress(total: int, *, disable: bool = False):
    """A per-image progress bar on stderr (name of the image being scanned, count, rate, time
    left); yields ``advance(path)``, called once an image is done."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console, disable=disable or console.quiet or not console.is_terminal,
    ) as bar:
        task = bar.add_task("scanning", total=total)

        def advance(path: Path) -> None:
            bar.update(task, advance=1, description=f"scanned {plain(path.name[:40])}")

        yield advance


def _updated(config, **changes):
    from .config import ConfigError

    try:
        return config.updated(**changes)
    except ConfigError as exc:
        fail(str(exc))


@app.command("models")
def models_command(
    checkpoints: Optional[list[Path]] = typer.Argument(None, help="Checkpoint files to describe too (.safeview)."),
) -> None:
    """List the built-in models and model sets, each with what its metadata shows it is worth."""
    from .classify import BUILTIN_MODELS, MODEL_SETS, load_checkpoint, packaged_path, read_torch_file
    from .errors import ModelError
    from .evaluate import model_card

    def card(meta: dict) -> list[str]:
        found = model_card("", "", meta)
        return [found["summary"], *(f"warning: {w}" for w in found["warnings"])]

    typer.echo("Built-in models:")
    for name, target in BUILTIN_MODELS.items():
        typer.echo(f"  {name:24s} {target}")
        if ":" in target:
            lines = ["real model, weights from its package (see the README)"]
        else:
            lines = card(read_torch_file(packaged_path(target), missing="missing from the package; reinstall SafeView",
                                         unreadable="unreadable ({error}); reinstall SafeView")["metadata"])
        for line in lines:
            typer.echo(f"  {'':24s} {line}")
    typer.echo("Model sets (--models):")
    for name, members in MODEL_SETS.items():
        typer.echo(f"  {name:24s} {', '.join(members)}")
    for path in checkpoints or []:
        try:
            lines = card(load_checkpoint(path).metadata)
        except ModelError as exc:
            fail(str(exc))
        typer.echo(f"{path}:")
        for line in lines:
            typer.echo(f"  {line}")


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
    augment: Literal["dihedral", "flip", "none"] = typer.Option("dihedral", help="Augmentation: dihedral (flips and 90° turns), flip, none."),
    patience: Optional[int] = typer.Option(None, help="Stop early after this many epochs without a better validation accuracy."),
    seed: int = typer.Option(0, help="Seed of the split, initialisation and batches."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its saved state (same options)."),
    workers: int = typer.Option(2, help="Processes decoding images."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: cuda when present)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing checkpoint."),
) -> None:
    """Train a safe/unsafe classifier (stratified 80/10/10 split, best validation kept, temperature-calibrated)."""
    from .errors import SafeViewError
    from .data import parse_class_map
    from .train import TrainConfig, TrainingInterrupted, state_path, train_classifier

    if out.exists() and not force and not (resume and state_path(out).exists()):
        fail(f"{out}: already exists; pass --force to overwrite it")
    try:
        config = TrainConfig.build(
            category=category, class_map=parse_class_map(class_map or []), unsafe_classes=tuple(unsafe or ("unsafe",)),
            arch=arch, arch_kwargs={"width": width} if width else {}, init=init, epochs=epochs, image_size=image_size,
            batch_size=batch_size, lr=lr, weight_decay=weight_decay, augment=augment, patience=patience, seed=seed,
            workers=workers, device=device,
        )
    except SafeViewError as exc:
        fail(str(exc))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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
            clf = train_classifier(data, out=out, config=config, resume=resume, progress=report)
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
    if meta["warnings"]:
        count = len(meta["warnings"])
        console.print(f"[bold yellow]warning:[/] {count} warning{'s' * (count > 1)} above, also kept in the checkpoint's metadata",
                      highlight=False, soft_wrap=True)


@app.command()
def evaluate(
    model: str = typer.Argument(..., help="Checkpoint path or built-in model name."),
    data: Optional[Path] = typer.Argument(None, help="Image folder with one sub-folder per label, or a CSV/JSONL manifest of path,label."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for report.json, report.html and plots."),
    class_map: Optional[list[str]] = typer.Option(None, "--map", help="FOLDER=LABEL, repeatable: which folders (or manifest labels) are which model label."),
    part: str = typer.Option("all", help="Evaluate only the images the training split put in: train, val, test; or all."),
    split: Optional[Path] = typer.Option(None, help="Split file (default: the one next to the checkpoint)."),
    reveal: bool = typer.Option(False, "--reveal", help="Show error thumbnails unblurred."),
    workers: int = typer.Option(2, help="Processes decoding images."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON on stdout."),
    force: bool = typer.Option(False, "--force", help="Overwrite a report already in --out."),
    real_photos: bool = typer.Option(False, "--real-photos", help="Instead of DATA: the false-alarm rate on benign real photos the demo models never trained on (six views of each)."),
    record: bool = typer.Option(False, "--record", help="With --real-photos: keep the rate in the checkpoint's metadata (shown by 'safeview models')."),
) -> None:
    """Evaluate a classifier: accuracy, precision, recall, F1, ROC-AUC, confusion matrix, calibration (ECE), errors."""
    if real_photos:
        return _real_photo_false_alarms(model, record=record, json_out=json_out)
    if data is None or record:
        fail("give DATA to evaluate on (or --real-photos; --record goes with --real-photos)")
    if out is not None and (out / "report.json").exists() and not force:
        fail(f"{out}: already holds a report; pass --force to overwrite it or choose another --out")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from .classify import load_classifier
    from .errors import SafeViewError
    from .evaluate import evaluate_classifier, write_evaluation
    from .data import parse_class_map

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
    for warning in report["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if json_out:
        sys.stdout.write(json.dumps(report) + "\n")


def _real_photo_false_alarms(model: str, *, record: bool, json_out: bool) -> None:
    from .classify import load_classifier, update_checkpoint_metadata
    from .errors import SafeViewError
    from .evaluate import REAL_FALSE_ALARM_KEY, real_photo_false_alarms

    try:
        clf = load_classifier(model)
        found = real_photo_false_alarms(clf)
        if record:
            if "path" not in clf.metadata or Path(clf.metadata["path"]).suffix != ".safeview":
                raise SafeViewError(f"{model}: --record needs a .safeview checkpoint file")
            update_checkpoint_metadata(clf.metadata["path"], found)
    except (SafeViewError, ValueError) as exc:
        fail(str(exc))
    flagged = found["real_false_alarms"]
    console.print(
        f"{clf.name}: {len(flagged)} of {found['real_false_alarm_images']} views of {len(found['real_false_alarm_photos'])} real photos "
        f"called unsafe ({100 * found[REAL_FALSE_ALARM_KEY]:.1f} %; highest unsafe probability {found['real_max_unsafe_probability']:.3f})"
        + (f": {', '.join(flagged)}" if flagged else "") + ("; recorded in the checkpoint" if record else ""),
        highlight=False, soft_wrap=True,
    )
    if json_out:
        sys.stdout.write(json.dumps(found) + "\n")


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write the synthetic benchmark into."),
    n: int = typer.Option(3000, "--n", help="Number of images in total, split evenly across categories."),
    seed: int = typer.Option(0, help="Random seed; the same seed gives the same files."),
    size: int = typer.Option(256, help="Image side in pixels."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty folder."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Write only this category of the run (repeatable); ids and seeds stay those of the whole run."),
    recipe: SynthRecipe = typer.Option("benchmark", help="'benchmark' draws on photos the demo models never saw; 'train' on the others, with bare backgrounds and the other categories' objects as hard negatives; 'train_faces' also drawn faces; 'train_petals' also drawn flower heads."),
) -> None:
    """Generate the synthetic benchmark: benign photos with drawn unsafe stand-ins and exact masks."""
    from rich.progress import Progress

    from .synth import generate

    with Progress(console=console, disable=not console.is_terminal) as progress:
        task = progress.add_task("generating", total=n)
        try:
            manifest = generate(out, n=n, seed=seed, size=size, force=force, only=only, recipe=recipe, progress=lambda i, total: progress.update(task, completed=i))
        except (FileExistsError, ValueError) as exc:
            fail(str(exc))
    written = len(json.loads(manifest.read_text())["items"])
    console.print(f"wrote {written} images and {manifest}", highlight=False)


@app.command()
@scan_options
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, help="Port."),
    db: str = typer.Option(DEFAULT_DB, "--db", help="SQLAlchemy database URL (SQLite file by default; postgresql+psycopg://… works the same)."),
    storage: Path = typer.Option(DEFAULT_STORAGE, help="Folder for originals (read-only, content-addressed) and outputs."),
    workers: int = typer.Option(1, help="Scanning worker processes (each loads the models once)."),
    max_bytes: int = typer.Option(20 * 1024 * 1024, help="Largest upload in bytes, enforced while the body streams (chunked too)."),
    job_timeout: float = typer.Option(600.0, help="Seconds a job may run; then it fails with that reason (no retry)."),
    job_memory_mb: int = typer.Option(4096, help="MiB of address space a worker may use per job beyond its models (0: no limit); then the job fails."),
    shutdown_grace: float = typer.Option(30.0, help="Seconds workers get on SIGTERM/SIGINT to finish the job in hand before it is handed back."),
    rate_limit: int = typer.Option(600, help="Requests per minute allowed per API key."),
    max_attempts: int = typer.Option(3, help="Tries of a failing job before it is marked failed."),
    *,
    config,
) -> None:
    """Run the moderation service: REST API under /v1 (schema at /openapi.json; no Swagger UI, it would load from a CDN), review UI at /ui, and the worker processes.

    Scanning: the workers take the same settings as `safeview scan` (--models, --mode, --margin, --config FILE, …).

    Keys: `safeview keys create|list|revoke|rotate` (or /v1/keys as an admin); a revoked or expired key gets 401 on its next request. Submitters see only their own scans.

    Limits: uploads are checked from the header (bytes, pixels, aspect ratio, decoded size) before anything is stored; a job over --job-timeout or --job-memory-mb fails with the reason.

    Shutdown (SIGTERM or Ctrl-C): the server stops accepting requests, workers stop taking jobs and get --shutdown-grace seconds to finish the one in hand; any still running is then killed and its job handed back to the queue for the next start. No worker process outlives the server.
    """
    import uvicorn

    from .service.app import create_app
    from .service.config import ServiceConfig

    if workers < 0:
        fail("--workers must be 0 or more")
    try:
        config = ServiceConfig(
            db_url=db, storage=storage, models=config.models, scan=config, max_bytes=max_bytes, max_pixels=config.max_pixels, max_aspect=config.max_aspect,
            max_decoded_bytes=config.max_decoded_bytes, job_timeout_s=job_timeout, job_memory_mb=job_memory_mb,
            workers=workers, shutdown_grace_s=shutdown_grace, rate_limit=rate_limit, max_attempts=max_attempts,
        )
        application = create_app(config)
    except Exception as exc:  # noqa: BLE001 - a bad URL, an unreachable database, a bad limit: one line
        fail(f"cannot start the service: {exc}")
    console.print(f"SafeView service on http://{host}:{port}/ui, {workers} worker(s), database {db}", highlight=False, soft_wrap=True)
    uvicorn.run(application, host=host, port=port, log_level="warning", timeout_graceful_shutdown=max(1, int(shutdown_grace)))


keys_app = typer.Typer(help="Manage the service's API keys: create, list, revoke, rotate.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
KEYS_DB = typer.Option(DEFAULT_DB, "--db", help="Database URL of the service.")


def _key_sessions(db: str):
    """Engine and session factory of the service database ``db`` (exit 2 if it cannot be opened)."""
    from .service.db import open_database

    try:
        return open_database(db)
    except Exception as exc:  # noqa: BLE001
        fail(f"cannot open the database {db}: {exc}")


@keys_app.command("create")
def keys_create(
    role: str = typer.Option(..., help="submitter (submit and read its own scans), reviewer (all scans, originals, decisions) or admin (also audit log, deletions, keys)."),
    expires_days: Optional[float] = typer.Option(None, help="Days until the key stops working (default: until revoked)."),
    db: str = KEYS_DB,
) -> None:
    """Create an API key; it is printed once, on the last line, and only its hash is stored."""
    from .service.auth import create_key
    from .service.db import ROLES

    if role not in ROLES:
        fail(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
    if expires_days is not None and expires_days <= 0:
        fail("--expires-days must be positive")
    engine, sessions = _key_sessions(db)
    with sessions() as session:
        key = create_key(session, role, expires_days=expires_days)
    engine.dispose()
    console.print(f"created a {role} key; store it now, it cannot be shown again:", highlight=False)
    typer.echo(key)


@keys_app.command("list")
def keys_list(db: str = KEYS_DB) -> None:
    """List the keys (id, prefix, role, state, created, expires, revoked), one per line; never a secret."""
    from .service.auth import list_keys

    engine, sessions = _key_sessions(db)
    with sessions() as session:
        for row in list_keys(session):
            typer.echo(f"{row['id']}\t{row['prefix']}\t{row['role']}\t{row['state']}\t{row['created_at']}\t{row['expires_at'] or '-'}\t{row['revoked_at'] or '-'}")
    engine.dispose()


@keys_app.command("revoke")
def keys_revoke(key: str = typer.Argument(..., help="The key's id or prefix (see `safeview keys list`)."), db: str = KEYS_DB) -> None:
    """Revoke a key: its next request gets 401."""
    from .service.auth import revoke_key

    engine, sessions = _key_sessions(db)
    with sessions() as session:
        try:
            row = revoke_key(session, key)
        except LookupError as exc:
            fail(str(exc))
    engine.dispose()
    typer.echo(f"revoked key {row.id} ({row.prefix}, {row.role})")


@keys_app.command("rotate")
def keys_rotate(
    key: str = typer.Argument(..., help="The key's id or prefix (see `safeview keys list`)."),
    expires_days: Optional[float] = typer.Option(None, help="Days until the new key stops working (default: until revoked)."),
    db: str = KEYS_DB,
) -> None:
    """Replace a key by a new one of the same role and revoke the old one; the new key is printed once, on the last line."""
    from .service.auth import rotate_key

    engine, sessions = _key_sessions(db)
    with sessions() as session:
        try:
            old, new = rotate_key(session, key, expires_days=expires_days)
        except (LookupError, ValueError) as exc:
            fail(str(exc))
    engine.dispose()
    console.print(f"revoked key {old.id} ({old.prefix}); its {old.role} replacement, shown once:", highlight=False)
    typer.echo(new)


vlm_app = typer.Typer(help="ConditionalVLM rationales: build data, train CIIT (eq. 3), evaluate backends.", no_args_is_help=True)
app.add_typer(vlm_app, name="vlm")


def _vlm_classifiers(models: Optional[str]):
    from .classify import load_model_set
    from .errors import SafeViewError

    if not models:
        return None
    try:
        return load_model_set(models)
    except SafeViewError as exc:
        fail(str(exc))


@vlm_app.command("make-data")
def vlm_make_data(
    folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Image folder; a parent folder named after a category (sexual, cyberbullying, self_harm) sets the image's category."),
    out: Path = typer.Option(..., "--out", help="JSONL file to write (one record per image and question; fill in the 'answer' fields)."),
    models: Optional[str] = typer.Option(None, "--models", help="Model set to compute each image's control code with (else records carry none)."),
    prompts: Optional[Path] = typer.Option(None, "--prompts", exists=True, dir_okay=False, help="Prompt templates file (default: safeview/data/prompts.toml)."),
) -> None:
    """Build training/evaluation records from an image folder and the paper's question set."""
    import os

    from .rationale.evaluate import make_records, write_jsonl
    from .rationale.prompts import DEFAULT_PROMPTS, load_templates

    records = make_records(folder, templates=load_templates(prompts or DEFAULT_PROMPTS), classifiers=_vlm_classifiers(models))
    if not records:
        fail(f"{folder} holds no images")
    # image paths relative to the JSONL file, as training and evaluation read them
    write_jsonl([{**r, "image": os.path.relpath(folder / r["image"], out.resolve().parent)} for r in records], out)
    console.print(f"wrote {len(records)} records to {out}; write the answers before training", highlight=False)


@vlm_app.command("train")
def vlm_train(
    data: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL records (image, question, answer[, control, instruction])."),
    base: Path = typer.Option(..., "--base", exists=True, file_okay=False, help="Local InstructBLIP checkpoint directory (or a CIIT checkpoint to continue from)."),
    out: Path = typer.Option(..., "--out", help="Output directory (checkpoint-STEP folders and the final CIIT checkpoint)."),
    models: Optional[str] = typer.Option(None, "--models", help="Model set computing control codes for records without one."),
    epochs: int = typer.Option(2, help="Epochs (the paper: 2)."),
    batch_size: int = typer.Option(8, help="Batch size."),
    lr: float = typer.Option(5e-5, help="AdamW learning rate (the paper: 5e-5), cosine schedule."),
    warmup: float = typer.Option(0.1, help="Warm-up, as a fraction of the steps."),
    guidance: float = typer.Option(1.0, help="Guidance weight w of the control embedding during training."),
    prior: bool = typer.Option(True, help="Condition the instruction on the control code (the prior); --no-prior asks the bare question."),
    checkpoint_every: int = typer.Option(0, help="Save a checkpoint every N steps (0: each epoch)."),
    resume: bool = typer.Option(True, help="Continue from the latest checkpoint in --out."),
    device: str = typer.Option("cpu", help="torch device."),
    seed: int = typer.Option(0, help="Shuffling seed."),
) -> None:
    """Train the Q-Former and the control projection with eq. 3 (vision encoder and LLM frozen)."""
    from rich.progress import Progress

    from .errors import SafeViewError
    from .rationale.ciit import ConditionalBlip
    from .rationale.train import TrainConfig, prepare, read_records, train_ciit

    try:
        records = read_records(data)
        usable = [r for r in records if str(r["answer"]).strip()]
        if not usable:
            fail(f"{data}: no record has an answer yet")
        classifiers = _vlm_classifiers(models)
        prepared = prepare(usable, classifiers=classifiers, prior=prior)
        # the control code's categories: the model set's, else the checkpoint's (or the built-in three)
        ciit = ConditionalBlip.load(base, device=device, categories=[c.category for c in classifiers] if classifiers else None)
    except SafeViewError as exc:
        fail(str(exc))
    console.print(f"{len(usable)} records ({len(records) - len(usable)} without an answer skipped)", highlight=False)
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup, guidance=guidance, seed=seed, checkpoint_every=checkpoint_every)
    with Progress(console=console) as bar:
        task = bar.add_task("training", total=None)
        history = train_ciit(ciit, prepared, out, config=config, resume=resume,
                             progress=lambda step, total, loss: bar.update(task, completed=step, total=total, description=f"loss {loss:.4f}"))
    if history:
        console.print(f"done: {len(history)} steps, loss {history[0]:.4f} -> {history[-1]:.4f}; checkpoint {out}", highlight=False)


@vlm_app.command("eval")
def vlm_eval(
    source: Path = typer.Argument(..., exists=True, help="JSONL records (from make-data) or an image folder (category = parent folder name)."),
    out: Path = typer.Option(..., "--out", help="Folder for ratings.csv and ratings.html."),
    backend: str = typer.Option("instructblip", help="Backends to compare, comma-separated: instructblip, openai, evidence."),
    vlm: Optional[Path] = typer.Option(None, "--vlm", exists=True, file_okay=False, help="Local CIIT or InstructBLIP checkpoint (instructblip backend)."),
    guidance: str = typer.Option("1", help="Guidance weights to compare, e.g. '1,0' for the paper's ablation (instructblip)."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (openai backend)."),
    model: Optional[str] = typer.Option(None, help="Model name at the endpoint (openai backend)."),
    models: Optional[str] = typer.Option(None, "--models", help="Model set computing control codes for images without one."),
    judge_url: Optional[str] = typer.Option(None, help="OpenAI-compatible endpoint of a 0/1 LLM judge (optional)."),
    judge_model: Optional[str] = typer.Option(None, help="Model name of the LLM judge."),
    obfuscate: bool = typer.Option(True, help="Show images obfuscated in the rating sheet (--no-obfuscate to show them as they are)."),
    limit: int = typer.Option(0, help="Evaluate at most N images (0: all)."),
    device: str = typer.Option("cpu", help="torch device (instructblip)."),
) -> None:
    """Ask the generic and fine-grained questions per image and backend/guidance; write a rating sheet and the automatic score."""
    from .errors import SafeViewError
    from .images import load_image
    from .rationale import BACKENDS
    from .rationale.control import control_code
    from .rationale.evaluate import evaluate as run_eval
    from .rationale.evaluate import make_records, summarise, write_sheet
    from .rationale.train import read_records

    try:
        records = read_records(source) if source.is_file() else [
            {**r, "image": str(source / r["image"])} for r in make_records(source)
        ]
        classifiers = _vlm_classifiers(models)
        items: dict[str, dict] = {}
        for rec in records:
            if rec["image"] in items or (limit and len(items) >= limit):
                continue
            image = load_image(rec["image"])
            control = rec.get("control")
            if control is None:
                if not classifiers:
                    fail(f"{rec['image']}: no control code in the record; pass --models to compute it")
                control = control_code(classifiers, image).probabilities
            items[rec["image"]] = {"image": image, "name": rec["image"], "category": rec.get("category"), "control": control}
        settings = []
        for name in (b.strip() for b in backend.split(",") if b.strip()):
            if name not in BACKENDS:
                fail(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
            if name == "instructblip":
                if vlm is None:
                    fail("--vlm PATH is needed for the instructblip backend")
                settings += [{"backend": name, "vlm": str(vlm), "guidance": float(w), "device": device} for w in guidance.split(",")]
            elif name == "openai":
                if not base_url or not model:
                    fail("--base-url and --model are needed for the openai backend")
                settings.append({"backend": name, "base_url": base_url, "model": model})
            else:
                settings.append({"backend": name})
        if bool(judge_url) != bool(judge_model):
            fail("--judge-url and --judge-model go together")
        judge = {"base_url": judge_url, "model": judge_model} if judge_url else None
        rows = run_eval(list(items.values()), settings, judge=judge)
        csv_path, html_path = write_sheet(rows, list(items.values()), out, obfuscate=obfuscate)
    except (SafeViewError, ValueError) as exc:
        fail(str(exc))
    for score in ("attribute_match", "judge"):
        for (name, w, scope), rate in summarise(rows, score=score).items():
            typer.echo(f"{name}\tw={w or '-'}\t{scope}\t{score.replace('_', ' ')} {rate:.1%}")
    console.print(f"wrote {csv_path} and {html_path}", highlight=False)


@app.command()
@scan_options
def batch(
    inputs: list[str] = typer.Argument(..., help="Folders (recursive), globs, image files or manifests (.jsonl, .csv, .parquet with a 'path' column)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for results.parquet, obfuscated/<sha256>.png and summary.json; rerun into it to resume."),
    engine: Literal["local", "ray"] = typer.Option("local", help="local (worker processes on this machine) or ray (Ray Data)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Join this Ray cluster (e.g. ray://head:10001 or auto); default: start a local Ray runtime."),
    batch_size: int = typer.Option(16, min=1, help="Images per chunk (one Parquet part, one Ray batch)."),
    workers: Optional[int] = typer.Option(None, min=1, help="Worker processes or Ray actors (default: all CPU cores; locally, only as many as free memory holds at 1.5 GB each)."),
    only_unsafe: bool = typer.Option(False, "--only-unsafe", help="Keep the full result JSON for unsafe and failed images only."),
    *,
    config,
) -> None:
    """Scan many images (resumable; results keyed by sha256) into a Parquet table and a summary.

    Prints the summary as JSON on stdout; progress goes to stderr. Inputs that name no image are errors on stderr too. Exit code: 2 if any input or image failed, else 1 if any image is unsafe, else 0.
    """
    from .batch import RichProgress, run_batch
    from .errors import SafeViewError

    try:
        with RichProgress(console, disable=console.quiet or not console.is_terminal) as progress:
            summary = run_batch(
                inputs, out, config=config, engine=engine, ray_address=ray_address, batch_size=batch_size, workers=workers,
                only_unsafe=only_unsafe, progress=progress,
            )
    except (SafeViewError, ValueError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail(f"interrupted; what was written is kept: rerun the same command to resume into {out}", 130)
    typer.echo(json.dumps(summary, indent=2))
    for entry in summary["input_errors"]:  # an item that named no image is a failure too, as in `scan`
        console.print(f"[red]error:[/] {plain(entry['input'] + ': ' + entry['error'])}", highlight=False, soft_wrap=True)
    if summary["failed"] or summary["input_errors"]:
        raise typer.Exit(2)
    if summary["verdicts"].get("unsafe"):
        raise typer.Exit(1)


bench_app = typer.Typer(help="Benchmarks of a SafeView source checkout (bench/).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def source_root() -> Path:
    """The source checkout this package runs from (src/safeview/ -> the repository root); an
    installed wheel's is site-packages' parent, which holds no bench/."""
    return Path(__file__).resolve().parents[2]


@bench_app.command(
    "reproduce",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,  # --help goes to reproduce.py, which prints its own options
)
def bench_reproduce(ctx: typer.Context) -> None:
    """Regenerate the paper's CSE tables: runs bench/reproduce.py with the arguments unchanged (--help shows its options)."""
    import subprocess

    script = source_root() / "bench" / "reproduce.py"
    if not script.is_file():
        fail(f"{script}: not found; `safeview bench` needs a source checkout of SafeView (git clone, then pip install -e .)")
    try:
        code = subprocess.call([sys.executable, str(script), *ctx.args])
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(128 - code if code < 0 else code)  # killed by a signal: the shell's 128 + N


if __name__ == "__main__":
    app()
