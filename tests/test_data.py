"""Scaling, seeded splits, limits and binarisation on tiny synthetic MNIST-shaped arrays."""

import numpy as np
import pytest

from mnist_vae.config import DataConfig
from mnist_vae.data import DataError, binarize, load_arrays, load_splits, scale, split


def _arrays(n_train=50, n_test=20, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def test_scale_maps_uint8_to_unit_interval_with_channel():
    x = scale(np.array([[[0, 255]]], dtype=np.uint8))
    assert x.dtype == np.float32 and x.shape == (1, 1, 2, 1)
    assert x.min() == 0.0 and x.max() == 1.0


def test_split_sizes_are_disjoint_and_seeded():
    arrays = _arrays()
    cfg = DataConfig(val_size=10, split_seed=3)
    a, b = split(arrays, cfg), split(arrays, cfg)
    assert len(a.x_train) == 40 and len(a.x_val) == 10 and len(a.x_test) == 20
    np.testing.assert_array_equal(a.x_val, b.x_val)
    train_rows = {r.tobytes() for r in a.x_train}
    assert not any(r.tobytes() in train_rows for r in a.x_val)
    other = split(arrays, DataConfig(val_size=10, split_seed=4))
    assert not np.array_equal(a.x_val, other.x_val)


def test_test_set_is_untouched_by_split_seed():
    arrays = _arrays()
    a = split(arrays, DataConfig(val_size=10, split_seed=1))
    np.testing.assert_array_equal(a.x_test, scale(arrays["x_test"]))


def test_limits_subsample_train_and_test():
    s = split(_arrays(), DataConfig(val_size=10, train_limit=7, test_limit=5))
    assert (len(s.x_train), len(s.x_val), len(s.x_test)) == (7, 10, 5)


def test_val_size_too_large_names_the_key():
    with pytest.raises(DataError, match="data.val_size"):
        split(_arrays(), DataConfig(val_size=50))


def test_static_binarize_gives_seeded_zeros_and_ones():
    s = split(_arrays(), DataConfig(val_size=10, binarize="static"))
    assert set(np.unique(s.x_train)) <= {0.0, 1.0}
    again = split(_arrays(), DataConfig(val_size=10, binarize="static"))
    np.testing.assert_array_equal(s.x_test, again.x_test)


def test_binarize_keeps_mean_intensity():
    x = np.full((200, 28, 28, 1), 0.3, dtype=np.float32)
    assert abs(binarize(x, 0).mean() - 0.3) < 0.01


def test_load_arrays_round_trip(tmp_path):
    path = tmp_path / "mnist.npz"
    np.savez(path, **_arrays())
    s = load_splits(path, DataConfig(val_size=5))
    assert s.x_train.shape == (45, 28, 28, 1)


def test_load_arrays_missing_file_says_what_to_run(tmp_path):
    with pytest.raises(DataError, match="dvc repro download"):
        load_arrays(tmp_path / "nope.npz")


def test_load_arrays_rejects_malformed(tmp_path):
    arrays = _arrays()
    arrays["x_test"] = arrays["x_test"][:, :27]
    path = tmp_path / "mnist.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError, match="x_test must be uint8"):
        load_arrays(path)
    np.savez(path, x_train=arrays["x_train"])
    with pytest.raises(DataError, match="missing arrays"):
        load_arrays(path)
