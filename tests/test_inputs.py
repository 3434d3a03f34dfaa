"""The training input pipeline: each epoch a seeded permutation, resumable mid-run, and
dynamic binarisation resampled per batch from the seed alone."""

import dataclasses

import numpy as np
import pytest

from mnist_vae.config import TrainConfig
from mnist_vae.inputs import training_batches

TINY_TRAIN = TrainConfig(batch_size=16, epochs=3, learning_rate=0.01, patience=10,
                         progress_samples=4)


def _batches(ds):
    return [b.numpy() for b in ds]


def test_each_epoch_is_a_seeded_permutation_and_resuming_replays_it():
    x = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1) * np.ones((1, 28, 28, 1), "float32")
    cfg = dataclasses.replace(TINY_TRAIN, batch_size=8, epochs=3)
    full = _batches(training_batches(x, cfg, dynamic_binarize=False))
    assert len(full) == 3 * 5
    epochs = [np.concatenate(full[e * 5:(e + 1) * 5])[:, 0, 0, 0] for e in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(40))  # every image once per epoch
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    resumed = _batches(training_batches(x, cfg, dynamic_binarize=False, start_epoch=1))
    np.testing.assert_array_equal(np.stack(resumed), np.stack(full[5:]))
    again = _batches(training_batches(x, cfg, dynamic_binarize=False))
    np.testing.assert_array_equal(np.stack(again), np.stack(full))
    other = _batches(training_batches(x, dataclasses.replace(cfg, seed=1), False))
    assert not np.array_equal(np.stack(other), np.stack(full))


def test_dynamic_binarisation_resamples_every_batch_reproducibly():
    x = np.full((32, 28, 28, 1), 0.5, np.float32)
    cfg = dataclasses.replace(TINY_TRAIN, batch_size=16, epochs=2)
    batches = _batches(training_batches(x, cfg, dynamic_binarize=True))
    assert set(np.unique(np.stack(batches))) == {0.0, 1.0}
    assert 0.4 < np.stack(batches).mean() < 0.6
    assert not np.array_equal(batches[0], batches[1])
    resumed = _batches(training_batches(x, cfg, dynamic_binarize=True, start_epoch=1))
    np.testing.assert_array_equal(np.stack(resumed), np.stack(batches[2:]))


def test_batch_larger_than_the_training_set_names_the_fix():
    x = np.zeros((4, 28, 28, 1), np.float32)
    with pytest.raises(ValueError, match="train.batch_size: 16 is larger than the 4"):
        training_batches(x, TINY_TRAIN, False)
