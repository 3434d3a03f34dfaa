"""Drawing digits on request: which model to ask, and its drawings as PNG bytes.

Shared by the command line (`python -m mnist_vae draw 7`) and the web page (`make draw`):
the model is the registry's champion when a tracking store holds one, else the pipeline's
`models/vae.keras`; a path or a `models:/` URI picks another.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_vae.prior import check_digit

MAX_IMAGES = 256  # most images one request draws (bounds time and memory)
MAX_SCALE = 8
STORE_FILE = "mlflow.db"  # the pipeline's embedded tracking store (tracking.STORE_FILE)


class DrawError(ValueError):
    """A request that cannot be drawn; the message names the problem and the fix."""


@dataclass(frozen=True)
class Request:
    """n images of `digit` drawn with `seed`, each pixel shown `scale` x `scale`."""

    digit: int
    n: int = 16
    seed: int = 0
    scale: int = 2


def check_request(digit: Any, n: Any = 16, seed: Any = 0, scale: Any = 2) -> Request:
    """A `Request` from loosely typed values (argv, query strings), or a DrawError."""
    try:
        digit = check_digit(whole_number(digit, "digit"))
    except ValueError as err:
        raise DrawError(str(err)) from None
    n, seed, scale = (whole_number(v, k) for v, k in ((n, "n"), (seed, "seed"), (scale, "scale")))
    if not 1 <= n <= MAX_IMAGES:
        raise DrawError(f"n must be 1-{MAX_IMAGES} images, got {n}")
    if seed < 0:
        raise DrawError(f"seed must be >= 0, got {seed}")
    if not 1 <= scale <= MAX_SCALE:
        raise DrawError(f"scale must be 1-{MAX_SCALE}, got {scale}")
    return Request(digit, n, seed, scale)


def whole_number(value: Any, name: str) -> Any:
    """Text that spells a whole number becomes it; a digit that is not one is left for
    check_digit to word; anything else is a DrawError naming `name`."""
    if isinstance(value, str):
        text = value.strip()
        if not text.lstrip("-").isdigit():
            raise DrawError(f"{name} must be a whole number, got {value!r}")
        return int(text)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        if name == "digit":
            return value  # check_digit words the error
        raise DrawError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def open_model(spec: str | None = None, default_path: str | Path = "models/vae.keras",
               root: Path | None = None) -> tuple[Any, str]:
    """(VAE, where it came from): `spec` a path or models:/ URI; None = the champion when a
    tracking store holds one, else `default_path`. The VAE must draw digits."""
    if spec and spec.startswith("models:/"):
        model, origin = _registered(spec), spec
    elif spec:
        model, origin = _from_file(Path(spec)), spec
    else:
        model, origin = _champion_or_none(root or Path.cwd()), "models:/mnist-vae@champion"
        if model is None:
            model, origin = _from_file(Path(default_path)), str(default_path)
    if not getattr(model, "draws_digits", False):
        raise DrawError(f"{origin}: this model cannot draw a chosen digit (no p(z | digit)); "
                        f"retrain it with model.prior.conditional: true (dvc repro)")
    return model, origin


def _from_file(path: Path) -> Any:
    from mnist_vae.model import load_vae

    if not path.is_file():
        raise DrawError(f"{path}: no such model file; run `dvc repro` to train one, or pass "
                        f"--model PATH or a models:/ URI")
    return load_vae(path)


def _registered(uri: str) -> Any:
    from mnist_vae import registry

    try:
        return registry.load(uri)
    except registry.RegistryError as err:
        raise DrawError(str(err).splitlines()[0]) from None


def _champion_or_none(root: Path) -> Any | None:
    """The champion when MLFLOW_TRACKING_URI is set or the repository has its store, else None
    (never creates a store)."""
    if not os.environ.get("MLFLOW_TRACKING_URI") and not (root / STORE_FILE).is_file():
        return None
    from mnist_vae import registry

    try:
        return registry.load(registry.CHAMPION, tracking_uri=None if os.environ.get(
            "MLFLOW_TRACKING_URI") else f"sqlite:///{(root / STORE_FILE).resolve()}")
    except registry.RegistryError:
        return None


def draw(model: Any, request: Request) -> np.ndarray:
    """float32 [n, 28, 28, 1] drawings of the requested digit."""
    return np.asarray(model.sample(request.n, request.seed, digit=request.digit))


def walk(model: Any, start: int, end: int, steps: int, seed: int) -> np.ndarray:
    """float32 [steps, 28, 28, 1]: from a drawn `start` digit to a drawn `end` digit."""
    start, end = check_request(start).digit, check_request(end).digit
    if not 2 <= steps <= MAX_IMAGES:
        raise DrawError(f"steps must be 2-{MAX_IMAGES}, got {steps}")
    return np.asarray(model.digit_walk(start, end, steps, seed))


def png_bytes(images: np.ndarray, scale: int, gutter: int = 2,
              columns: int | None = None) -> bytes:
    """Images as one PNG: a near-square grid, or `columns` wide."""
    from mnist_vae.rendering import compose, sheet

    if columns:
        rows = -(-len(images) // columns)
        tiles = np.zeros((rows * columns, 28, 28), np.float32)
        tiles[:len(images)] = images[..., 0]
        picture = compose(tiles.reshape(rows, columns, 28, 28), scale, gutter)
    else:
        picture = sheet(images, scale, gutter)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False, compress_level=9)
    return buffer.getvalue()


def tile_png(image: np.ndarray, scale: int) -> bytes:
    """One 28x28 image as a PNG of 28*scale pixels square (no gutter)."""
    from PIL import Image

    from mnist_vae.rendering import to_uint8

    pixels = np.kron(to_uint8(image), np.ones((scale, scale), np.uint8))
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()
