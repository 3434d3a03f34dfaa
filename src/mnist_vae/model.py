"""The VAE: small config-driven encoder/decoder builders and a serialisable keras.Model.

`build_vae(params.model)` makes one; `load_vae(path)` loads a saved `.keras` file in any
process that can import this package. Every decoder ends in logits: `decode` is their sigmoid.
With `decoder.autoregressive_channels`, a local autoregressive head (autoregressive.py) lets
each pixel's logit also read the pixels before it: `image_logits(z, x)` scores images, and
`decode` draws them pixel by pixel.
Built with `precision="mixed_bfloat16"`, the hidden layers compute in bf16 while the heads
(mean, log_var, logits) and so every loss term stay float32; variables are float32 either way.
"""

from __future__ import annotations

import dataclasses
import math
import zipfile
import zlib
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from mnist_vae import distribute
from mnist_vae.autoregressive import LocalARHead
from mnist_vae.config import DecoderConfig, EncoderConfig, ModelConfig, parse_section
from mnist_vae.losses import kl_to_standard_normal, reconstruction_nll
from mnist_vae.prior import DIGITS, GaussianMixture, check_digit

IMAGE_SHAPE = (28, 28, 1)
_CHUNK = 1000  # images per forward pass in the public API, to bound memory


PRECISIONS = ("float32", "mixed_bfloat16")


