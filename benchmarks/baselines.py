"""The public MNIST VAE examples, re-implemented faithfully, behind our VAE's interface.

- keras.io "Variational AutoEncoder" (fchollet, examples/generative/vae.py): Conv2D 32/64
  stride 2 -> Dense 16 -> latent 2; Dense 7x7x64 -> Conv2DTranspose 64/32 -> 1 channel;
  per-image summed binary cross-entropy + KL, Adam (Keras defaults, lr 1e-3), batch 128.
- pytorch/examples vae/main.py: MLP 784-400-20 / 20-400-784, ReLU, sigmoid output; summed
  binary cross-entropy + KL over the batch, Adam lr 1e-3, batch 128, shuffled, seed 1.

What differs from the originals is only what a fair comparison needs: every model trains on
our training split (the keras.io example trains on train+test), and each decoder exposes its
logits (the originals end in a sigmoid; the loss applies that sigmoid, so training is the same
computation). Each model offers encode -> (mean, log_var), decode_logits, decode, sample,
reconstruct, latent_dim and likelihood, so one evaluation path serves every model. The
pytorch example's per-epoch extras (a test pass, sample PNGs) are left out: they would only
slow that baseline down.
"""

from __future__ import annotations

import importlib.util
import math

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from benchmarks.settings import KERAS_IO, PYTORCH_MLP  # noqa: F401 (the names of the two)


class TorchUnavailable(RuntimeError):
    """torch is an optional benchmark extra; without it the pytorch baseline is skipped."""


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


# --- keras.io ---------------------------------------------------------------------------------


class KerasIoSampling(layers.Layer):
    """z = z_mean + exp(z_log_var / 2) * epsilon, as the example's Sampling layer."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


def keras_io_encoder(latent_dim: int = 2) -> keras.Model:
    inputs = keras.Input(shape=(28, 28, 1))
    x = layers.Conv2D(32, 3, activation="relu", strides=2, padding="same")(inputs)
    x = layers.Conv2D(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(16, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    return keras.Model(inputs, [z_mean, z_log_var], name="encoder")


def keras_io_decoder(latent_dim: int = 2) -> keras.Model:
    """The example's decoder without its final sigmoid: it returns logits."""
    latent_inputs = keras.Input(shape=(latent_dim,))
    x = layers.Dense(7 * 7 * 64, activation="relu")(latent_inputs)
    x = layers.Reshape((7, 7, 64))(x)
    x = layers.Conv2DTranspose(64, 3, activation="relu", strides=2, padding="same")(x)
    x = layers.Conv2DTranspose(32, 3, activation="relu", strides=2, padding="same")(x)
    logits = layers.Conv2DTranspose(1, 3, padding="same")(x)
    return keras.Model(latent_inputs, logits, name="decoder")


