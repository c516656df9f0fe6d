"""Batch scanning at platform scale: the paper's pipeline (Fig. 1, ``Safeguard.scan``) over a folder,
glob or manifest, on this machine (worker processes) or on a Ray cluster (Ray Data, an actor pool
that loads the models once per actor), with one result table either way.

Results are keyed by the sha256 of each file's bytes and appended as atomically written Parquet
parts under ``OUT/results/``, so an interrupted run loses nothing already written, a rerun skips
what is done, and a file present under several paths is scanned once and reported for every path.
Every run ends by compacting the parts into ``OUT/results.parquet`` (one row per path) and writing
``OUT/summary.json``; obfuscated outputs of unsafe images are ``OUT/obfuscated/<sha256>.safe.png`` when verified safe
and ``OUT/obfuscated/<sha256>.not-verified.png`` (the fallback) otherwise.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .errors import DETERMINISTIC_ERRORS, ImageError, SafeViewError, error_record

RESULTS_DIR = "results"
OBFUSCATED_DIR = "obfuscated"
TABLE = "results.parquet"
SUMMARY = "summary.json"
ENGINES = ("local", "ray")
#: fields a worker returns per scanned file (the driver turns them into table rows)
SCAN_FIELDS = ("sha256", "path", "result_json", "error", "error_type", "png", "png_name")
#: ``error_type`` of the entries of a worker whose models failed to load: the run stops with that error
SETUP_ERROR = "SetupError"


def _schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("path", pa.string()),
            ("sha256", pa.string()),
            ("size", pa.int64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("format", pa.string()),
            ("verdict", pa.string()),
            ("unsafe_categories", pa.list_(pa.string())),
            ("confidences", pa.map_(pa.string(), pa.float64())),
            ("cse_found", pa.bool_()),
            ("cse_regions", pa.int32()),
            ("obfuscated_fraction", pa.float64()),
            ("obfuscated_safe", pa.bool_()),
            ("mask_rle", pa.string()),
            ("rationale", pa.string()),
            ("obfuscated", pa.string()),
            ("error", pa.string()),
            ("error_type", pa.string()),
            ("duplicate", pa.bool_()),
            ("seconds", pa.float64()),
            ("timings", pa.map_(pa.string(), pa.float64())),
            ("safeview_version", pa.string()),
            ("models", pa.string()),
            ("result_json", pa.string()),
        ]
    )


def _scan_schema():
    import pyarrow as pa

    return pa.schema([(name, pa.binary() if name == "png" else pa.string()) for name in SCAN_FIELDS])


def _hash_file(path: str) -> tuple[str | None, int | None, str | None]:
    """(sha256, size, error) of a file, the error as one line instead of an exception."""
    from .inputs import hash_file, read_error

    try:
        return (*hash_file(path), None)
    except OSError as exc:
        return None, None, read_error(path, exc)


# -- scanning (runs in local worker processes and in Ray actors alike) ---------------------------


def _load_checked(path: str, sha256: str, limits: dict[str, Any]):
    """Decode ``path`` and check it still has the bytes the batch listed."""
    from .images import load_image_info

    loaded = load_image_info(path, **limits)
    if loaded.sha256 != sha256:
        raise ImageError(f"{path}: changed while the batch ran (its sha256 differs); run the batch again")
    return loaded


class _EntryStore:
    """A :class:`~safeview.outputs.Store` that keeps the obfuscated PNG in the scan entry, for
    the driver to write under ``OUT/obfuscated/`` (workers never write into the output folder)."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.entry = entry

    def locate(self, kind: str, name: str) -> str:
        return f"{OBFUSCATED_DIR}/{name}"

    def put(self, kind: str, name: str, data: bytes) -> None:
        self.entry["png"], self.entry["png_name"] = data, name


def _record(entry: dict[str, Any], result) -> None:
    """Fill ``entry`` from a ``ScanResult`` through :func:`~safeview.outputs.write_scan`: its JSON
    and, when unsafe, the lossless obfuscated PNG (``<sha256>.safe.png`` only when verified)."""
    from .outputs import write_scan

    written = write_scan(result, _EntryStore(entry), entry["sha256"], views=False, document=False)
    entry["result_json"] = written.model_dump_json()


