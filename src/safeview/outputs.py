"""One way out for a scan: :func:`write_scan` encodes what a result's arrays must leave behind —
the obfuscated output (lossless PNG, named ``.safe.png`` only when verified), the reviewer's views
(:func:`safeview.report.render_views`) and the result's JSON — and hands the bytes to a
:class:`Store`: a folder (``safeview scan``), the Parquet batch, or the service's storage. The
result is returned with ``outputs`` filled in; the pipeline's result is never edited.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np

from .errors import SafeViewError
from .report import render_views, report_assets, thumbnail, write_report
from .schema import ErrorRecord, ScanResult


class Store(Protocol):
    """Where ``write_scan`` puts a file of a given ``kind`` (``obfuscated``, ``view.blurred``,
    ``view.heatmap-0``, …, ``json``) and suggested file ``name``: ``locate`` says where it will be
    (what ``outputs`` records) and ``put`` stores its bytes. A folder keeps the names; the service
    files them by kind."""

    def locate(self, kind: str, name: str) -> str: ...

    def put(self, kind: str, name: str, data: bytes) -> None: ...


def encode(array: np.ndarray, fmt: str) -> bytes:
    """An image array as PNG (lossless) or JPEG (quality 88, for thumbnails) bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 88} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def write_scan(
    result: ScanResult, store: Store, key: str, *, views: bool = True, originals: str = "none", document: bool = True
) -> ScanResult:
    """Store the files of one scanned image under names starting with ``key`` and return the
    result with ``outputs`` (kind -> location) filled in: ``obfuscated`` (``KEY.safe.png`` or
    ``KEY.not-verified.png``), with ``views`` the reviewer's images as ``view.*`` (the original
    only with ``originals="full"``), and with ``document`` the result's own JSON (``json``)."""
    art = result.artifacts
    files: dict[str, tuple[str, bytes]] = {}
    if art is not None and art.obfuscated is not None:
        files["obfuscated"] = (f"{key}.{result.output_suffix}", encode(art.obfuscated, "PNG"))
    if views:
        for view, array in render_views(result, originals=originals).items():
            if view == "original":  # full resolution, lossless: the reviewer asked for the original itself
                files["view.original"] = (f"assets/{key}.original.png", encode(array, "PNG"))
            else:
                files[f"view.{view}"] = (f"assets/{key}.{view}.jpg", encode(thumbnail(array), "JPEG"))
    if document:
        files["json"] = (f"{key}.json", b"")
    outputs = {kind: store.locate(kind, name) for kind, (name, _) in files.items()}
    written = result.model_copy(update={"outputs": {**result.outputs, **outputs}})
    if document:
        files["json"] = (files["json"][0], (written.model_dump_json(indent=2) + "\n").encode("utf-8"))
    for kind, (name, data) in files.items():
        store.put(kind, name, data)
    return written


class FolderStore:
    """A :class:`Store` on a folder: files are written atomically (temporary file, then rename),
    never over one of ``inputs``, and every location written is kept in ``written``."""

    def __init__(self, folder: Path, inputs: Iterable[Path] = ()) -> None:
        self.folder = folder
        self.inputs = {Path(p).resolve() for p in inputs}
        self.written: list[str] = []

    def locate(self, kind: str, name: str) -> str:
        return str(self.folder / name)

    def put(self, kind: str, name: str, data: bytes) -> None:
        target = self.folder / name
        if target.resolve() in self.inputs:
            raise SafeViewError(f"output {target} would overwrite an input; choose another --out")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        self.written.append(str(target))


RESULTS = "results.jsonl"
REPORT = "report.html"
#: the names a scan gives its files: ``<stem>-<sha8>``, ``-2``, ``-3``, … after it for a repeated key
#: (:meth:`ScanRun._key`), then each kind's ending (:func:`write_scan`)
_KEY = r".+-[0-9a-f]{8}(?:-[0-9]+)?"
_OUTPUT_NAMES = {"json": re.compile(_KEY + r"\.json"), "obfuscated": re.compile(_KEY + r"\.(?:safe|not-verified)\.png")}


def _is_output(root: Path, kind: str, target: Path) -> bool:
    """Whether ``target`` is where, and named as, a scan into ``root`` writes an output of ``kind``."""
    if root not in target.parents:
        return False
    parts = target.relative_to(root).parts
    if kind.startswith("view."):
        view = kind.removeprefix("view.")
        return parts[:-1] == ("assets",) and re.fullmatch(_KEY + r"\." + re.escape(view) + r"\.(?:png|jpg)", parts[-1]) is not None
    name = _OUTPUT_NAMES.get(kind)
    return name is not None and len(parts) == 1 and name.fullmatch(parts[0]) is not None