def _dtypes(precision: str) -> tuple[str | None, str | None]:
    """(hidden layers' dtype policy, heads' dtype); None keeps Keras' float32 default, so a
    float32 model's saved config is what it was before mixed precision existed."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision: must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return (None, None) if precision == "float32" else (precision, "float32")


def _activation(name: str, slope: float, layer_name: str, dtype: str | None) -> layers.Layer:
    if name == "leaky_relu":
        return layers.LeakyReLU(negative_slope=slope, name=layer_name, dtype=dtype)
    return layers.Activation(name, name=layer_name, dtype=dtype)


def _normalized(x, batch_norm: bool, name: str, dtype: str | None):
    return layers.BatchNormalization(name=f"{name}_bn", dtype=dtype)(x) if batch_norm else x


def build_encoder(cfg: EncoderConfig, latent_dim: int, slope: float,
                  precision: str = "float32") -> keras.Model:
    """Image -> (mean, log_var) of q(z | x)."""
    dtype, head = _dtypes(precision)
    x = inputs = keras.Input(IMAGE_SHAPE, name="image")
    convs = zip(cfg.filters, cfg.kernel_sizes, cfg.strides, strict=True)
    for i, (filters, kernel, stride) in enumerate(convs, 1):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", name=f"conv_{i}",
                          dtype=dtype)(x)
        x = _normalized(x, cfg.batch_norm, f"conv_{i}", dtype)
        x = _activation(cfg.activation, slope, f"conv_{i}_act", dtype)(x)
        if cfg.dropout and cfg.dropout[i - 1] > 0:
            x = layers.Dropout(cfg.dropout[i - 1], name=f"conv_{i}_dropout", dtype=dtype)(x)
    x = layers.Flatten(name="flatten", dtype=dtype)(x)
    for i, units in enumerate(cfg.dense_units, 1):
        x = layers.Dense(units, name=f"dense_{i}", dtype=dtype)(x)
        x = _normalized(x, cfg.batch_norm, f"dense_{i}", dtype)
        x = _activation(cfg.activation, slope, f"dense_{i}_act", dtype)(x)
    mean = layers.Dense(latent_dim, name="mean", dtype=head)(x)
    log_var = layers.Dense(latent_dim, name="log_var", dtype=head)(x)
    return keras.Model(inputs, [mean, log_var], name="encoder")


def build_decoder(cfg: DecoderConfig, latent_dim: int, slope: float,
                  precision: str = "float32") -> keras.Model:
    """z -> pixel logits [28, 28, 1]."""
    dtype, head = _dtypes(precision)
    x = inputs = keras.Input((latent_dim,), name="z")
    for i, units in enumerate((*cfg.dense_units, math.prod(cfg.reshape)), 1):
        x = layers.Dense(units, name=f"dense_{i}", dtype=dtype)(x)
        x = _normalized(x, cfg.batch_norm, f"dense_{i}", dtype)
        x = _activation(cfg.dense_activation, slope, f"dense_{i}_act", dtype)(x)
    x = layers.Reshape(cfg.reshape, name="reshape", dtype=dtype)(x)
    convs = zip(cfg.filters, cfg.kernel_sizes, cfg.strides, strict=True)
    for i, (filters, kernel, stride) in enumerate(convs, 1):
        x = layers.Conv2DTranspose(filters, kernel, strides=stride, padding="same",
                                   name=f"deconv_{i}", dtype=dtype)(x)
        x = _normalized(x, cfg.batch_norm, f"deconv_{i}", dtype)
        x = _activation(cfg.conv_activation, slope, f"deconv_{i}_act", dtype)(x)
        if cfg.dropout and cfg.dropout[i - 1] > 0:
            x = layers.Dropout(cfg.dropout[i - 1], name=f"deconv_{i}_dropout", dtype=dtype)(x)
    if cfg.head == "dense":
        x = layers.Flatten(name="flatten", dtype=dtype)(x)
        x = layers.Dense(math.prod(IMAGE_SHAPE), name="logits", dtype=head)(x)
        x = layers.Reshape(IMAGE_SHAPE, name="image_logits", dtype=head)(x)
    else:
        if tuple(x.shape[1:3]) != IMAGE_SHAPE[:2]:
            raise ValueError(
                f"model.decoder: the Conv2DTranspose stack ends at {tuple(x.shape[1:3])}, but "
                f"head 'conv' needs {IMAGE_SHAPE[:2]}; change reshape/strides or use head 'dense'"
            )
        x = layers.Conv2D(1, cfg.head_kernel_size, padding="same", name="logits",
                          dtype=head)(x)
    return keras.Model(inputs, x, name="decoder")


def _autoregressive_head(decoder: keras.Model, channels: int, precision: str
                         ) -> tuple[keras.Model | None, LocalARHead | None]:
    """(z -> [the decoder's last hidden layer, its logits], a head of `channels` reading
    both and the image), or (None, None) for pixels independent given z (channels 0)."""
    if not channels:
        return None, None
    hidden = decoder.get_layer("logits").input
    features = keras.Model(decoder.input, [hidden, decoder.output], name="features")
    head = LocalARHead(channels, name="ar_head", dtype=_dtypes(precision)[0])
    head.build(tuple(hidden.shape))
    return features, head


@keras.saving.register_keras_serializable(package="mnist_vae")
class Sampling(layers.Layer):
    """The reparameterisation z = mean + exp(log_var / 2) * eps, eps ~ N(0, I)."""

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, mean, log_var):
        eps = keras.random.normal(ops.shape(mean), dtype=mean.dtype, seed=self.seed_generator)
        return mean + ops.exp(0.5 * log_var) * eps

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="mnist_vae")
class MixturePrior(layers.Layer):
    """The prior's parameters as non-trainable weights, so `.keras` files carry them.

    It starts as N(0, I) (every component the standard normal), the prior training uses;
    `assign` replaces it with a fitted mixture.
    """

    def __init__(self, components: int = 1, latent_dim: int = 2, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.components = components
        self.latent_dim = latent_dim
        k, d = components, latent_dim
        self.log_weights = self.add_weight((k,), initializer=keras.initializers.Constant(
            -math.log(k)), trainable=False, name="log_weights")
        self.means = self.add_weight((k, d), initializer="zeros", trainable=False, name="means")
        self.scale_tril = self.add_weight((k, d, d), initializer=lambda shape, dtype=None: ops.tile(
            ops.eye(d, dtype=dtype)[None], (k, 1, 1)), trainable=False, name="scale_tril")
        self.built = True

    def distribution(self) -> GaussianMixture:
        return GaussianMixture(*(np.asarray(w.numpy(), np.float64) for w in
                                 (self.log_weights, self.means, self.scale_tril)))

    def assign(self, mixture: GaussianMixture) -> None:
        if (mixture.components, mixture.dim) != (self.components, self.latent_dim):
            raise ValueError(f"prior: expected {self.components} components of dimension "
                             f"{self.latent_dim}, got {mixture.components} of {mixture.dim}")
        self.log_weights.assign(mixture.log_weights.astype("float32"))
        self.means.assign(mixture.means.astype("float32"))
        self.scale_tril.assign(mixture.scale_tril.astype("float32"))

    def get_config(self):
        return {**super().get_config(), "components": self.components,
                "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package="mnist_vae")
class DigitPrior(layers.Layer):
    """p(z | digit): one mixture per digit as non-trainable weights, saved in `.keras` files.

    It starts with every digit's mixture N(0, I); `assign` installs fitted ones.
    """

    def __init__(self, components: int = 1, latent_dim: int = 2, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.components = components
        self.latent_dim = latent_dim
        c, k, d = DIGITS, components, latent_dim
        self.log_weights = self.add_weight((c, k), initializer=keras.initializers.Constant(
            -math.log(k)), trainable=False, name="log_weights")
        self.means = self.add_weight((c, k, d), initializer="zeros", trainable=False,
                                     name="means")
        self.scale_tril = self.add_weight(
            (c, k, d, d), initializer=lambda shape, dtype=None: ops.tile(
                ops.eye(d, dtype=dtype)[None, None], (c, k, 1, 1)),
            trainable=False, name="scale_tril")
        self.built = True

    def distribution(self, digit: int) -> GaussianMixture:
        return GaussianMixture(*(np.asarray(w.numpy()[digit], np.float64) for w in
                                 (self.log_weights, self.means, self.scale_tril)))

    def assign(self, mixtures: list[GaussianMixture]) -> None:
        shapes = {(m.components, m.dim) for m in mixtures}
        if len(mixtures) != DIGITS or shapes != {(self.components, self.latent_dim)}:
            raise ValueError(f"digit prior: expected {DIGITS} mixtures of {self.components} "
                             f"components of dimension {self.latent_dim}, got "
                             f"{len(mixtures)} of {sorted(shapes)}")
        for name in ("log_weights", "means", "scale_tril"):
            stacked = np.stack([getattr(m, name) for m in mixtures]).astype("float32")
            getattr(self, name).assign(stacked)

    def get_config(self):
        return {**super().get_config(), "components": self.components,
                "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package="mnist_vae")
class VAE(keras.Model):
    """A VAE whose architecture is one `ModelConfig`; it owns its loss in train/test_step.

    Metrics (per image, nats): `reconstruction`, `kl`, and `loss` = reconstruction + beta * kl
    (the negative ELBO at full KL weight, also during warm-up, so epochs stay comparable).
    """

    def __init__(self, model_config: ModelConfig | dict | None = None,
                 precision: str = "float32", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model_config, ModelConfig):
            model_config = parse_section(ModelConfig, model_config, "model")
        self.model_config = model_config
        self.latent_dim = model_config.latent_dim
        self.likelihood = model_config.likelihood
        slope = model_config.leaky_relu_slope
        self.encoder = build_encoder(model_config.encoder, self.latent_dim, slope, precision)
        self.decoder = build_decoder(model_config.decoder, self.latent_dim, slope, precision)
        self.features, self.ar_head = _autoregressive_head(
            self.decoder, model_config.decoder.autoregressive_channels, precision)
        self.sampling = Sampling(name="sampling")
        components = model_config.prior.components if model_config.prior.kind == "mixture" else 1
        self.prior = MixturePrior(components, self.latent_dim, name="prior")
        self.digit_prior = (DigitPrior(model_config.prior.components_per_digit, self.latent_dim,
                                       name="digit_prior")
                            if model_config.prior.conditional else None)
        self.beta = 1.0
        self.kl_warmup_steps = 0
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.built = True  # the sub-models are built above

    # --- the public API -----------------------------------------------------------------

    def call(self, x, training=False):
        """x -> (logits of x's reconstruction through a sampled z, mean, log_var)."""
        mean, log_var = self.encoder(x, training=training)
        z = self.sampling(mean, log_var)
        return self.image_logits(z, x, training), mean, log_var

    @property
    def is_autoregressive(self) -> bool:
        """Whether a pixel's logit also reads the pixels before it, not only z."""
        return self.ar_head is not None

    def image_logits(self, z, x, training=False):
        """Logits of p(x | z) for latents z [N, latent_dim] and images x [N, 28, 28, 1]: each
        pixel's given z and, for an autoregressive decoder, the pixels of x before it."""
        if self.ar_head is None:
            return self.decoder(z, training=training)
        hidden, base = self.features(z, training=training)
        return self.ar_head(hidden, base, x)

    def encode(self, x):
        """Images [N, 28, 28, 1] -> (mean, log_var) of q(z | x), each [N, latent_dim]."""
        parts = [self.encoder(chunk, training=False) for chunk in _chunks(x)]
        return ops.concatenate([m for m, _ in parts]), ops.concatenate([v for _, v in parts])

    def decode_logits(self, z):
        """Latents [N, latent_dim] -> pixel logits [N, 28, 28, 1], pixels independent given z."""
        if self.ar_head is not None:
            raise ValueError("an autoregressive decoder's logits depend on the image: score "
                             "images with image_logits(z, x), or draw them with decode(z)")
        return ops.concatenate([self.decoder(c, training=False) for c in _chunks(z)])

    def decode(self, z, seed: int = 0) -> np.ndarray:
        """Latents -> pixel probabilities (Bernoulli) or means (Gaussian) in [0, 1]. An
        autoregressive decoder draws one image per latent, pixel by pixel, and gives each
        pixel's probability given the pixels drawn before it; latent i's image depends only
        on `seed` and i, so a prefix of z draws a prefix of the images, chunked or not."""
        if self.ar_head is None:
            return np.asarray(ops.sigmoid(self.decode_logits(z)))
        rng, images = np.random.default_rng(seed), []
        for chunk in _chunks(z):  # consecutive draws of a generator are one draw, cut
            hidden, base = self.features(chunk, training=False)
            images.append(self.ar_head.sample(hidden, base, rng.random(tuple(base.shape)[:3]))[1])
        return np.concatenate(images)

    def sample(self, n: int, seed: int, digit: int | None = None):
        """n images decoded from z ~ p(z), or from z ~ p(z | digit) to draw that digit;
        the same seed gives the same images."""
        z = self.prior_distribution(digit).sample(n, np.random.default_rng(seed))
        return self.decode(z.astype("float32"), seed)

    def digit_walk(self, start: int, end: int, steps: int, seed: int):
        """`steps` images on the straight line from a drawn `start` digit's code to a drawn
        `end` digit's code (both drawn with `seed`)."""
        rng = np.random.default_rng(seed)
        a, b = (self.prior_distribution(d).sample(1, rng)[0] for d in (start, end))
        t = np.linspace(0.0, 1.0, steps)[:, None]
        return self.decode(((1 - t) * a + t * b).astype("float32"), seed)

    @property
    def draws_digits(self) -> bool:
        """Whether `sample(..., digit=d)` works: the model carries p(z | digit)."""
        return self.digit_prior is not None

    def prior_distribution(self, digit: int | None = None) -> GaussianMixture:
        """p(z) (N(0, I) until `set_prior` installs a fitted mixture), or p(z | digit)."""
        if digit is None:
            return self.prior.distribution()
        digit = check_digit(digit)
        if self.digit_prior is None:
            raise ValueError("this model has no per-digit prior, so it cannot draw a chosen "
                             "digit; train it with model.prior.conditional: true")
        return self.digit_prior.distribution(digit)

    def set_prior(self, mixture: GaussianMixture) -> None:
        """Replace p(z) (it is saved with the model)."""
        self.prior.assign(mixture)

    def set_digit_prior(self, mixtures: list[GaussianMixture]) -> None:
        """Install p(z | digit) for digits 0-9 (saved with the model)."""
        if self.digit_prior is None:
            raise ValueError("this model has no per-digit prior: build it with "
                             "model.prior.conditional: true")
        self.digit_prior.assign(mixtures)

    def reconstruct(self, x):
        """Images -> decode(mean of q(z | x)): the deterministic reconstruction."""
        mean, _ = self.encode(x)
        return self.decode(mean)

    # --- training -------------------------------------------------------------------------

    def compile(self, optimizer="adam", *, beta: float = 1.0, kl_warmup_steps: int = 0,
                **kwargs):
        """Keras compile, plus the KL weight beta and its linear warm-up length in steps."""
        super().compile(optimizer=optimizer, **kwargs)
        self.beta = float(beta)
        self.kl_warmup_steps = int(kl_warmup_steps)

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def kl_weight(self):
        """beta, ramped linearly over the first kl_warmup_steps optimizer steps."""
        if self.kl_warmup_steps <= 0:
            return ops.convert_to_tensor(self.beta)
        step = ops.cast(self.optimizer.iterations, "float32") + 1.0
        return self.beta * ops.minimum(1.0, step / self.kl_warmup_steps)

    def _loss_terms(self, x, training):
        logits, mean, log_var = self(x, training=training)
        reconstruction = ops.mean(reconstruction_nll(x, logits, self.likelihood))
        return reconstruction, ops.mean(kl_to_standard_normal(mean, log_var))

    def _track(self, reconstruction, kl):
        self.loss_tracker.update_state(reconstruction + self.beta * kl)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        # tf.distribute hook: identity in one process
        return {m.name: distribute.reducible_metric(m.result()) for m in self.metrics}

    def train_step(self, data):
        with tf.GradientTape() as tape:
            reconstruction, kl = self._loss_terms(data, training=True)
            objective = reconstruction + self.kl_weight() * kl
            objective = distribute.replica_share(objective)  # tf.distribute hook (see _track)
        grads = tape.gradient(objective, self.trainable_weights)
        self.optimizer.apply(grads, self.trainable_weights)
        return self._track(reconstruction, kl)

    def test_step(self, data):
        return self._track(*self._loss_terms(data, training=False))

    # --- serialisation --------------------------------------------------------------------

    def get_config(self):  # no precision: a saved model loads in float32, whatever trained it
        return {"name": self.name, "trainable": self.trainable,
                "model_config": dataclasses.asdict(self.model_config)}

    @classmethod
    def from_config(cls, config):
        prior = config.get("model_config", {}).get("prior", {})
        prior.setdefault("conditional", False)  # files saved before p(z | digit) existed
        return cls(**config)


def _chunks(x):
    """Split a batch into pieces of at most _CHUNK rows (float32 tensors)."""
    x = ops.convert_to_tensor(x, "float32")
    n = int(x.shape[0])
    return [x[i:i + _CHUNK] for i in range(0, max(n, 1), _CHUNK)]


def build_vae(model_cfg: ModelConfig, precision: str = "float32") -> VAE:
    """A fresh, built VAE with the architecture `model_cfg` describes, computing in
    `precision` (float32 or mixed_bfloat16)."""
    return VAE(model_cfg, precision, name="vae")


class ModelFileError(ValueError):
    """A model file that is there but cannot be loaded; the message says how to rebuild it."""


_REBUILD = ("rebuild it with `dvc repro -f train`, or fetch it with `dvc pull` when a DVC "
            "remote holds it")


def load_vae(path: str | Path) -> VAE:
    """Load a VAE saved with `model.save(path)`; importing this module registers the classes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model; run `dvc repro train` first")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ModelFileError(f"{path}: corrupt or truncated ({path.stat().st_size:,} bytes, "
                             f"not a whole .keras zip archive); {_REBUILD}")
    try:
        model = keras.models.load_model(path, compile=False)
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, zlib.error) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ModelFileError(f"{path}: corrupt or incompatible, Keras cannot load it "
                             f"({reason}); {_REBUILD}") from err
    if not isinstance(model, VAE):
        raise TypeError(f"{path}: holds a {type(model).__name__}, not a mnist_vae VAE")
    return model


def count_params(model: keras.Model) -> int:
    """Number of trainable scalars."""
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))
