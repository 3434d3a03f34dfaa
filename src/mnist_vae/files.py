"""Outputs written atomically (a temp file, then a rename) and reproducibly; streamed checksums.

A killed stage leaves either the old file or the new one, never half of one; saving the same
model twice gives the same bytes, so its hash in dvc.lock names the model, not the moment.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import zipfile
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


def write_json_files(outputs: dict[str | Path, Any]) -> None:
    """Write several JSON outputs that belong together: all are replaced, or none is."""
    texts = [(Path(path), json.dumps(obj, indent=2) + "\n") for path, obj in outputs.items()]
    with atomic_paths(*(path for path, _ in texts)) as tmps:
        for (path, text), tmp in zip(texts, tmps, strict=True):
            try:
                tmp.write_text(text)
            except OSError as err:  # name the output that did not fit, not the last one
                if err.errno in _DISK_FULL:
                    raise DiskFullError(path) from err
                raise


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Zip's own epoch: what reproducible builds stamp on archive entries instead of "now".
FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
KERAS_METADATA = "metadata.json"  # {"keras_version": ..., "date_saved": ...} in a .keras zip
KERAS_CONFIG = "config.json"      # the architecture; shared objects carry Python's id()


def canonical_keras_file(path: str | Path) -> None:
    """Rewrite a saved `.keras` zip so that the same model always gives the same bytes.

    Keras stamps the save time (`date_saved` in `metadata.json`, the weights' zip entry time)
    and numbers shared objects by their memory address (`shared_object_id` in `config.json`).
    Here the times become the zip epoch (the key stays: Keras's file editor reads it) and the
    ids are renumbered by first appearance, which keeps which objects are shared.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w") as dst:
        for info, data in entries:
            if info.filename == KERAS_METADATA:
                metadata = json.loads(data)
                if "date_saved" in metadata:
                    metadata["date_saved"] = "1980-01-01@00:00:00"
                data = json.dumps(metadata).encode()
            elif info.filename == KERAS_CONFIG:
                data = json.dumps(_renumber_shared_objects(json.loads(data), {})).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_ZIP_TIME)
            fixed.compress_type, fixed.external_attr = info.compress_type, info.external_attr
            dst.writestr(fixed, data)


def _renumber_shared_objects(node: Any, ids: dict[int, int]) -> Any:
    """The config with every `shared_object_id` replaced by 1, 2, ... in order of appearance."""
    if isinstance(node, dict):
        return {key: (ids.setdefault(value, len(ids) + 1) if key == "shared_object_id"
                      else _renumber_shared_objects(value, ids)) for key, value in node.items()}
    if isinstance(node, list):
        return [_renumber_shared_objects(item, ids) for item in node]
    return node