class KerasIoVAE(keras.Model):
    """The keras.io example's VAE with its own train_step and loss, plus our interface."""

    latent_dim = 2
    likelihood = "bernoulli"

    def __init__(self, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.encoder = keras_io_encoder(self.latent_dim)
        self.decoder = keras_io_decoder(self.latent_dim)
        self.sampling = KerasIoSampling(seed)
        self.total_loss_tracker = keras.metrics.Mean(name="total_loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")

    @property
    def metrics(self):
        return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

    def train_step(self, data):
        with tf.GradientTape() as tape:
            z_mean, z_log_var = self.encoder(data)
            z = self.sampling([z_mean, z_log_var])
            reconstruction = ops.sigmoid(self.decoder(z))
            reconstruction_loss = ops.mean(ops.sum(
                keras.losses.binary_crossentropy(data, reconstruction), axis=(1, 2)))
            kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
            kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
            total_loss = reconstruction_loss + kl_loss
        grads = tape.gradient(total_loss, self.trainable_weights)
        self.optimizer.apply_gradients(zip(grads, self.trainable_weights, strict=True))
        self.total_loss_tracker.update_state(total_loss)
        self.reconstruction_loss_tracker.update_state(reconstruction_loss)
        self.kl_loss_tracker.update_state(kl_loss)
        return {m.name: m.result() for m in self.metrics}

    def call(self, x):
        z_mean, z_log_var = self.encoder(x)
        return ops.sigmoid(self.decoder(self.sampling([z_mean, z_log_var])))

    # the interface every benchmarked model offers
    def encode(self, x):
        return self.encoder(ops.convert_to_tensor(x, "float32"), training=False)

    def decode_logits(self, z):
        return self.decoder(ops.convert_to_tensor(z, "float32"), training=False)

    def decode(self, z):
        return ops.sigmoid(self.decode_logits(z))

    def sample(self, n: int, seed: int):
        return self.decode(keras.random.normal((n, self.latent_dim), seed=seed))

    def reconstruct(self, x):
        return self.decode(self.encode(x)[0])


def build_keras_io(seed: int = 0) -> KerasIoVAE:
    """The example as published: compiled with Keras' default Adam (learning rate 1e-3)."""
    keras.utils.set_random_seed(seed)
    model = KerasIoVAE(seed=seed)
    model.compile(optimizer=keras.optimizers.Adam())
    return model


KERAS_IO_BATCH = 128


# --- pytorch/examples --------------------------------------------------------------------------

PYTORCH_BATCH = 128
PYTORCH_SEED = 1  # the example's default --seed


class TorchMlpVAE:
    """pytorch/examples' MLP VAE and its training step, behind our VAE's interface.

    Arrays in and out are numpy ([N, 28, 28, 1] images, [N, 20] latents); torch stays inside.
    """

    latent_dim = 20
    likelihood = "bernoulli"

    def __init__(self, seed: int = PYTORCH_SEED):
        if not torch_available():
            raise TorchUnavailable(
                "torch is not installed: `pip install -e '.[bench]'` (the CPU build) to "
                "benchmark the pytorch/examples baseline")
        import torch
        from torch import nn, optim

        self.torch = torch
        torch.manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed)

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(784, 400)
                self.fc21 = nn.Linear(400, 20)
                self.fc22 = nn.Linear(400, 20)
                self.fc3 = nn.Linear(20, 400)
                self.fc4 = nn.Linear(400, 784)

            def encode(self, x):
                h1 = torch.relu(self.fc1(x))
                return self.fc21(h1), self.fc22(h1)

            def reparameterize(self, mu, logvar):
                std = torch.exp(0.5 * logvar)
                eps = torch.randn_like(std)
                return mu + eps * std

            def decode_logits(self, z):
                return self.fc4(torch.relu(self.fc3(z)))

            def forward(self, x):
                mu, logvar = self.encode(x.view(-1, 784))
                z = self.reparameterize(mu, logvar)
                return torch.sigmoid(self.decode_logits(z)), mu, logvar

        self.net = Net()
        self.optimizer = optim.Adam(self.net.parameters(), lr=1e-3)

    @staticmethod
    def _loss(torch, recon_x, x, mu, logvar):
        """Reconstruction + KL divergence, summed over all elements and the batch."""
        bce = torch.nn.functional.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return bce + kld

    def train_step(self, x) -> float:
        """One Adam step on a batch (a torch tensor [B, 784]); returns the summed loss."""
        torch = self.torch
        self.net.train()
        self.optimizer.zero_grad()
        recon_batch, mu, logvar = self.net(x)
        loss = self._loss(torch, recon_batch, x, mu, logvar)
        loss.backward()
        self.optimizer.step()
        return float(loss.item())

    def batches(self, x: np.ndarray):
        """One shuffled epoch of batches of 128 (the last one smaller), as the DataLoader."""
        torch = self.torch
        data = torch.from_numpy(np.ascontiguousarray(x.reshape(len(x), 784), np.float32))
        order = torch.randperm(len(data), generator=self.generator)
        for start in range(0, len(data), PYTORCH_BATCH):
            yield data[order[start:start + PYTORCH_BATCH]]

    # the interface every benchmarked model offers
    def encode(self, x):
        torch = self.torch
        self.net.eval()
        with torch.no_grad():
            flat = torch.from_numpy(np.asarray(x, np.float32).reshape(-1, 784))
            mu, logvar = self.net.encode(flat)
        return mu.numpy(), logvar.numpy()

    def decode_logits(self, z):
        torch = self.torch
        self.net.eval()
        with torch.no_grad():
            logits = self.net.decode_logits(torch.from_numpy(np.asarray(z, np.float32)))
        return logits.numpy().reshape(-1, 28, 28, 1)

    def decode(self, z):
        return 1.0 / (1.0 + np.exp(-self.decode_logits(z)))

    def sample(self, n: int, seed: int):
        return self.decode(np.random.default_rng(seed).standard_normal((n, self.latent_dim)))

    def reconstruct(self, x):
        return self.decode(self.encode(x)[0])


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    return math.ceil(n_images / batch_size)
