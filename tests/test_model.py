"""The VAE's public API, its serialisation, and the article's architecture layer by layer."""

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from mlflow_helpers import tiny_autoregressive_vae, tiny_params
from mnist_vae import model as model_module
from mnist_vae.config import (
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    PriorConfig,
    parse_section,
)
from mnist_vae.model import VAE, ModelFileError, build_vae, load_vae
from mnist_vae.prior import GaussianMixture

SRC = Path(__file__).resolve().parents[1] / "src"

TINY = tiny_params().model


@pytest.fixture(scope="module")
def vae():
    return build_vae(TINY)


def _images(n=5, seed=0):
    return np.random.default_rng(seed).random((n, 28, 28, 1)).astype("float32")


def test_api_shapes(vae):
    x = _images()
    mean, log_var = vae.encode(x)
    assert tuple(mean.shape) == tuple(log_var.shape) == (5, 3)
    assert tuple(vae.decode_logits(mean).shape) == (5, 28, 28, 1)
    assert tuple(vae.decode(mean).shape) == (5, 28, 28, 1)
    assert tuple(vae.reconstruct(x).shape) == (5, 28, 28, 1)
    assert tuple(vae.sample(7, seed=1).shape) == (7, 28, 28, 1)
    logits, mean2, log_var2 = vae(x)
    assert tuple(logits.shape) == (5, 28, 28, 1) and tuple(mean2.shape) == (5, 3)
    assert vae.latent_dim == 3 and vae.likelihood == "bernoulli"


