"""What the VAE draws, in pictures: deterministic PNG grids of digits.

Each picture is a grid of 28x28 tiles, scaled up `scale` times, separated by thin gutters,
on a dark grey background; optional labels on the left. The same model, data and params give
the same bytes: seeded numpy draws, no PNG metadata, fixed compression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import stats

from mnist_vae.config import RenderConfig
from mnist_vae.files import atomic_path
from mnist_vae.inference import decode_means, encode, prior_of
from mnist_vae.progress import progress as progress_bar
from mnist_vae.styles import style_sheet

BACKGROUND = 64  # grey: tiles are black-backed digits, gutters must still show
LABEL_COLOUR = 235
LABEL_FONT_SIZE = 12
LABEL_PAD = 6
TILE = 28


class RenderError(ValueError):
    """An input a picture cannot be drawn from; the message says which and why."""


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (any trailing channel axis of 1 dropped) -> uint8 [..., 28, 28]."""
    images = np.asarray(images, np.float64)
    if images.shape[-1] == 1 and images.ndim >= 3 and images.shape[-2] == TILE:
        images = images[..., 0]
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=LABEL_FONT_SIZE)


def label_width(labels: Sequence[str] | None) -> int:
    """Width of the left margin that holds the row labels (0 without labels)."""
    if not labels:
        return 0
    font = _font()
    return max(int(font.getbbox(text)[2]) for text in labels) + 2 * LABEL_PAD


def compose(
    tiles: np.ndarray,
    scale: int,
    gutter: int,
    gap_after: Sequence[int] = (),
    row_labels: Sequence[str] | None = None,
) -> Image.Image:
    """Lay out tiles [rows, cols, 28, 28] (floats in [0, 1]) as one greyscale image.

    `gap_after` lists column indices followed by a wider gap (3 gutters), to group columns.
    """
    tiles = to_uint8(tiles)
    if tiles.ndim != 4 or tiles.shape[2:] != (TILE, TILE):
        raise RenderError(f"tiles must be [rows, cols, 28, 28], got {tiles.shape}")
    rows, cols = tiles.shape[:2]
    if row_labels is not None and len(row_labels) != rows:
        raise RenderError(f"{len(row_labels)} row labels for {rows} rows")
    size = TILE * scale
    gaps = [gutter + (2 * gutter if c - 1 in gap_after else 0) for c in range(cols)]
    left = label_width(row_labels)
    x0 = np.cumsum([left + gutter] + [size + gaps[c] for c in range(1, cols)])
    width = int(x0[-1] + size + gutter)
    height = rows * size + (rows + 1) * gutter
    canvas = np.full((height, width), BACKGROUND, np.uint8)
    for r in range(rows):
        y = gutter + r * (size + gutter)
        for c in range(cols):
            big = np.repeat(np.repeat(tiles[r, c], scale, axis=0), scale, axis=1)
            canvas[y : y + size, x0[c] : x0[c] + size] = big
    image = Image.fromarray(canvas, mode="L")
    if row_labels:
        draw, font = ImageDraw.Draw(image), _font()
        for r, text in enumerate(row_labels):
            top, bottom = font.getbbox(text)[1::2]
            y = gutter + r * (size + gutter) + (size - (bottom + top)) // 2
            draw.text((LABEL_PAD, y), text, fill=LABEL_COLOUR, font=font)
    return image


def save_png(image: Image.Image, path: str | Path) -> None:
    """Write a PNG with no metadata, atomically, so reruns give identical bytes."""
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=False, compress_level=9)


# --- the pictures ------------------------------------------------------------------------


def samples_grid(model: Any, cfg: RenderConfig) -> Image.Image:
    """grid x grid decoder means of seeded draws from the model's prior."""
    n = cfg.samples_grid
    z = prior_of(model).sample(n * n, np.random.default_rng(cfg.seed))
    images = decode_means(model, z, batch_size=n * n)
    return compose(images.reshape(n, n, TILE, TILE), cfg.scale, cfg.gutter)


def digits_grid(model: Any, cfg: RenderConfig) -> Image.Image:
    """One labelled row per digit 0-9: `digit_columns` draws from p(z | digit), seed + digit."""
    rows = [decode_means(model, model.prior_distribution(digit).sample(
        cfg.digit_columns, np.random.default_rng(cfg.seed + digit)), cfg.digit_columns)
        for digit in range(10)]
    return compose(np.stack(rows)[..., 0], cfg.scale, cfg.gutter,
                   row_labels=[str(d) for d in range(10)])


