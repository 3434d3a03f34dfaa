"""Strict reading of IDX files, the format MNIST ships in.

An IDX file is a 4-byte magic number (two zero bytes, a dtype byte, the number of
dimensions), one big-endian uint32 per dimension, then the payload in C order. Only the
unsigned-byte dtype (0x08) that MNIST uses is supported. Every field is checked, so a
truncated or corrupt file raises `IdxError` naming the file instead of giving a short array.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib

import numpy as np

UBYTE = 0x08
IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


class IdxError(ValueError):
    """A file that is not a well-formed unsigned-byte IDX file; the message names the file."""


def magic_for(ndim: int) -> int:
    """The magic number of an unsigned-byte IDX file with `ndim` dimensions."""
    return (UBYTE << 8) | ndim


def parse_idx(raw: bytes, name: str, *, ndim: int | None = None) -> np.ndarray:
    """Decode an uncompressed IDX file, checking magic, dimensions and payload length."""
    if len(raw) < 4:
        raise IdxError(f"{name}: truncated: {len(raw)} bytes, shorter than the 4-byte header")
    magic = int.from_bytes(raw[:4], "big")
    if raw[:3] != bytes([0, 0, UBYTE]):
        expected = f"0x{magic_for(ndim):08x}" if ndim else "0x000008NN"
        raise IdxError(
            f"{name}: bad magic number 0x{magic:08x}, expected {expected} "
            "(an unsigned-byte IDX file)"
        )
    dims = raw[3]
    if dims == 0:
        raise IdxError(f"{name}: magic 0x{magic:08x} declares 0 dimensions")
    if ndim is not None and dims != ndim:
        raise IdxError(
            f"{name}: magic 0x{magic:08x} declares {dims} dimension(s), expected {ndim} "
            f"(magic 0x{magic_for(ndim):08x})"
        )
    header = 4 + 4 * dims
    if len(raw) < header:
        raise IdxError(
            f"{name}: truncated: {len(raw)} bytes, shorter than the {header}-byte header "
            f"of a {dims}-dimensional IDX file"
        )
    shape = struct.unpack(f">{dims}I", raw[4:header])
    expected = math.prod(shape)
    payload = len(raw) - header
    if payload != expected:
        problem = "truncated" if payload < expected else "trailing bytes"
        raise IdxError(
            f"{name}: {problem}: payload is {payload} bytes but dimensions "
            f"{' x '.join(map(str, shape))} need {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(shape)


def gunzip(data: bytes, name: str) -> bytes:
    """Decompress a whole gzip file, naming `name` if it is corrupt or cut short."""
    try:
        return gzip.decompress(data)
    except EOFError:
        raise IdxError(f"{name}: truncated gzip stream ({len(data)} bytes)") from None
    except (OSError, zlib.error) as err:
        raise IdxError(f"{name}: not a valid gzip file: {err}") from None


def parse_idx_gz(data: bytes, name: str, *, ndim: int | None = None) -> np.ndarray:
    """Decode a gzipped IDX file such as `train-images-idx3-ubyte.gz`."""
    return parse_idx(gunzip(data, name), name, ndim=ndim)
