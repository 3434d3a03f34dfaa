"""A small CNN digit classifier: the judge of whether the VAE's samples look like digits.

Its softmax says which digit a sample shows and how sure it is; its penultimate layer
(`FEATURES_LAYER`) gives the features of the Frechet distance between samples and test images.
"""

from __future__ import annotations

import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from mnist_vae.config import ClassifierConfig
from mnist_vae.files import atomic_path, canonical_keras_file

FEATURES_LAYER = "features"
NUM_CLASSES = 10


class ClassifierError(ValueError):
    """The classifier file is missing, corrupt, or not what the train_classifier stage writes."""


@dataclass(frozen=True)
class Predictions:
    """Class probabilities [N, 10] and penultimate-layer features [N, F] of a set of images."""

    probs: np.ndarray
    features: np.ndarray


def build_classifier(cfg: ClassifierConfig) -> keras.Model:
    """Two conv blocks and a named feature layer: >= 99% test accuracy in a few epochs."""
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = inputs
    for filters in (32, 64):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(cfg.dropout)(x)
    features = keras.layers.Dense(cfg.features, activation="relu", name=FEATURES_LAYER)(x)
    x = keras.layers.Dropout(cfg.dropout)(features)
    probs = keras.layers.Dense(NUM_CLASSES, activation="softmax", name="probs")(x)
    model = keras.Model(inputs, probs, name="digit_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train_classifier(
    x_train: np.ndarray, y_train: np.ndarray, cfg: ClassifierConfig, verbose: int = 2
) -> tuple[keras.Model, dict]:
    """Fit a fresh, seeded classifier; return it with its training facts."""
    keras.utils.set_random_seed(cfg.seed)
    model = build_classifier(cfg)
    start = time.perf_counter()
    history = model.fit(
        x_train, y_train, batch_size=cfg.batch_size, epochs=cfg.epochs,
        shuffle=True, verbose=verbose,
    )
    wall = time.perf_counter() - start
    facts = {
        "train_images": int(len(x_train)),
        "epochs": cfg.epochs,
        "train_accuracy": float(history.history["accuracy"][-1]),
        "train_loss": float(history.history["loss"][-1]),
        "wall_time_s": round(wall, 2),
        "images_per_s": round(cfg.epochs * len(x_train) / wall, 1),
    }
    return model, facts


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 1000) -> float:
    """Fraction of images whose most probable class is the label."""
    probs = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.argmax(probs, axis=1) == y))


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 1000) -> Predictions:
    """Class probabilities and penultimate-layer features in one pass."""
    both = keras.Model(model.inputs, [model.output, model.get_layer(FEATURES_LAYER).output])
    probs, features = both.predict(np.asarray(images, np.float32), batch_size=batch_size,
                                   verbose=0)
    return Predictions(probs=np.asarray(probs, np.float64),
                       features=np.asarray(features, np.float64))


def save_classifier(model: keras.Model, path: str | Path) -> None:
    """Write the native .keras file atomically (a killed run leaves no half-written model) and
    reproducibly (the same weights give the same bytes)."""
    with atomic_path(path) as tmp:
        model.save(tmp)
        canonical_keras_file(tmp)


def load_classifier(path: str | Path) -> keras.Model:
    """Load the train_classifier stage's model, refusing a file without the feature layer."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"{path}: no such file; run `dvc repro train_classifier` first")
    rebuild = "rebuild it with `dvc repro -f train_classifier`"
    if not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ClassifierError(f"{path}: corrupt or truncated ({path.stat().st_size:,} bytes, "
                              f"not a whole .keras zip archive); {rebuild}")
    try:
        model = keras.models.load_model(path, compile=False)
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, ValueError, zlib.error) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise ClassifierError(f"{path}: corrupt or incompatible, Keras cannot load it "
                              f"({reason}); {rebuild}") from err
    names = {layer.name for layer in model.layers}
    if FEATURES_LAYER not in names:
        raise ClassifierError(
            f"{path}: no layer named {FEATURES_LAYER!r}; rerun `dvc repro -f train_classifier`"
        )
    return model