def styles_grid(model: Any, x: np.ndarray, labels: np.ndarray, cfg: RenderConfig) -> Image.Image:
    """One row per test image (the first `style_rows` of digits 0, 1, ..., cycling): the
    image, a gap, then it redrawn as 0-9 in its own style (`styles.restyle`)."""
    picked = [np.flatnonzero(labels == r % 10)[r // 10:r // 10 + 1] for r in range(cfg.style_rows)]
    if any(len(p) == 0 for p in picked):
        raise RenderError(f"too few test images for {cfg.style_rows} style rows; lower "
                          f"render.style_rows or raise data.test_limit")
    idx = np.concatenate(picked)
    tiles = style_sheet(model, x[idx], labels[idx], batch_size=len(idx))
    return compose(tiles[..., 0], cfg.scale, cfg.gutter, gap_after=[0],
                   row_labels=[f"{labels[i]}" for i in idx])


def sheet(images: np.ndarray, scale: int, gutter: int) -> Image.Image:
    """Any number of images as a near-square grid, row by row (empty places stay black)."""
    images = to_uint8(images).astype(np.float64) / 255.0
    cols = max(1, math.ceil(math.sqrt(len(images))))
    rows = max(1, math.ceil(len(images) / cols))
    tiles = np.zeros((rows * cols, TILE, TILE))
    tiles[:len(images)] = images
    return compose(tiles.reshape(rows, cols, TILE, TILE), scale, gutter)


def pick_per_class(labels: np.ndarray, classes: Sequence[int], count: int,
                   rng: np.random.Generator) -> np.ndarray:
    """Indices of `count` random test images of each class in `classes`, row by row."""
    rows = []
    for d in classes:
        pool = np.flatnonzero(labels == d)
        if len(pool) == 0:
            raise RenderError(f"no test image of digit {d}; raise data.test_limit")
        rows.append(rng.choice(pool, size=count, replace=len(pool) < count))
    return np.stack(rows)


def reconstructions_grid(model: Any, x: np.ndarray, labels: np.ndarray,
                         cfg: RenderConfig) -> Image.Image:
    """Rows of (original, reconstruction) pairs; row r shows digit r mod 10."""
    rng = np.random.default_rng(cfg.seed)
    rows, pairs = cfg.reconstruction_rows, cfg.reconstruction_pairs
    idx = pick_per_class(labels, [r % 10 for r in range(rows)], pairs, rng).ravel()
    mean, _ = encode(model, x[idx], batch_size=len(idx))
    recon = decode_means(model, mean, batch_size=len(idx))
    tiles = np.stack([to_uint8(x[idx]), to_uint8(recon)], axis=1)  # [n, 2, 28, 28]
    tiles = tiles.reshape(rows, pairs * 2, TILE, TILE).astype(np.float64) / 255.0
    return compose(tiles, cfg.scale, cfg.gutter, gap_after=range(1, 2 * pairs - 1, 2))


def interpolation_classes(rows: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Pairs of different digit classes, one per row, covering the digits evenly."""
    order = rng.permutation(10)
    return [(int(order[r % 10]), int(order[(r + 1 + r // 10) % 10])) for r in range(rows)]


def interpolations_grid(model: Any, x: np.ndarray, labels: np.ndarray,
                        cfg: RenderConfig) -> Image.Image:
    """Each row: a test digit, the decoded straight walk between the codes, the other digit."""
    rng = np.random.default_rng(cfg.seed)
    pairs = interpolation_classes(cfg.interpolation_rows, rng)
    starts = pick_per_class(labels, [a for a, _ in pairs], 1, rng)[:, 0]
    ends = pick_per_class(labels, [b for _, b in pairs], 1, rng)[:, 0]
    z_a, _ = encode(model, x[starts], batch_size=len(starts))
    z_b, _ = encode(model, x[ends], batch_size=len(ends))
    t = np.linspace(0.0, 1.0, cfg.interpolation_steps)[None, :, None]
    walk = (1.0 - t) * z_a[:, None, :] + t * z_b[:, None, :]  # [rows, steps, latent]
    steps = cfg.interpolation_steps
    decoded = decode_means(model, walk.reshape(-1, walk.shape[-1]), batch_size=len(starts) * steps)
    decoded = decoded.reshape(len(starts), steps, TILE, TILE)
    tiles = np.concatenate(
        [x[starts][:, None, ..., 0], decoded, x[ends][:, None, ..., 0]], axis=1)
    return compose(tiles, cfg.scale, cfg.gutter, gap_after=(0, steps))


def manifold_axes(model: Any, x: np.ndarray, batch_size: int = 500
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Centre and two scaled directions of the walk: the prior's axes for a 2-D latent,
    else the two main principal directions of the test codes (scaled by their std)."""
    if model.latent_dim == 2:
        return np.zeros(2), np.eye(2)
    mean, _ = encode(model, x, batch_size)
    centre = mean.mean(axis=0)
    eigval, eigvec = np.linalg.eigh(np.cov(mean, rowvar=False))
    top = np.argsort(eigval)[::-1][:2]
    directions = (eigvec[:, top] * np.sqrt(np.maximum(eigval[top], 0.0))).T
    signs = np.sign(directions[np.arange(2), np.argmax(np.abs(directions), axis=1)])
    return centre, directions * signs[:, None]  # sign fixed: eigh's is arbitrary


def manifold_grid(model: Any, x: np.ndarray, cfg: RenderConfig) -> Image.Image:
    """size x size decodings of z = centre + a d1 + b d2, a, b at Gaussian quantiles."""
    n = cfg.manifold_size
    centre, (d1, d2) = manifold_axes(model, x)
    q = stats.norm.ppf(np.linspace(1.0 - cfg.manifold_quantile, cfg.manifold_quantile, n))
    a, b = np.meshgrid(q, q[::-1])  # rows top to bottom: second coordinate decreasing
    z = centre + a.reshape(-1, 1) * d1 + b.reshape(-1, 1) * d2
    images = decode_means(model, z, batch_size=n * n)
    return compose(images.reshape(n, n, TILE, TILE), cfg.scale, cfg.gutter)


def progress_rows(epochs: int, max_rows: int) -> np.ndarray:
    """Evenly spaced epoch indices, first and last always included."""
    if epochs <= max_rows:
        return np.arange(epochs)
    return np.unique(np.round(np.linspace(0, epochs - 1, max_rows)).astype(int))


def progress_grid(images: np.ndarray, cfg: RenderConfig,
                  epochs: np.ndarray | None = None) -> Image.Image:
    """Rows = epochs (subsampled), columns = the same latent vectors decoded after that epoch."""
    images = np.asarray(images)
    if images.ndim == 5 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 4 or images.shape[2:] != (TILE, TILE) or len(images) == 0:
        raise RenderError(
            f"progress images must be [epochs, n, 28, 28] with at least one epoch, "
            f"got {images.shape}; rerun `dvc repro train`"
        )
    epochs = np.arange(1, len(images) + 1) if epochs is None else np.asarray(epochs)
    rows = progress_rows(len(images), cfg.progress_rows)
    labels = [f"epoch {int(epochs[r])}" for r in rows]
    return compose(images[rows], cfg.scale, cfg.gutter, row_labels=labels)


def load_progress(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The train stage's per-epoch decodings of fixed latent vectors, and their epoch numbers."""
    path = Path(path)
    if not path.is_file():
        raise RenderError(f"{path}: no such file; run `dvc repro train` first")
    with np.load(path) as npz:
        if "images" not in npz:
            raise RenderError(f"{path}: no `images` array; rerun `dvc repro -f train`")
        images = npz["images"]
        epochs = npz["epoch"] if "epoch" in npz else np.arange(1, len(images) + 1)
    return images, epochs


def render_all(model: Any, x_test: np.ndarray, y_test: np.ndarray,
               progress: tuple[np.ndarray, np.ndarray], out_dir: str | Path,
               cfg: RenderConfig) -> dict[str, Path]:
    """Draw every picture into out_dir; returns name -> path."""
    pictures = {
        "samples": lambda: samples_grid(model, cfg),
        "reconstructions": lambda: reconstructions_grid(model, x_test, y_test, cfg),
        "interpolations": lambda: interpolations_grid(model, x_test, y_test, cfg),
        "manifold": lambda: manifold_grid(model, x_test, cfg),
        "progress": lambda: progress_grid(progress[0], cfg, epochs=progress[1]),
    }
    if getattr(model, "draws_digits", False):
        pictures["digits"] = lambda: digits_grid(model, cfg)
        pictures["styles"] = lambda: styles_grid(model, x_test, y_test, cfg)
    written = {}
    for name, draw in progress_bar(pictures.items(), desc="render", total=len(pictures),
                                   unit="picture"):
        path = Path(out_dir) / f"{name}.png"
        save_png(draw(), path)
        written[name] = path
    return written