class ScanRun:
    """One ``safeview scan`` into a folder, kept consistent whatever happens: every image, failed
    ones included, gets a record appended (and flushed) to ``results.jsonl`` as soon as its files
    are written, so the file is also the list of what the run wrote. ``force`` removes what an
    earlier run recorded (its own files only); ``resume`` keeps it and skips the images it already
    scanned; ``finish`` writes ``report.html`` from every record, interrupted runs included."""

    def __init__(self, out: Path, *, force: bool = False, resume: bool = False) -> None:
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: exists and is not a folder; choose another --out")
        self.out = out
        self.results = out / RESULTS
        earlier = self.results.exists() or (out / REPORT).exists()
        if earlier and not (force or resume):
            raise ValueError(f"{out}: already holds results; pass --resume to continue that run, --force to replace it, or choose another --out")
        self.records = read_records(self.results) if earlier else []
        if force and earlier:
            self._remove_earlier()
        self.inputs: set[Path] = set()
        self._store: FolderStore | None = None  # one per run: it resolves the inputs once, not per image
        self._keys: dict[str, str] = {}  # file-name key -> the input path whose files it names
        self._handle: io.TextIOWrapper | None = None

    def _remove_earlier(self) -> None:
        """Delete the files the earlier run's records name, where and as a run writes them (``out/KEY.json``,
        ``out/KEY.safe.png`` or ``.not-verified.png``, ``out/assets/KEY.*.png|jpg``), then its results
        and report; anything else in the folder is left alone, so a hand-edited or hostile
        ``results.jsonl`` that names an original cannot have ``--force`` delete it."""
        root = self.out.resolve()
        for record in self.records:
            for kind, location in record.get("outputs", {}).items():
                target = Path(str(location)).resolve()
                if _is_output(root, str(kind), target) and target.is_file():
                    target.unlink()
        for name in (RESULTS, REPORT):
            (self.out / name).unlink(missing_ok=True)
        assets = self.out / "assets"
        if assets.is_dir() and not any(assets.iterdir()):
            assets.rmdir()
        self.records = []

    def __enter__(self) -> "ScanRun":
        self.out.mkdir(parents=True, exist_ok=True)
        partial = self.results.exists() and self.results.stat().st_size and not self.results.read_bytes().endswith(b"\n")
        self._handle = open(self.results, "a", encoding="utf-8")
        if partial:  # a line cut off by a hard kill: end it, so the next record starts on its own line
            self._handle.write("\n")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()

    def todo(self, files: list[Path]) -> list[Path]:
        """``files`` less those an earlier run already scanned with the same bytes (``resume``)."""
        from .inputs import file_sha256

        self.inputs = {p.resolve() for p in files}
        self._store = None
        self._keys = {Path(r["outputs"]["json"]).name.removesuffix(".json"): r["input"]["path"]
                      for r in self.records if "json" in r.get("outputs", {})}
        done = {(r["input"]["path"], r["input"]["sha256"]) for r in self.records if "verdict" in r}
        done_paths = {path for path, _ in done}
        return [p for p in files if str(p) not in done_paths or (str(p), _sha_or_none(file_sha256, p)) not in done]

    def _append(self, record: dict) -> dict:
        assert self._handle is not None, "use ScanRun as a context manager"
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        self.records.append(record)
        return record

    def record_error(self, path: str, error: str, error_type: str) -> dict:
        """Append the :class:`~safeview.schema.ErrorRecord` of an input that failed."""
        return self._append(ErrorRecord(path=path, error=error, error_type=error_type).model_dump())

    def record(self, path: Path, outcome: "ScanResult | BaseException", *, originals: str = "none") -> dict:
        """Write the files of one outcome (:func:`write_scan`) and append its record; a failure,
        in the scan or in writing, becomes an error record instead."""
        from .errors import error_record

        try:
            if isinstance(outcome, BaseException):
                raise outcome
            if self._store is None:
                self._store = FolderStore(self.out, self.inputs)
            written = write_scan(outcome, self._store, self._key(path, outcome.input.sha256), originals=originals)
            return self._append(json.loads(written.model_dump_json()))
        except Exception as exc:  # noqa: BLE001 - one policy: every failure is a record, none stops the run
            return self.record_error(str(path), **error_record(str(path), exc))

    def _key(self, path: Path, sha256: str) -> str:
        """The names of ``path``'s files: ``<stem>-<sha8>``, with ``-2``, ``-3``, … when another
        input of this run (or of the run it resumes) already has that key (the same name and bytes
        in two folders), so one image's files never overwrite another's."""
        key = base = f"{path.stem}-{sha256[:8]}"
        count = 1
        while self._keys.setdefault(key, str(path)) != str(path):
            count += 1
            key = f"{base}-{count}"
        return key

    def latest(self) -> list[dict]:
        """The latest record of every input, in the order first recorded."""
        by_path: dict[str, dict] = {}
        for record in self.records:
            by_path[record["input"]["path"] if "input" in record else record["path"]] = record
        return list(by_path.values())

    def counts(self) -> dict[str, int]:
        latest = self.latest()
        return {
            "scanned": sum("verdict" in r for r in latest),
            "unsafe": sum(r.get("verdict") == "unsafe" for r in latest),
            "failed": sum("error" in r for r in latest),
        }

    def finish(self, models: Sequence[dict] = ()) -> Path:
        """Write ``report.html`` (atomically) from the latest record of every input, with the
        ``models`` that scanned them (:func:`safeview.evaluate.model_card`)."""
        entries = [{"result": r, "assets": report_assets(r, self.out)} if "verdict" in r else r for r in self.latest()]
        tmp = self.out / f".{REPORT}.tmp"
        write_report(entries, tmp, models=models)
        os.replace(tmp, self.out / REPORT)
        return self.out / REPORT


def _sha_or_none(sha: Callable[[Path], str], path: Path) -> str | None:
    try:
        return sha(path)
    except OSError:
        return None


def read_records(path: Path) -> list[dict]:
    """The records of a ``results.jsonl``; a line a hard kill cut short is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
