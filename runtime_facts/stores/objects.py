"""A minimal object-store interface with a local-directory implementation.

Keys are `/`-separated relative paths under the home. Writes are atomic and can be
conditional (never overwrite), which is all CAS, receipts and the outbox need.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class ObjectStore(Protocol):
    """What the stores need from a place that holds bytes."""

    uri: str

    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...
    def put(self, key: str, data: bytes, *, overwrite: bool = True) -> bool: ...
    def delete(self, key: str) -> None: ...
    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[str]: ...
    def folders(self, prefix: str) -> tuple[str, ...]: ...
    def size(self, key: str) -> int: ...
    def local_path(self, key: str) -> Path | None: ...


class LocalObjectStore:
    """Objects as files under a root directory; writes go temp file → fsync → rename → dir fsync."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = str(root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts) or key.startswith("/"):
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def get(self, key: str) -> bytes:
        """Read an object; FileNotFoundError when missing."""
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        """True when the object exists."""
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """Size in bytes; FileNotFoundError when missing."""
        return self._path(key).stat().st_size

    def local_path(self, key: str) -> Path | None:
        """The file behind a key (local stores only)."""
        return self._path(key)

    def put(self, key: str, data: bytes, *, overwrite: bool = True) -> bool:
        """Write atomically; with overwrite=False an existing object wins. True if written."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not overwrite and path.exists():
            return False
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if overwrite:
                Path(tmp).replace(path)
            else:
                try:
                    os.link(tmp, path)  # atomic create-if-absent
                except FileExistsError:
                    return False
                finally:
                    Path(tmp).unlink(missing_ok=True)
            _fsync_dir(path.parent)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                Path(tmp).unlink()

    def delete(self, key: str) -> None:
        """Remove an object if present."""
        self._path(key).unlink(missing_ok=True)

    def list(self, prefix: str, *, start_after: str | None = None) -> Iterator[str]:
        """Keys directly under a prefix folder, sorted (after `start_after`); temp files skipped."""
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir():
            return
        for entry in sorted(folder.iterdir()):
            if entry.is_file() and not entry.name.startswith(".tmp-"):
                key = f"{prefix.rstrip('/')}/{entry.name}"
                if start_after is None or key > start_after:
                    yield key

    def folders(self, prefix: str) -> tuple[str, ...]:
        """Names of the folders directly under a prefix folder, sorted."""
        folder = self._path(prefix.rstrip("/"))
        if not folder.is_dir():
            return ()
        return tuple(sorted(e.name for e in folder.iterdir() if e.is_dir()))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
