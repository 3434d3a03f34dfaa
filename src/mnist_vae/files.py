"""Files of the pipeline: atomic writes (a temp file, then a rename) and streamed checksums.

A killed stage leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any


class DiskFullError(OSError):
    """No space left for an output; the message names it and what to do, in one line."""

    def __init__(self, path: Path):
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.path = path

    def __str__(self) -> str:
        return (f"{self.path}: the disk is full (no space left on the device holding "
                f"{self.path.parent}); nothing was written: free space there and rerun")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path (same directory and suffix) that becomes `path` if the block succeeds."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in _DISK_FULL and not isinstance(err, DiskFullError):
            raise DiskFullError(path) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """Temp paths for several outputs that are renamed into place only if the whole block
    succeeds: a failure leaves every target as it was."""
    with ExitStack() as stack:
        yield [stack.enter_context(atomic_path(p)) for p in paths]


def write_json(path: str | Path, obj: Any) -> None:
    """Write obj as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
