"""Writing IDX files, to build test fixtures: the inverse of mnist_vae.idx.parse_idx."""

import struct

import numpy as np

from mnist_vae.idx import magic_for

MAX_DIM = 2**32 - 1


def encode_idx(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"only uint8 arrays can be written as IDX, got {array.dtype}")
    if not 1 <= array.ndim <= 255 or any(d > MAX_DIM for d in array.shape):
        raise ValueError(f"shape {array.shape} cannot be written as IDX")
    header = struct.pack(f">I{array.ndim}I", magic_for(array.ndim), *array.shape)
    return header + np.ascontiguousarray(array).tobytes()