def test_decode_is_sigmoid_of_logits_and_reconstruct_uses_the_mean(vae):
    x = _images()
    mean, _ = vae.encode(x)
    logits = np.asarray(vae.decode_logits(mean))
    np.testing.assert_allclose(np.asarray(vae.decode(mean)), 1 / (1 + np.exp(-logits)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(vae.reconstruct(x)), np.asarray(vae.decode(mean)),
                               rtol=1e-6)
    probs = np.asarray(vae.decode(mean))
    assert probs.min() >= 0 and probs.max() <= 1


def test_encode_handles_more_images_than_one_chunk(vae):
    x = _images(1003)
    mean, _ = vae.encode(x)
    assert tuple(mean.shape) == (1003, 3)
    np.testing.assert_allclose(np.asarray(mean[1001:]), np.asarray(vae.encode(x[1001:])[0]),
                               rtol=1e-5, atol=1e-6)


def test_sample_is_deterministic_per_seed(vae):
    a, b, c = (np.asarray(vae.sample(4, seed=s)) for s in (7, 7, 8))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_save_then_load_in_a_fresh_process_gives_identical_outputs(vae, tmp_path):
    from mnist_vae.training import save_model  # the train stage's way: no save time inside

    path = tmp_path / "vae.keras"
    save_model(vae, path)
    x = _images(4, seed=3)
    np.save(tmp_path / "x.npy", x)
    expected = {"mean": np.asarray(vae.encode(x)[0]), "recon": np.asarray(vae.reconstruct(x)),
                "sample": np.asarray(vae.sample(3, seed=5))}
    script = textwrap.dedent(f"""
        import numpy as np
        from mnist_vae.model import load_vae
        vae = load_vae({str(path)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        np.savez({str(tmp_path / "out.npz")!r}, mean=np.asarray(vae.encode(x)[0]),
                 recon=np.asarray(vae.reconstruct(x)), sample=np.asarray(vae.sample(3, seed=5)),
                 latent_dim=vae.latent_dim, likelihood=vae.likelihood, cls=type(vae).__name__)
    """)
    env = {"PYTHONPATH": str(SRC), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=tmp_path)
    with np.load(tmp_path / "out.npz") as out:
        for key, value in expected.items():
            np.testing.assert_array_equal(out[key], value, err_msg=key)
        assert int(out["latent_dim"]) == 3 and str(out["likelihood"]) == "bernoulli"
        assert str(out["cls"]) == "VAE"


def test_get_config_round_trips(vae):
    clone = VAE.from_config(vae.get_config())
    assert clone.model_config == TINY


def test_load_vae_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro train"):
        load_vae(tmp_path / "nope.keras")


def test_conv_head_that_misses_28x28_names_the_fix():
    cfg = ModelConfig(decoder=DecoderConfig(filters=(8,), kernel_sizes=(3,), strides=(2,)))
    with pytest.raises(ValueError, match="head 'conv' needs"):
        build_vae(cfg)


def _shapes(model):
    return [(layer.__class__.__name__, tuple(layer.output.shape[1:])) for layer in model.layers
            if layer.__class__.__name__ not in ("InputLayer",)]


def test_article_config_builds_exactly_the_articles_layers(repo_root):
    overlay = yaml.safe_load((repo_root / "configs" / "seed-article.yaml").read_text())
    vae = build_vae(parse_section(ModelConfig, overlay["model"], "model"))
    assert vae.latent_dim == 8 and vae.likelihood == "gaussian"
    assert _shapes(vae.encoder) == [
        ("Conv2D", (14, 14, 64)), ("LeakyReLU", (14, 14, 64)), ("Dropout", (14, 14, 64)),
        ("Conv2D", (7, 7, 64)), ("LeakyReLU", (7, 7, 64)), ("Dropout", (7, 7, 64)),
        ("Conv2D", (7, 7, 64)), ("LeakyReLU", (7, 7, 64)), ("Dropout", (7, 7, 64)),
        ("Flatten", (3136,)), ("Dense", (8,)), ("Dense", (8,)),
    ]
    assert _shapes(vae.decoder) == [
        ("Dense", (24,)), ("LeakyReLU", (24,)), ("Dense", (49,)), ("LeakyReLU", (49,)),
        ("Reshape", (7, 7, 1)),
        ("Conv2DTranspose", (14, 14, 64)), ("Activation", (14, 14, 64)), ("Dropout", (14, 14, 64)),
        ("Conv2DTranspose", (14, 14, 64)), ("Activation", (14, 14, 64)), ("Dropout", (14, 14, 64)),
        ("Conv2DTranspose", (14, 14, 64)), ("Activation", (14, 14, 64)),
        ("Flatten", (12544,)), ("Dense", (784,)), ("Reshape", (28, 28, 1)),
    ]
    convs = [layer for layer in vae.encoder.layers if layer.__class__.__name__ == "Conv2D"]
    assert [(c.kernel_size, c.strides, c.padding) for c in convs] == [
        ((4, 4), (2, 2), "same"), ((4, 4), (2, 2), "same"), ((4, 4), (1, 1), "same")]
    assert all(layer.negative_slope == pytest.approx(0.3) for layer in vae.encoder.layers
               if layer.__class__.__name__ == "LeakyReLU")
    assert all(layer.rate == pytest.approx(0.2) for layer in vae.encoder.layers
               if layer.__class__.__name__ == "Dropout")
    deconv_acts = [layer.get_config()["activation"] for layer in vae.decoder.layers
                   if layer.__class__.__name__ == "Activation"]
    assert deconv_acts == ["relu", "relu", "relu"]


def test_article_config_pins_every_model_key(repo_root):
    """The article's model must not change when params.yaml's defaults do."""
    import dataclasses

    overlay = yaml.safe_load((repo_root / "configs" / "seed-article.yaml").read_text())["model"]
    assert set(overlay) == {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(overlay["encoder"]) == {f.name for f in dataclasses.fields(EncoderConfig)}
    unused_by_dense_head = {"head_kernel_size"}
    assert set(overlay["decoder"]) == {f.name for f in dataclasses.fields(DecoderConfig)
                                       } - unused_by_dense_head


def test_batch_norm_adds_normalisation_after_each_layer_and_round_trips(tmp_path):
    import dataclasses

    cfg = dataclasses.replace(
        TINY, encoder=dataclasses.replace(TINY.encoder, batch_norm=True),
        decoder=dataclasses.replace(TINY.decoder, batch_norm=True))
    vae = build_vae(cfg)
    kinds = [layer.__class__.__name__ for layer in vae.encoder.layers + vae.decoder.layers]
    assert kinds.count("BatchNormalization") == 2 + 3  # 2 convs; 1 dense + 2 deconvs
    path = tmp_path / "bn.keras"
    vae.save(path)
    x = _images(3)
    np.testing.assert_array_equal(np.asarray(load_vae(path).reconstruct(x)),
                                  np.asarray(vae.reconstruct(x)))


def _far_mixture(dim: int) -> GaussianMixture:
    """Two narrow components far from N(0, I)'s mass, weights 1/4 and 3/4."""
    means = np.stack([np.full(dim, 5.0), np.full(dim, -5.0)])
    return GaussianMixture(np.log([0.25, 0.75]), means, np.tile(0.1 * np.eye(dim), (2, 1, 1)))


def test_prior_starts_as_n01_and_a_fitted_one_is_saved_and_sampled(tmp_path):
    model = build_vae(dataclasses.replace(TINY, prior=PriorConfig(kind="mixture", components=2)))
    assert model.prior_distribution().is_standard  # what training assumes
    model.set_prior(_far_mixture(3))
    model.save(tmp_path / "m.keras")
    loaded = load_vae(tmp_path / "m.keras")
    prior = loaded.prior_distribution()
    np.testing.assert_allclose(prior.means, _far_mixture(3).means)
    np.testing.assert_allclose(np.exp(prior.log_weights), [0.25, 0.75], rtol=1e-6)
    z = prior.sample(6, np.random.default_rng(4))
    np.testing.assert_allclose(np.asarray(loaded.sample(6, seed=4)),
                               np.asarray(loaded.decode(z.astype("float32"))), rtol=1e-6)
    assert np.all(np.abs(np.abs(z) - 5.0) < 1.0)  # drawn from the mixture, not N(0, I)


def test_a_prior_of_the_wrong_shape_is_refused():
    model = build_vae(dataclasses.replace(TINY, prior=PriorConfig(kind="mixture", components=3)))
    with pytest.raises(ValueError, match="expected 3 components of dimension 3, got 2 of 3"):
        model.set_prior(_far_mixture(3))
    assert model.prior_distribution().is_standard


def test_standard_prior_has_one_n01_component():
    model = build_vae(dataclasses.replace(TINY, prior=PriorConfig(kind="standard")))
    prior = model.prior_distribution()
    assert prior.components == 1 and prior.is_standard


# --- a damaged model file says so, and how to rebuild it ---------------------------------------

@pytest.mark.parametrize("keep", [0, 100, 0.5, -1])
def test_a_truncated_model_file_is_reported_as_corrupt_not_missing(tmp_path, tiny_vae_file,
                                                                    keep):
    whole = tiny_vae_file.read_bytes()
    path = tmp_path / "vae.keras"
    path.write_bytes(whole[:int(len(whole) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(ModelFileError) as err:
        load_vae(path)
    message = str(err.value)
    assert message.startswith(f"{path}: corrupt or truncated (")
    assert "dvc repro -f train" in message and "dvc pull" in message
    assert "File not found" not in message and "\n" not in message


def test_a_model_file_with_a_damaged_member_is_reported_as_corrupt(tmp_path, tiny_vae_file):
    import zipfile

    path = tmp_path / "vae.keras"
    path.write_bytes(tiny_vae_file.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = max(archive.infolist(), key=lambda i: i.compress_size)
        start = member.header_offset + 30 + len(member.filename) + len(member.extra)
    raw = bytearray(path.read_bytes())
    for i in range(start + 16, start + 48):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError) as err:
        load_vae(path)
    assert str(err.value).startswith(f"{path}: corrupt or incompatible, Keras cannot load it (")
    assert "dvc repro -f train" in str(err.value)


# --- p(z | digit) ----------------------------------------------------------------------------

CONDITIONAL = dataclasses.replace(TINY, prior=PriorConfig(kind="mixture", components=2,
                                                          conditional=True,
                                                          components_per_digit=2))


def _digit_mixtures(dim: int) -> list[GaussianMixture]:
    """Digit d: two narrow components at +-(d + 1) * 3 in every coordinate."""
    return [GaussianMixture(np.log([0.5, 0.5]), np.stack([np.full(dim, 3.0 * (d + 1)),
                                                          np.full(dim, -3.0 * (d + 1))]),
                            np.tile(0.01 * np.eye(dim), (2, 1, 1))) for d in range(10)]


def test_a_digit_prior_is_saved_and_draws_the_digit_asked_for(tmp_path):
    model = build_vae(CONDITIONAL)
    model.set_prior(_far_mixture(3))
    model.set_digit_prior(_digit_mixtures(3))
    model.save(tmp_path / "m.keras")
    loaded = load_vae(tmp_path / "m.keras")
    assert loaded.draws_digits
    for digit in (0, 7):
        z = loaded.prior_distribution(digit).sample(5, np.random.default_rng(2))
        np.testing.assert_allclose(np.abs(z), 3.0 * (digit + 1), atol=0.5)
        np.testing.assert_allclose(np.asarray(loaded.sample(5, seed=2, digit=digit)),
                                   np.asarray(loaded.decode(z.astype("float32"))), rtol=1e-6)
    # digit=None is the unconditional prior, exactly as before
    z = _far_mixture(3).sample(4, np.random.default_rng(3))
    np.testing.assert_allclose(np.asarray(loaded.sample(4, seed=3)),
                               np.asarray(loaded.decode(z.astype("float32"))), rtol=1e-6)


def test_a_walk_goes_from_one_drawn_digit_to_another():
    model = build_vae(CONDITIONAL)
    model.set_digit_prior(_digit_mixtures(3))
    walk = np.asarray(model.digit_walk(1, 8, steps=5, seed=0))
    rng = np.random.default_rng(0)
    a, b = (model.prior_distribution(d).sample(1, rng)[0] for d in (1, 8))
    assert walk.shape == (5, 28, 28, 1)
    np.testing.assert_allclose(walk[[0, -1]], np.asarray(model.decode(np.stack([a, b]).astype(
        "float32"))), rtol=1e-5, atol=1e-6)


def test_asking_for_a_digit_without_a_digit_prior_says_how_to_get_one():
    vae = build_vae(dataclasses.replace(TINY, prior=PriorConfig(conditional=False)))
    assert not vae.draws_digits
    with pytest.raises(ValueError, match="no per-digit prior.*model.prior.conditional: true"):
        vae.sample(2, seed=0, digit=3)


@pytest.mark.parametrize("bad", [10, -1, "x", 2.5, True])
def test_a_bad_digit_is_refused(bad):
    with pytest.raises(ValueError, match="digit must be"):
        build_vae(CONDITIONAL).sample(1, seed=0, digit=bad)


def test_a_digit_prior_of_the_wrong_shape_is_refused():
    model = build_vae(CONDITIONAL)
    with pytest.raises(ValueError, match="expected 10 mixtures of 2 components of dimension 3"):
        model.set_digit_prior(_digit_mixtures(3)[:9])


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mixed_bfloat16_computes_hidden_layers_in_bf16_and_heads_and_losses_in_float32(
        batch_norm):
    cfg = dataclasses.replace(
        TINY, encoder=dataclasses.replace(TINY.encoder, batch_norm=batch_norm),
        decoder=dataclasses.replace(TINY.decoder, batch_norm=batch_norm))
    vae = build_vae(cfg, "mixed_bfloat16")
    heads = {"mean", "log_var", "logits", "image_logits"}
    for layer in vae.encoder.layers[1:] + vae.decoder.layers[1:]:
        expected = "float32" if layer.name in heads else "bfloat16"
        assert (layer.compute_dtype, layer.variable_dtype) == (expected, "float32"), layer.name
    logits, mean, log_var = vae(np.random.default_rng(0).random((4, 28, 28, 1), "float32"))
    assert {str(t.dtype) for t in (logits, mean, log_var)} == {"<dtype: 'float32'>"}
    vae.compile(optimizer="adam")
    metrics = vae.test_step(np.zeros((4, 28, 28, 1), "float32"))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    # the same weights in a float32 model (what is saved) give nearly the same logits
    plain = build_vae(cfg)
    plain.set_weights(vae.get_weights())
    z = np.random.default_rng(1).standard_normal((4, cfg.latent_dim)).astype("float32")
    np.testing.assert_allclose(np.asarray(plain.decode(z)), np.asarray(vae.decode(z)), atol=0.05)


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision: must be one of float32, mixed_bfloat16"):
        build_vae(TINY, "float16")


# --- an autoregressive decoder ----------------------------------------------------------

@pytest.fixture(scope="module")
def ar_vae():
    return tiny_autoregressive_vae(seed=2)


def _binary(n=3, seed=0):
    return (np.random.default_rng(seed).random((n, 28, 28, 1)) < 0.3).astype("float32")


def test_only_an_autoregressive_decoders_logits_read_the_image(vae, ar_vae):
    z = np.random.default_rng(3).standard_normal((1, 3)).astype("float32")
    x = _binary(1)
    flipped = x.copy()
    flipped[0, 10, 10, 0] = 1 - flipped[0, 10, 10, 0]
    for model, reads in ((vae, False), (ar_vae, True)):
        before, after = (np.asarray(model.image_logits(z, image)) for image in (x, flipped))
        assert bool(before[0, 10, 11, 0] != after[0, 10, 11, 0]) is reads  # the next pixel
        np.testing.assert_array_equal(before[0, :10], after[0, :10])  # the rows above it
    assert not vae.is_autoregressive and ar_vae.is_autoregressive
    np.testing.assert_array_equal(np.asarray(vae.image_logits(z, x)),
                                  np.asarray(vae.decode_logits(z)))


def test_an_autoregressive_decoder_draws_the_same_images_for_the_same_seed(ar_vae):
    z = np.random.default_rng(4).standard_normal((3, 3)).astype("float32")
    first, again, other = (np.asarray(ar_vae.decode(z, seed)) for seed in (0, 0, 1))
    assert first.shape == (3, 28, 28, 1) and first.min() >= 0 and first.max() <= 1
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    np.testing.assert_array_equal(np.asarray(ar_vae.sample(2, seed=5)),
                                  np.asarray(ar_vae.sample(2, seed=5)))
    with pytest.raises(ValueError, match="logits depend on the image: score images with "
                                         "image_logits"):
        ar_vae.decode_logits(z)


def test_an_autoregressive_decoders_image_for_a_latent_does_not_depend_on_the_batch(
        ar_vae, monkeypatch):
    z = np.random.default_rng(6).standard_normal((5, 3)).astype("float32")
    whole = ar_vae.decode(z, seed=3)  # a pixel drawn otherwise would move the later ones
    np.testing.assert_allclose(ar_vae.decode(z[:2], seed=3), whole[:2], atol=1e-6)
    monkeypatch.setattr(model_module, "_CHUNK", 2)  # drawn in pieces of 2, 2 and 1
    np.testing.assert_allclose(ar_vae.decode(z, seed=3), whole, atol=1e-6)
    assert not np.allclose(ar_vae.decode(z, seed=4), whole, atol=1e-6)


def test_an_autoregressive_vae_trains_saves_and_loads_whole(ar_vae, tmp_path):
    ar_vae.compile(optimizer="adam")
    metrics = ar_vae.test_step(_binary(4))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    ar_vae.save(tmp_path / "ar.keras")
    loaded = load_vae(tmp_path / "ar.keras")
    z, x = np.ones((2, 3), "float32"), _binary(2)
    assert loaded.is_autoregressive
    np.testing.assert_allclose(np.asarray(loaded.image_logits(z, x)),
                               np.asarray(ar_vae.image_logits(z, x)), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(loaded.decode(z)), np.asarray(ar_vae.decode(z)))


def test_a_mixed_bfloat16_autoregressive_decoder_keeps_its_logits_float32(ar_vae):
    vae = build_vae(ar_vae.model_config, "mixed_bfloat16")
    assert vae.ar_head.mix.compute_dtype == "bfloat16"
    assert vae.ar_head.out.compute_dtype == "float32"
    logits, _, _ = vae(_binary(2))
    assert str(logits.dtype) == "<dtype: 'float32'>"
