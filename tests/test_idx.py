"""IDX parsing is strict: every malformed file raises IdxError naming it, never a short array."""

import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from idx_writer import encode_idx
from mnist_vae.idx import (
    IMAGES_MAGIC,
    LABELS_MAGIC,
    IdxError,
    gunzip,
    parse_idx,
    parse_idx_gz,
)

IMAGES = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
LABELS = np.array([7, 0, 9], dtype=np.uint8)


def test_round_trip_images_and_labels():
    images = parse_idx(encode_idx(IMAGES), "images", ndim=3)
    labels = parse_idx(encode_idx(LABELS), "labels", ndim=1)
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)
    assert images.dtype == np.uint8 and labels.dtype == np.uint8


def test_encoding_matches_the_mnist_layout():
    raw = encode_idx(IMAGES)
    assert struct.unpack(">4I", raw[:16]) == (IMAGES_MAGIC, 3, 4, 5)
    assert raw[16:] == IMAGES.tobytes()
    assert struct.unpack(">2I", encode_idx(LABELS)[:8]) == (LABELS_MAGIC, 3)


def test_gzipped_round_trip():
    raw = gzip.compress(encode_idx(IMAGES))
    np.testing.assert_array_equal(parse_idx_gz(raw, "images.gz", ndim=3), IMAGES)


@pytest.mark.parametrize("cut", [0, 3, 10, 16 + 59])
def test_truncated_file_is_rejected(cut):
    raw = encode_idx(IMAGES)[:cut]
    with pytest.raises(IdxError, match=r"^train-images: truncated"):
        parse_idx(raw, "train-images", ndim=3)


def test_trailing_bytes_are_rejected():
    with pytest.raises(IdxError, match="trailing bytes: payload is 61 bytes but .* need 60"):
        parse_idx(encode_idx(IMAGES) + b"\0", "train-images", ndim=3)


@pytest.mark.parametrize(
    "magic", [0x00000000, 0x00000903, 0x00000D03, 0x01000803, 0x08030000]
)
def test_wrong_magic_is_rejected(magic):
    raw = struct.pack(">I", magic) + encode_idx(IMAGES)[4:]
    expected = f"^x.idx: bad magic number 0x{magic:08x}, expected 0x00000803"
    with pytest.raises(IdxError, match=expected):
        parse_idx(raw, "x.idx", ndim=3)


def test_wrong_number_of_dimensions_is_rejected():
    with pytest.raises(IdxError, match="labels: magic 0x00000803 declares 3 dimension.*expected 1"):
        parse_idx(encode_idx(IMAGES), "labels", ndim=1)


def test_zero_dimensions_are_rejected():
    with pytest.raises(IdxError, match="declares 0 dimensions"):
        parse_idx(bytes([0, 0, 8, 0]), "empty")


def test_dimensions_that_disagree_with_the_payload_are_rejected():
    raw = struct.pack(">4I", IMAGES_MAGIC, 3, 4, 6) + IMAGES.tobytes()  # claims 72 bytes
    with pytest.raises(IdxError, match="truncated: payload is 60 bytes but dimensions 3 x 4 x 6"):
        parse_idx(raw, "images", ndim=3)


def test_any_rank_is_accepted_without_ndim():
    matrix = np.ones((2, 3), dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(encode_idx(matrix), "m"), matrix)


def test_corrupt_gzip_is_rejected_with_the_file_name():
    with pytest.raises(IdxError, match="^t10k.gz: not a valid gzip file"):
        gunzip(b"not gzip at all", "t10k.gz")


def test_truncated_gzip_is_rejected_with_the_file_name():
    raw = gzip.compress(encode_idx(IMAGES))
    with pytest.raises(IdxError, match="^t10k.gz: truncated gzip stream"):
        gunzip(raw[: len(raw) // 2], "t10k.gz")


def test_the_fixture_writer_takes_only_uint8_arrays():
    with pytest.raises(ValueError, match="only uint8"):
        encode_idx(np.zeros(3, dtype=np.float32))


# --- properties: only IdxError, never a silently wrong array ---------------------------------

PROPERTY = settings(max_examples=300, deadline=None)
small_arrays = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=4, min_side=0,
                                                     max_side=6))


@PROPERTY
@given(small_arrays)
def test_any_uint8_array_round_trips(array):
    parsed = parse_idx(encode_idx(array), "x", ndim=array.ndim)
    assert parsed.dtype == np.uint8 and parsed.shape == array.shape
    np.testing.assert_array_equal(parsed, array)


@PROPERTY
@given(st.binary(max_size=200), st.one_of(st.none(), st.integers(1, 4)))
def test_arbitrary_bytes_give_idx_error_or_an_array_that_is_exactly_those_bytes(raw, ndim):
    try:
        array = parse_idx(raw, "x", ndim=ndim)
    except IdxError as err:
        assert str(err).startswith("x: ")
        return
    assert encode_idx(array) == raw  # nothing dropped, nothing invented
    assert ndim is None or array.ndim == ndim


@PROPERTY
@given(small_arrays, st.data())
def test_a_cut_or_extended_file_is_always_an_error(array, data):
    raw = encode_idx(array)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(IdxError):
        parse_idx(raw[:cut], "x")
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(IdxError, match="trailing bytes"):
        parse_idx(raw + extra, "x")


@PROPERTY
@given(small_arrays, st.data())
def test_a_corrupted_header_byte_is_an_error_or_a_consistent_array(array, data):
    raw = bytearray(encode_idx(array))
    header = 4 + 4 * array.ndim
    position = data.draw(st.integers(0, header - 1))
    raw[position] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[position]))
    try:
        parsed = parse_idx(bytes(raw), "x")
    except IdxError:
        return
    assert encode_idx(parsed) == bytes(raw)


@PROPERTY
@given(st.binary(max_size=300))
def test_arbitrary_bytes_as_gzip_give_idx_error_or_bytes(data):
    try:
        parse_idx_gz(data, "x.gz")
    except IdxError as err:
        assert str(err).startswith("x.gz: ")


@PROPERTY
@given(small_arrays, st.data())
def test_a_truncated_gzip_stream_is_an_error(array, data):
    packed = gzip.compress(encode_idx(array), mtime=0)
    cut = data.draw(st.integers(0, len(packed) - 1))
    with pytest.raises(IdxError):
        parse_idx_gz(packed[:cut], "x.gz")
