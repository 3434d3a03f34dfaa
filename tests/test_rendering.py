"""The PNG grids: expected pixel sizes, tiles where they belong, identical bytes on a rerun."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from mnist_vae import rendering as rd
from mnist_vae.config import RenderConfig
from toy_models import BandDigitVAE, ToyImageVAE

CFG = RenderConfig()  # scale 2, gutter 2: a tile is 56 px, a grid of n tiles 58 n + 2 px


def _test_set(n=200, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.random((n, 28, 28, 1)).astype(np.float32) ** 4
    images[:, :14] *= rng.random((n, 1, 1, 1)).astype(np.float32)
    return images, labels


def _tile(image: Image.Image, x: int, y: int, scale: int = 2) -> np.ndarray:
    """The 28x28 content of the tile whose top-left screen pixel is (x, y)."""
    return np.asarray(image)[y : y + 28 * scale : scale, x : x + 28 * scale : scale]


def test_compose_lays_out_scaled_tiles_between_gutters():
    tiles = np.random.default_rng(0).random((3, 4, 28, 28))
    image = rd.compose(tiles, scale=2, gutter=2)
    assert image.size == (4 * 56 + 5 * 2, 3 * 56 + 4 * 2) and image.mode == "L"
    expected = rd.to_uint8(tiles)
    np.testing.assert_array_equal(_tile(image, 2, 2), expected[0, 0])
    np.testing.assert_array_equal(_tile(image, 2 + 3 * 58, 2 + 2 * 58), expected[2, 3])
    assert np.asarray(image)[0, 0] == rd.BACKGROUND and np.asarray(image)[1, 57] == rd.BACKGROUND


def test_compose_widens_grouping_gaps_and_adds_a_label_margin():
    tiles = np.zeros((2, 4, 28, 28))
    grouped = rd.compose(tiles, scale=1, gutter=3, gap_after=(1,))
    assert grouped.size == (4 * 28 + 5 * 3 + 6, 2 * 28 + 3 * 3)
    labelled = rd.compose(tiles, scale=1, gutter=3, row_labels=["epoch 1", "epoch 12"])
    margin = rd.label_width(["epoch 1", "epoch 12"])
    assert margin > 0 and labelled.size == (margin + 4 * 28 + 5 * 3, 2 * 28 + 3 * 3)
    assert np.asarray(labelled)[:, :margin].max() > rd.BACKGROUND  # the text is drawn
    with pytest.raises(rd.RenderError, match="1 row labels for 2 rows"):
        rd.compose(tiles, 1, 3, row_labels=["x"])
    with pytest.raises(rd.RenderError, match=r"tiles must be \[rows, cols, 28, 28\]"):
        rd.compose(np.zeros((2, 28, 28)), 1, 3)


def test_samples_grid_is_ten_by_ten_and_seeded():
    model = ToyImageVAE()
    image = rd.samples_grid(model, CFG)
    assert image.size == (10 * 58 + 2, 10 * 58 + 2)
    z = np.random.default_rng(CFG.seed).standard_normal((100, 2))
    first = rd.to_uint8(1 / (1 + np.exp(-model.decode_logits(z[:1]))))[0]
    np.testing.assert_array_equal(_tile(image, 2, 2), first)


def test_reconstructions_pair_each_test_digit_with_its_reconstruction():
    x, y = _test_set()
    model = ToyImageVAE()
    image = rd.reconstructions_grid(model, x, y, CFG)
    # 10 rows of 5 pairs: 10 tiles, 11 gutters, 4 wider gaps between pairs (2 extra gutters).
    assert image.size == (10 * 58 + 2 + 4 * 4, 10 * 58 + 2)
    original = _tile(image, 2, 2 + 3 * 58)  # row 3, first pair: a test image of digit 3
    matches = [i for i in np.flatnonzero(y == 3) if np.array_equal(rd.to_uint8(x[i]), original)]
    assert len(matches) == 1
    mean, _ = model.encode(x[matches])
    recon = rd.to_uint8(1 / (1 + np.exp(-model.decode_logits(mean))))[0]
    np.testing.assert_array_equal(_tile(image, 2 + 58, 2 + 3 * 58), recon)


def test_interpolations_walk_between_test_digits_of_different_classes():
    x, y = _test_set()
    image = rd.interpolations_grid(ToyImageVAE(), x, y, CFG)
    # 8 rows; each: real digit | 10 decoded steps | real digit, the ends set apart.
    assert image.size == (12 * 58 + 2 + 2 * 4, 8 * 58 + 2)
    pairs = rd.interpolation_classes(8, np.random.default_rng(CFG.seed))
    assert all(a != b for a, b in pairs) and len({a for a, _ in pairs}) == 8
    tiles = rd.to_uint8(x)
    for row in range(8):
        left = _tile(image, 2, 2 + row * 58)
        right = _tile(image, 2 + 11 * 58 + 8, 2 + row * 58)
        left_idx = [i for i in range(len(x)) if np.array_equal(tiles[i], left)]
        right_idx = [i for i in range(len(x)) if np.array_equal(tiles[i], right)]
        assert y[left_idx[0]] == pairs[row][0] and y[right_idx[0]] == pairs[row][1]


@pytest.mark.parametrize("latent_dim", [2, 5])
def test_manifold_grid_size_for_2d_and_principal_directions(latent_dim):
    x, _ = _test_set()
    image = rd.manifold_grid(ToyImageVAE(latent_dim=latent_dim), x, CFG)
    assert image.size == (15 * 58 + 2, 15 * 58 + 2)


def test_manifold_axes_are_the_prior_in_2d_and_scaled_principal_directions_otherwise():
    x, _ = _test_set()
    centre, axes = rd.manifold_axes(ToyImageVAE(latent_dim=2), x)
    np.testing.assert_array_equal(centre, [0, 0])
    np.testing.assert_array_equal(axes, np.eye(2))
    model = ToyImageVAE(latent_dim=4)
    centre, axes = rd.manifold_axes(model, x)
    means, _ = model.encode(x)
    np.testing.assert_allclose(centre, means.mean(axis=0))
    cov = np.cov(means, rowvar=False)
    # each direction d = sqrt(lambda) v: cov d = lambda d, and |d|^2 = lambda; the top two.
    lambdas = np.sort(np.linalg.eigvalsh(cov))[::-1][:2]
    for d, lam in zip(axes, lambdas, strict=True):
        np.testing.assert_allclose(cov @ d, lam * d, atol=1e-9)
        assert d @ d == pytest.approx(lam)


def test_progress_rows_subsample_evenly_keeping_first_and_last():
    np.testing.assert_array_equal(rd.progress_rows(4, 10), [0, 1, 2, 3])
    rows = rd.progress_rows(25, 10)
    assert len(rows) == 10 and rows[0] == 0 and rows[-1] == 24 and np.all(np.diff(rows) > 0)


def test_progress_grid_has_one_labelled_row_per_shown_epoch():
    frames = np.random.default_rng(0).random((25, 16, 28, 28)).astype(np.float32)
    image = rd.progress_grid(frames, CFG)
    labels = [f"epoch {r + 1}" for r in rd.progress_rows(25, 10)]
    margin = rd.label_width(labels)
    assert image.size == (margin + 16 * 58 + 2, 10 * 58 + 2)
    np.testing.assert_array_equal(_tile(image, margin + 2, 2 + 9 * 58), rd.to_uint8(frames[24, 0]))
    numbered = rd.progress_grid(frames[:3], CFG, epochs=np.array([5, 6, 7]))
    assert numbered.size == (rd.label_width(["epoch 5", "epoch 6", "epoch 7"]) + 16 * 58 + 2,
                             3 * 58 + 2)
    with pytest.raises(rd.RenderError, match=r"\[epochs, n, 28, 28\].*dvc repro train"):
        rd.progress_grid(np.zeros((3, 28, 28)), CFG)


def test_missing_inputs_name_the_fix(tmp_path):
    with pytest.raises(rd.RenderError, match="run `dvc repro train` first"):
        rd.load_progress(tmp_path / "progress.npz")
    np.savez(tmp_path / "bad.npz", frames=np.zeros((1, 1, 28, 28)))
    with pytest.raises(rd.RenderError, match="no `images` array"):
        rd.load_progress(tmp_path / "bad.npz")
    x, y = _test_set(20)
    with pytest.raises(rd.RenderError, match="no test image of digit 7"):
        rd.reconstructions_grid(ToyImageVAE(), x[y != 7], y[y != 7], CFG)


def test_render_all_writes_every_png_and_a_rerun_gives_identical_bytes(tmp_path):
    x, y = _test_set()
    frames = np.random.default_rng(1).random((3, 16, 28, 28)).astype(np.float32)
    np.savez(tmp_path / "progress.npz", images=frames, epoch=np.array([2, 3, 4]))
    progress = rd.load_progress(tmp_path / "progress.npz")
    np.testing.assert_array_equal(progress[1], [2, 3, 4])
    first = rd.render_all(ToyImageVAE(), x, y, progress, tmp_path / "a", CFG)
    second = rd.render_all(ToyImageVAE(), x, y, progress, tmp_path / "b", CFG)
    assert sorted(first) == ["interpolations", "manifold", "progress", "reconstructions",
                             "samples"]
    for name, path in first.items():
        assert path.read_bytes() == second[name].read_bytes(), name
        with Image.open(path) as png:
            assert png.format == "PNG" and png.mode == "L"
            assert not png.info  # no metadata (time stamps, software) in the file
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(
        f"{n}.png" for n in first)


def test_digits_grid_has_one_labelled_row_per_digit_drawn_as_asked():
    image = rd.digits_grid(BandDigitVAE(), CFG)
    margin = rd.label_width([str(d) for d in range(10)])
    assert image.size == (margin + 58 * CFG.digit_columns + 2, 58 * 10 + 2)
    for digit in (0, 4, 9):
        tile = _tile(image, margin + 2 + 58 * 3, 2 + 58 * digit)
        bright_rows = np.flatnonzero(tile.mean(axis=1) > 128)
        assert list(bright_rows) == [2 * digit, 2 * digit + 1]  # the band of that digit


def test_render_all_adds_digits_and_styles_only_for_a_model_that_draws_them(tmp_path):
    x, y = _test_set(20)
    progress = (np.zeros((1, 16, 28, 28), np.float32), np.array([1]))
    written = rd.render_all(BandDigitVAE(), x, y, progress, tmp_path / "d", CFG)
    assert "digits" in written and written["digits"].name == "digits.png"
    assert written["styles"].name == "styles.png"
    plain = rd.render_all(ToyImageVAE(), x, y, progress, tmp_path / "p", CFG)
    assert "digits" not in plain and "styles" not in plain


def test_styles_grid_shows_each_image_then_it_redrawn_as_0_to_9():
    labels = np.tile(np.arange(10), 2)
    logits = BandDigitVAE().decode_logits(np.stack([labels, np.zeros(20)], axis=1))
    x = (1 / (1 + np.exp(-logits))).astype(np.float32)  # noise-free bands
    cfg = dataclasses.replace(CFG, style_rows=12)
    image = rd.styles_grid(BandDigitVAE(), x, labels, cfg)
    margin = rd.label_width([str(r % 10) for r in range(12)])
    assert image.size == (margin + 58 * 11 + 2 * 2 + 2, 58 * 12 + 2)
    for row in (0, 4, 11):  # row 11 is the second test image of digit 1
        source = _tile(image, margin + 2, 2 + 58 * row)
        assert list(np.flatnonzero(source.mean(axis=1) > 128)) == [2 * (row % 10),
                                                                   2 * (row % 10) + 1]
        for digit in (0, 7, 9):
            tile = _tile(image, margin + 2 + 58 * (1 + digit) + 4, 2 + 58 * row)
            assert list(np.flatnonzero(tile.mean(axis=1) > 128)) == [2 * digit, 2 * digit + 1]
    with pytest.raises(rd.RenderError, match="too few test images for 30 style rows"):
        rd.styles_grid(BandDigitVAE(), x, labels, dataclasses.replace(CFG, style_rows=30))


def test_a_sheet_of_any_count_is_a_near_square_grid():
    images = np.ones((5, 28, 28, 1), np.float32)
    image = rd.sheet(images, 2, 2)
    assert image.size == (58 * 3 + 2, 58 * 2 + 2)
    assert _tile(image, 2 + 58 * 2, 2 + 58).max() == 0  # the sixth place stays empty
    assert _tile(image, 2 + 58, 2 + 58).min() == 255
