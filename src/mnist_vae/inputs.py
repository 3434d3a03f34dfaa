"""The training inputs: seeded shuffled batches per epoch, and the validation images."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mnist_vae import data as data_module
from mnist_vae.config import DataConfig, TrainConfig
from mnist_vae.data import Splits


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Full batches per epoch (the remainder, different each epoch, is dropped)."""
    steps = n_images // batch_size
    if steps == 0:
        raise ValueError(
            f"train.batch_size: {batch_size} is larger than the {n_images} training images; "
            "lower it or raise data.train_limit"
        )
    return steps


def training_batches(x: np.ndarray, cfg: TrainConfig, dynamic_binarize: bool,
                     start_epoch: int = 0) -> tf.data.Dataset:
    """Shuffled batches for epochs start_epoch .. cfg.epochs - 1, a pure function of the seed.

    Epoch e's order comes from a stateless RNG keyed by (seed, e); with dynamic binarisation,
    batch s of epoch e is resampled from a stateless RNG keyed by (seed, global step).
    """
    images = tf.constant(x, tf.float32)
    n, batch = len(x), cfg.batch_size
    steps = steps_per_epoch(n, batch)
    shuffle_seed = tf.constant([cfg.seed, 0], tf.int64)
    binarize_seed = tf.constant([cfg.seed, 1], tf.int64)

    def epoch_batches(epoch):
        seed = tf.random.experimental.stateless_fold_in(shuffle_seed, epoch)
        order = tf.argsort(tf.random.stateless_uniform([n], seed=seed))
        order = tf.reshape(order[: steps * batch], [steps, batch])
        global_steps = epoch * steps + tf.range(steps, dtype=tf.int64)
        return tf.data.Dataset.from_tensor_slices((global_steps, order))

    def gather(global_step, index):
        batch_images = tf.gather(images, index)
        if dynamic_binarize:
            seed = tf.random.experimental.stateless_fold_in(binarize_seed, global_step)
            noise = tf.random.stateless_uniform(tf.shape(batch_images), seed=seed)
            batch_images = tf.cast(noise < batch_images, tf.float32)
        return batch_images

    options = tf.data.Options()
    options.autotune.enabled = False  # its thread made each fit() end wait 25-60 s; no speed gain
    epochs = tf.data.Dataset.range(start_epoch, cfg.epochs).with_options(options)
    return epochs.flat_map(epoch_batches).map(gather).prefetch(2)


def validation_images(splits: Splits, data_cfg: DataConfig) -> np.ndarray:
    """The validation set as the model is scored on it: binarised once when training is dynamic."""
    if data_cfg.binarize == "dynamic":
        return data_module.binarize(splits.x_val, data_cfg.split_seed + 1)
    return splits.x_val


def prior_fit_images(splits: Splits, data_cfg: DataConfig) -> np.ndarray:
    """The training images as the encoder learned them: binarised once when training is dynamic."""
    if data_cfg.binarize == "dynamic":
        return data_module.binarize(splits.x_train, data_cfg.split_seed + 3)
    return splits.x_train
