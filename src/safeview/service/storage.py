"""File storage of the service. Originals are evidence: content-addressed by the SHA-256 of their
exact bytes, written once (never modified or overwritten), made read-only, and re-verified on
every read. Derived outputs (obfuscated image, thumbnails, overlays) live in a separate tree.
Everything is owner-only — folders 0700, outputs 0600, originals 0400 — since other local users
must not read evidence that may be harmful.

Paths are built only from hex digests and scan ids the server generated, checked against strict
patterns, so no part of a request ever names a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from ..errors import SafeViewError

_SHA = re.compile(r"[0-9a-f]{64}")
_ID = re.compile(r"[0-9a-f]{32}")
_KIND = re.compile(r"[a-z0-9_]+(-[a-z0-9_]+)?\.(png|jpg)")


class StorageError(SafeViewError):
    """A stored file is missing or no longer matches its recorded SHA-256."""


class Storage:
    """``root/originals/ab/<sha256>`` (read-only) and ``root/outputs/<scan id>/<kind>``."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self.originals = self.root / "originals"
        self.outputs = self.root / "outputs"
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (self.root, self.originals, self.outputs):
            folder.mkdir(mode=0o700, exist_ok=True)
            os.chmod(folder, 0o700)

    def original_path(self, sha256: str) -> Path:
        if not _SHA.fullmatch(sha256):
            raise ValueError("not a SHA-256 hex digest")
        return self.originals / sha256[:2] / sha256

    def put_original(self, data: bytes) -> str:
        """Store ``data`` once under its SHA-256 (returned); an existing copy is verified, never replaced."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.original_path(sha256)
        if path.exists():
            self.read_original(sha256)
            return sha256
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")  # created 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o400)
            try:
                os.link(tmp, path)  # atomic, and fails rather than overwrite a concurrent writer's copy
            except FileExistsError:
                self.read_original(sha256)
        finally:
            os.unlink(tmp)
        return sha256

    def read_original(self, sha256: str) -> bytes:
        """The original's bytes, after checking they still hash to ``sha256``."""
        path = self.original_path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StorageError(f"original {sha256} is missing from storage") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise StorageError(f"original {sha256} fails verification (now hashes to {actual}); it has been altered")
        return data

    def delete_original(self, sha256: str) -> None:
        self.original_path(sha256).unlink(missing_ok=True)

    def _output_path(self, scan_id: str, kind: str) -> Path:
        if not _ID.fullmatch(scan_id) or not _KIND.fullmatch(kind):
            raise ValueError("invalid scan id or output kind")
        return self.outputs / scan_id / kind

    def put_output(self, scan_id: str, kind: str, data: bytes) -> None:
        path = self._output_path(scan_id, kind)
        path.parent.mkdir(mode=0o700, exist_ok=True)
        tmp = path.with_name(f".{kind}.tmp")
        with open(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600), "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)

    def read_output(self, scan_id: str, kind: str) -> bytes | None:
        path = self._output_path(scan_id, kind)
        return path.read_bytes() if path.is_file() else None

    def delete_outputs(self, scan_id: str) -> None:
        self._output_path(scan_id, "x.png")  # validates the id
        shutil.rmtree(self.outputs / scan_id, ignore_errors=True)
