"""The local autoregressive head: causal, normalised, drawn fast and exactly, saved whole."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from benchmarks.ar_sampling import drawn_by_the_whole_head, with_random_residual
from mnist_vae.autoregressive import LocalARHead, causal_mask

HEIGHT, WIDTH, HIDDEN = 8, 6, 5  # not square, so rows and columns cannot be mixed up


def _head(seed: int = 1, channels: int = 4) -> LocalARHead:
    """A built head whose zero-initialised residual has random weights, so its context counts."""
    keras.utils.set_random_seed(seed)
    head = LocalARHead(channels, kernel_size=5)
    head.build((None, HEIGHT, WIDTH, HIDDEN))
    return with_random_residual(head, seed)


def _inputs(n: int, seed: int = 2):
    rng = np.random.default_rng(seed)
    hidden = rng.normal(size=(n, HEIGHT, WIDTH, HIDDEN)).astype("float32")
    base = rng.normal(size=(n, HEIGHT, WIDTH, 1)).astype("float32")
    x = (rng.random((n, HEIGHT, WIDTH, 1)) < 0.4).astype("float32")
    return hidden, base, x


def test_the_mask_reads_the_rows_above_and_the_left_of_its_own_row():
    mask = causal_mask(3, 3)[..., 0, 0]
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])


def test_each_pixels_logit_reads_only_the_pixels_before_it_in_raster_order():
    head = _head()
    hidden, base, x = _inputs(1)
    pixels = HEIGHT * WIDTH
    # image k: x with every pixel from k on redrawn; pixel k's logit must not move
    after = np.tile(x.reshape(1, pixels), (pixels, 1))
    later = np.arange(pixels)[None, :] >= np.arange(pixels)[:, None]
    after[later] = np.random.default_rng(3).random(later.sum()) < 0.5
    tile = lambda t: np.repeat(t, pixels, axis=0)  # noqa: E731
    logits = np.asarray(head(tile(hidden), tile(base), after.reshape(-1, HEIGHT, WIDTH, 1)))
    reference = np.asarray(head(hidden, base, x)).reshape(pixels)
    np.testing.assert_allclose(np.diagonal(logits.reshape(pixels, pixels)), reference,
                               atol=1e-5)
    # and it does read the pixels before it: its left neighbour and the one above
    pixel = 3 * WIDTH + 2
    for earlier in (pixel - 1, pixel - WIDTH):
        flipped = x.reshape(pixels).copy()
        flipped[earlier] = 1 - flipped[earlier]
        moved = np.asarray(head(hidden, base, flipped.reshape(1, HEIGHT, WIDTH, 1)))
        assert moved.reshape(pixels)[pixel] != pytest.approx(reference[pixel], abs=1e-6)


def test_a_new_head_passes_the_decoders_logits_through_unchanged():
    head = LocalARHead(4)
    head.build((None, HEIGHT, WIDTH, HIDDEN))
    hidden, base, x = _inputs(3)
    np.testing.assert_array_equal(np.asarray(head(hidden, base, x)), base)


def _uniforms(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, HEIGHT, WIDTH))


def test_the_fast_sampler_draws_what_the_whole_head_draws_with_the_same_uniforms():
    head = _head()
    hidden, base, _ = _inputs(16)
    images, probs = head.sample(hidden, base, _uniforms(16, 5))
    expected_images, expected_probs = drawn_by_the_whole_head(head, hidden, base,
                                                               _uniforms(16, 5))
    np.testing.assert_array_equal(images, expected_images)
    np.testing.assert_allclose(probs, expected_probs, atol=1e-5)
    assert 0 < images.mean() < 1  # both values are drawn, so the check means something


def test_the_probabilities_it_draws_with_score_the_drawn_image_as_the_head_does():
    head = _head()
    hidden, base, _ = _inputs(4)
    images, probs = head.sample(hidden, base, _uniforms(4, 6))
    logits = np.asarray(head(hidden, base, images))
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-5)


def test_an_image_drawn_depends_on_its_own_uniforms_not_on_the_others_drawn_with_it():
    head = _head()
    hidden, base, _ = _inputs(6)
    uniforms = _uniforms(6, 7)
    images, probs = head.sample(hidden, base, uniforms)
    alone = head.sample(hidden[3:4], base[3:4], uniforms[3:4])
    np.testing.assert_array_equal(alone[0], images[3:4])
    np.testing.assert_allclose(alone[1], probs[3:4], atol=1e-6)


def test_uniforms_not_one_per_pixel_are_refused_by_shape():
    hidden, base, _ = _inputs(2)
    with pytest.raises(ValueError, match=r"uniforms of shape \(2, 6, 8\): give one per pixel "
                                         r"drawn, shape \(2, 8, 6\)"):
        _head().sample(hidden, base, np.zeros((2, WIDTH, HEIGHT)))


def test_the_head_saves_and_loads_as_part_of_a_keras_model(tmp_path):
    head = _head()
    inputs = [keras.Input((HEIGHT, WIDTH, HIDDEN)), keras.Input((HEIGHT, WIDTH, 1)),
              keras.Input((HEIGHT, WIDTH, 1))]
    model = keras.Model(inputs, head(*inputs))
    model.save(tmp_path / "head.keras")
    loaded = keras.models.load_model(tmp_path / "head.keras", compile=False)
    arrays = _inputs(2)
    np.testing.assert_allclose(np.asarray(loaded(list(arrays))), np.asarray(model(list(arrays))),
                               atol=1e-6)
    restored = loaded.layers[-1]
    assert (restored.channels, restored.kernel_size) == (4, 5)
