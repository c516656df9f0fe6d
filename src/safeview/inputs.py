"""What a user names as input, turned into files: command-line items (files, folders searched
recursively for image files, globs), manifests (JSONL, CSV or Parquet with a ``path`` column,
and ``label`` for training) and the sha256 of each file's exact bytes. Shared by ``scan``,
``batch``, training and evaluation, so every entry point reads inputs the same way."""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from .errors import SafeViewError

MANIFEST_SUFFIXES = (".jsonl", ".csv", ".parquet")


def expand_inputs(items: list[str], *, exclude: str | os.PathLike | None = None) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files, folders (recursive, image suffixes only) and globs -> (files, [(item, error)]).

    ``exclude`` is the run's output folder: folders and globs never yield a file inside it, and a
    folder that is it (or inside it) is an error, so a rerun cannot scan an earlier run's outputs
    as inputs; a file named explicitly is kept wherever it is. In a folder, an image name that is
    a broken or looping symbolic link is an error rather than silently left out."""
    from .images import IMAGE_SUFFIXES

    files: list[Path] = []
    errors: list[tuple[str, str]] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            if _inside(path, exclude):
                errors.append((item, f"is the output folder {exclude} or inside it; choose an --out outside the folders you scan"))
                continue
            entries = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            dangling = [p for p in entries if p.is_symlink() and not p.exists()]
            found = [p for p in entries if p.is_file()]
            if _inside(exclude, path):  # the output folder is in this one: leave its files out
                found = [p for p in found if not _inside(p, exclude)]
            errors.extend((str(p), "broken or looping symbolic link; fix or remove it") for p in dangling)
            if not found and not dangling:
                errors.append((item, "folder holds no image files (looked for " + ", ".join(sorted(IMAGE_SUFFIXES)) + ")"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file() and not _inside(m, exclude))
            if not matches:
                errors.append((item, "no such file, folder or matching glob"))
            files.extend(matches)
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique, errors


def _inside(path: str | os.PathLike | None, folder: str | os.PathLike | None) -> bool:
    """Whether ``path`` is ``folder`` or inside it, symbolic links resolved (False if either is None)."""
    if path is None or folder is None:
        return False
    path, folder = Path(path).expanduser().resolve(), Path(folder).expanduser().resolve()
    return path == folder or folder in path.parents


def read_manifest(path: str | os.PathLike, columns: Sequence[str] = ("path",)) -> list[dict[str, str]]:
    """The rows of a JSONL, CSV or Parquet manifest, each holding ``columns`` as strings;
    relative paths are made relative to the manifest's folder. One-line errors name the file."""
    path = Path(path)
    suffix = path.suffix.lower()
    need = ", ".join(repr(c) for c in columns)
    try:
        if suffix == ".jsonl":
            records = []
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or not set(columns) <= set(record):
                    raise SafeViewError(f"{path}:{number}: each line must be a JSON object with the keys {need}")
                records.append(record)
        elif suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                if not set(columns) <= set(reader.fieldnames or []):
                    raise SafeViewError(f"{path}: a CSV manifest needs a header with the columns {need} (has {reader.fieldnames})")
                records = list(reader)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            if not set(columns) <= set(table.column_names):
                raise SafeViewError(f"{path}: a Parquet manifest needs the columns {need} (has {table.column_names})")
            records = table.select(list(columns)).to_pylist()
        else:
            raise SafeViewError(f"{path}: not a manifest; use one of {', '.join(MANIFEST_SUFFIXES)}")
    except FileNotFoundError:
        raise SafeViewError(f"{path}: no such manifest file") from None
    except json.JSONDecodeError as exc:
        raise SafeViewError(f"{path}: not valid JSONL ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise SafeViewError(f"{path}: not a UTF-8 text manifest") from None
    except (csv.Error, OSError) as exc:
        raise SafeViewError(f"{path}: unreadable manifest ({str(exc).splitlines()[0]})") from None
    rows = []
    for record in records:
        row = {c: str(record[c]) for c in columns if record[c] is not None and str(record[c])}
        if "path" in row:
            row["path"] = str(Path(row["path"]) if Path(row["path"]).is_absolute() else path.parent / row["path"])
        if len(row) == len(columns):
            rows.append(row)
    return rows


def list_inputs(
    inputs: str | os.PathLike | Sequence[str | os.PathLike], *, exclude: str | os.PathLike | None = None
) -> tuple[list[str], list[tuple[str, str]]]:
    """Folders (recursive), globs, image files and manifests -> (paths in order, [(item, error)]).
    Paths a manifest names are kept even when missing: they become error rows. ``exclude``: the
    output folder, as in :func:`expand_inputs`."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    paths: list[str] = []
    errors: list[tuple[str, str]] = []
    for item in map(str, items):
        if Path(item).is_file() and Path(item).suffix.lower() in MANIFEST_SUFFIXES:
            paths.extend(str(Path(row["path"]).absolute()) for row in read_manifest(item))
        else:
            files, item_errors = expand_inputs([item], exclude=exclude)
            paths.extend(map(str, files))
            errors.extend(item_errors)
    return list(dict.fromkeys(paths)), errors


def hash_file(path: str | os.PathLike) -> tuple[str, int]:
    """(sha256, size) of a file's exact bytes, read in 1 MiB blocks (raises ``OSError``)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's exact bytes."""
    return hash_file(path)[0]


def read_error(path: str, exc: OSError) -> str:
    """Why ``path`` cannot be read, as one line that says what to do."""
    if isinstance(exc, FileNotFoundError):
        return f"{path}: no such file; check the path"
    if isinstance(exc, IsADirectoryError):
        return f"{path}: is a folder, not an image file"
    if isinstance(exc, PermissionError):
        return f"{path}: permission denied; make the file readable"
    return f"{path}: cannot be read ({exc.strerror or exc}); check the file"
