"""Expanding what a user names on the command line — files, folders (searched recursively for
image files) and globs — into the list of images to scan, shared by ``scan`` and ``batch``."""

from __future__ import annotations

import glob
from pathlib import Path


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