def scan_chunk(guard, items: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Scan ``[(sha256, path), ...]`` with a configured ``Safeguard``: decode each file, classify
    them together (one batched forward per model, ``Safeguard.scan_many``), CSE on the unsafe ones.
    Returns one dict of :data:`SCAN_FIELDS` per item, in order; a bad file becomes an error entry."""
    entries: list[dict[str, Any]] = []
    loaded: list[Any] = []
    for sha256, path in items:
        entries.append({**dict.fromkeys(SCAN_FIELDS), "sha256": sha256, "path": path})
        try:
            loaded.append(_load_checked(path, sha256, guard.scan_config.image_limits))
        except Exception as exc:  # noqa: BLE001 - recorded in the entry
            entries[-1].update(error_record(path, exc))
            loaded.append(None)
    ok = [i for i, item in enumerate(loaded) if item is not None]
    for i, result in zip(ok, guard.scan_many([loaded[i] for i in ok])):
        try:
            if isinstance(result, Exception):
                raise result
            _record(entries[i], result)
        except Exception as exc:  # noqa: BLE001 - recorded in the entry
            entries[i].update(error_record(entries[i]["path"], exc))
    return entries


def _local_task(models, config, items) -> list[dict[str, Any]]:
    """Worker-process entry point: scan a chunk with this process's ``Safeguard`` (built once)."""
    from .workers import worker_guard

    return scan_chunk(worker_guard(models, config), items)


def _run_local(chunks: list, *, models, config, workers: int) -> Iterator[list[dict]]:
    """Chunks scanned by ``workers`` spawned processes (:func:`safeview.workers.in_workers`: each
    with ``cores // workers`` torch and numba threads, at most two chunks per worker in flight).
    ``workers=1`` scans in this process, with the caller's torch thread setting."""
    if workers == 1:
        from .pipeline import Safeguard

        guard = Safeguard(models, config)
        for chunk in chunks:
            yield scan_chunk(guard, chunk)
        return
    from .workers import in_workers

    yield from in_workers(_local_task, ((models, config, chunk) for chunk in chunks), workers)


class RayScanner:
    """Ray Data ``map_batches`` callable: one ``Safeguard`` per actor (models loaded once), one
    torch and numba thread per actor (Ray gives each actor one CPU)."""

    def __init__(self, models, config) -> None:
        from .pipeline import Safeguard
        from .threads import set_threads

        set_threads(1)
        self.setup_error: SafeViewError | None = None
        try:
            self.guard = Safeguard(models, config)
        except SafeViewError as exc:  # reported by the driver as one line, not as Ray's actor-death traceback
            self.setup_error = exc

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        items = list(zip(map(str, batch["sha256"]), map(str, batch["path"])))
        if self.setup_error is not None:
            failure = {"error": str(self.setup_error), "error_type": SETUP_ERROR}
            entries = [{**dict.fromkeys(SCAN_FIELDS), "sha256": sha, "path": path, **failure} for sha, path in items]
        else:
            entries = scan_chunk(self.guard, items)
        return pa.Table.from_pylist(entries, schema=_scan_schema())  # explicit types: None stays null


def _run_ray(
    chunks: list, *, models, config, workers: int, batch_size: int, ray_address: str | None
) -> Iterator[list[dict]]:
    """Chunks scanned on Ray: ``from_items`` -> ``map_batches(RayScanner)`` on an actor pool of
    ``workers`` actors (a GPU share each when the cluster has GPUs) -> batches streamed back."""
    import ray

    started = not ray.is_initialized()
    if started:
        if ray_address:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if gpus and config.device == "cpu":
            config = config.updated(device="cuda")
        items = [{"sha256": sha, "path": path} for chunk in chunks for sha, path in chunk]
        dataset = ray.data.from_items(items, override_num_blocks=max(1, len(chunks))).map_batches(
            RayScanner,
            fn_constructor_kwargs={"models": models, "config": config},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=1,
            num_gpus=min(1.0, gpus / workers) if gpus else 0,
        )
        batches = iter(dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
        try:
            for batch in batches:
                yield batch.to_pylist()
        finally:
            batches.close()  # stop Ray Data's iterator before any shutdown, not at garbage collection
    finally:
        if started:
            ray.shutdown()


# -- the table ----------------------------------------------------------------------------------


def result_row(path: str, size: int | None, entry: dict[str, Any], *, duplicate: bool, only_unsafe: bool) -> dict[str, Any]:
    """One table row from a scan entry (``result_json`` is the full :class:`ScanResult`)."""
    row: dict[str, Any] = dict.fromkeys(_schema().names)
    row.update(path=path, sha256=entry["sha256"], size=size, error=entry["error"], error_type=entry["error_type"], duplicate=duplicate)
    if entry["result_json"] is None:
        return row
    from .schema import ScanResult

    result = ScanResult.model_validate_json(entry["result_json"])
    cfs = result.counterfactuals
    row.update(
        width=result.input.width,
        height=result.input.height,
        format=result.input.format,
        verdict=result.verdict,
        unsafe_categories=[c.category for c in result.categories if c.unsafe],
        confidences=[(c.category, c.unsafe_probability) for c in result.categories],
        cse_found=all(cf.found for cf in cfs) if cfs else None,
        cse_regions=sum(cf.depth for cf in cfs) if cfs else None,
        obfuscated_fraction=result.obfuscated_fraction,
        obfuscated_safe=result.obfuscated_safe,
        mask_rle=result.mask.model_dump_json() if result.mask else None,
        rationale=result.rationale.text if result.rationale else None,
        obfuscated=result.outputs.get("obfuscated"),
        seconds=result.timings.get("total"),
        timings=list(result.timings.items()),
        safeview_version=result.versions.safeview,
        models=json.dumps(result.versions.models, sort_keys=True),
        result_json=None if only_unsafe and result.verdict == "safe" else entry["result_json"],
    )
    return row


def _write_atomic(target: Path, write: Callable[[Path], None]) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    write(tmp)
    os.replace(tmp, target)


class _Writer:
    """Appends rows as Parquet parts (tmp + rename) and obfuscated PNGs under ``out``."""

    def __init__(self, out: Path) -> None:
        self.parts = out / RESULTS_DIR
        self.obfuscated = out / OBFUSCATED_DIR
        self.parts.mkdir(parents=True, exist_ok=True)
        self.obfuscated.mkdir(parents=True, exist_ok=True)
        self.stamp = f"{time.time_ns():020d}-{os.getpid()}"
        self.count = 0

    def png(self, name: str, data: bytes) -> None:
        target = self.obfuscated / name
        if not target.exists():
            _write_atomic(target, lambda tmp: tmp.write_bytes(data))

    def rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=_schema())
        self.count += 1
        _write_atomic(self.parts / f"part-{self.stamp}-{self.count:06d}.parquet", lambda tmp: pq.write_table(table, tmp))


def read_parts(out: str | os.PathLike):
    """Every row ever written under ``out`` (all parts, oldest first), as a pyarrow Table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted((Path(out) / RESULTS_DIR).glob("part-*.parquet"))
    if not parts:
        return _schema().empty_table()
    return pa.concat_tables([pq.read_table(p, schema=_schema()) for p in parts])


def read_results(out: str | os.PathLike):
    """The result table: the latest row of every path, sorted by path."""
    import pyarrow as pa

    table = read_parts(out)
    if table.num_rows == 0:
        return table
    indexed = table.append_column("_row", pa.array(np.arange(table.num_rows)))
    latest = indexed.group_by("path").aggregate([("_row", "max")]).column("_row_max")
    return table.take(latest).sort_by("path")


def _is_done(row: dict[str, Any]) -> bool:
    return row["verdict"] is not None or row["error_type"] in DETERMINISTIC_ERRORS


# -- the batch ----------------------------------------------------------------------------------


def run_batch(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    engine: str = "local",
    ray_address: str | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    config: Any = None,
    models: Any = None,
    only_unsafe: bool = False,
    progress: Callable[[int, int], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Scan every image of ``inputs`` (folders, globs, files, JSONL/CSV/Parquet manifests) into
    ``out`` and return the summary (also written to ``out/summary.json``).

    ``engine`` is ``local`` (``workers`` spawned processes, default: all cores, as many as free memory
    holds, :func:`safeview.workers.fitting_workers`) or ``ray`` (Ray
    Data; ``ray_address`` joins an existing cluster, otherwise a local runtime with ``workers``
    CPUs starts and stops). ``batch_size`` images make one chunk, i.e. one Parquet part.
    ``config`` is the :class:`~safeview.config.ScanConfig` (without it, ``settings``, its fields as
    keyword arguments, build one); ``models`` a model-set spec (overriding the config's) or a list
    of classifiers (picklable). ``only_unsafe`` keeps the full ``result_json`` of unsafe
    and failed images only. ``progress(done, total)`` is called after each written chunk; an
    exception it raises stops the run, keeping everything written so far.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if not workers:
        from .workers import fitting_workers

        workers = fitting_workers() if engine == "local" else os.cpu_count() or 1
    workers = int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    from .config import ScanConfig

    if config is None:
        config = ScanConfig.build(**settings, **({"models": models} if isinstance(models, str) else {}))
    elif settings:
        raise ValueError(f"give either config or settings, not both (got {', '.join(sorted(settings))})")
    if isinstance(models, str):
        config, models = config.updated(models=models), None
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise SafeViewError(f"{out}: exists and is not a folder; choose another --out")

    start = time.perf_counter()
    from .inputs import list_inputs

    paths, input_errors = list_inputs(inputs, exclude=out)
    if not paths:
        detail = "; ".join(f"{item}: {message}" for item, message in input_errors) or "no inputs given"
        raise SafeViewError(f"no images to scan ({detail})")
    writer = _Writer(out)

    # what is already in the table: done sha256 -> a row to copy, and the (path, sha256) pairs
    done: dict[str, dict[str, Any]] = {}
    recorded: set[tuple[str, str]] = set()
    for row in read_results(out).to_pylist():
        if row["sha256"] and _is_done(row):
            done.setdefault(row["sha256"], row)
            recorded.add((row["path"], row["sha256"]))

    with ThreadPoolExecutor(max_workers=4) as hashers:
        hashes = list(hashers.map(_hash_file, paths))
    sizes = {sha: size for sha, size, _ in hashes if sha}
    unreadable = [
        result_row(path, None, {**dict.fromkeys(SCAN_FIELDS), "error": error, "error_type": "ReadError"}, duplicate=False, only_unsafe=only_unsafe)
        for path, (sha, _, error) in zip(paths, hashes)
        if error
    ]
    writer.rows(unreadable)

    paths_of: dict[str, list[str]] = {}
    for path, (sha, _, _) in zip(paths, hashes):
        if sha and (path, sha) not in recorded:
            paths_of.setdefault(sha, []).append(path)
    copies = []  # new paths of files scanned by an earlier run
    for sha in [s for s in paths_of if s in done]:
        for path in paths_of.pop(sha):
            copies.append({**done[sha], "path": path, "duplicate": True})
    writer.rows(copies)

    todo = [(sha, paths[0]) for sha, paths in paths_of.items()]
    chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    common = {"models": models, "config": config, "workers": min(workers, max(1, len(chunks)))}
    if engine == "local":
        stream: Iterable[list[dict]] = _run_local(chunks, **common) if chunks else []
    else:
        stream = _run_ray(chunks, batch_size=batch_size, ray_address=ray_address, **common) if chunks else []

    scanned = failed = 0
    scan_start = time.perf_counter()
    if progress:
        progress(0, len(todo))
    for entries in stream:
        setup = next((e for e in entries if e["error_type"] == SETUP_ERROR), None)
        if setup is not None:
            raise SafeViewError(setup["error"])
        rows = []
        for entry in entries:
            if entry["png"] is not None:
                writer.png(entry["png_name"], entry["png"])
            for index, path in enumerate(paths_of[entry["sha256"]]):
                rows.append(result_row(path, sizes[entry["sha256"]], entry, duplicate=index > 0, only_unsafe=only_unsafe))
            failed += entry["error"] is not None
        writer.rows(rows)
        scanned += len(entries)
        if progress:
            progress(scanned, len(todo))
    scan_seconds = time.perf_counter() - scan_start

    import pyarrow.parquet as pq

    table = read_results(out)
    _write_atomic(out / TABLE, lambda tmp: pq.write_table(table, tmp))
    summary = _summary(table, out)
    summary.update(
        engine=engine,
        workers=common["workers"],
        inputs=len(paths),
        unique=len(set(sizes)),
        scanned=scanned,
        skipped=sum(1 for path, (sha, _, _) in zip(paths, hashes) if (path, sha) in recorded),
        reused=len(copies),
        failed_this_run=failed + len(unreadable),
        input_errors=[{"input": item, "error": message} for item, message in input_errors],
        seconds=round(time.perf_counter() - start, 3),
        images_per_s=round(scanned / scan_seconds, 3) if scanned and scan_seconds > 0 else None,
    )
    _write_atomic(out / SUMMARY, lambda tmp: tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8"))
    return summary


def _summary(table, out: Path) -> dict[str, Any]:
    """Counts over the whole result table: per verdict, per unsafe category, and the failures."""
    verdicts: dict[str, int] = {}
    categories: dict[str, int] = {}
    failures = []
    for row in table.select(["path", "verdict", "unsafe_categories", "error"]).to_pylist():
        if row["error"] is not None:
            failures.append({"path": row["path"], "error": row["error"]})
            continue
        verdicts[row["verdict"]] = verdicts.get(row["verdict"], 0) + 1
        for category in row["unsafe_categories"] or []:
            categories[category] = categories.get(category, 0) + 1
    return {
        "rows": table.num_rows,
        "verdicts": dict(sorted(verdicts.items())),
        "unsafe_categories": dict(sorted(categories.items())),
        "failed": len(failures),
        "failures": failures[:100],
        "table": str(out / TABLE),
        "obfuscated": str(out / OBFUSCATED_DIR),
    }


class RichProgress:
    """A Rich progress bar with images/s and ETA, usable as ``run_batch(progress=...)``."""

    def __init__(self, console=None, *, disable: bool = False) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("scanning"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=disable,
        )
        self.task = None
        self.start = 0.0

    def __enter__(self) -> "RichProgress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def __call__(self, done: int, total: int) -> None:
        if self.task is None:
            self.task, self.start = self.bar.add_task("scanning", total=total, rate=""), time.perf_counter()
        elapsed = time.perf_counter() - self.start
        rate = f"{done / elapsed:.2f} img/s" if done and elapsed > 0 else ""
        self.bar.update(self.task, completed=done, total=total, rate=rate)
