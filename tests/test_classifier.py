"""The digit classifier: it learns a tiny synthetic task, exposes its features, saves safely."""

import time
import zipfile

import keras
import numpy as np
import pytest

from mnist_vae.classifier import (
    FEATURES_LAYER,
    ClassifierError,
    accuracy,
    build_classifier,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)
from mnist_vae.config import ClassifierConfig

TINY = ClassifierConfig(epochs=4, batch_size=32, features=16, learning_rate=3e-3)


def _synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class d = a bright 6x6 square at one of ten places, on noise: learnable in seconds."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    images = rng.random((n, 28, 28, 1)).astype(np.float32) * 0.3
    for i, d in enumerate(labels):
        r, c = divmod(int(d), 5)
        images[i, 4 + 12 * r : 10 + 12 * r, 2 + 5 * c : 8 + 5 * c] = 1.0
    return images, labels


def test_classifier_learns_a_tiny_set_and_reports_its_facts():
    x, y = _synthetic_digits(240, seed=0)
    x_test, y_test = _synthetic_digits(100, seed=1)
    model, facts = train_classifier(x, y, TINY, verbose=0)
    assert accuracy(model, x_test, y_test) > 0.9
    assert facts["train_images"] == 240 and facts["epochs"] == 4
    assert 0.0 <= facts["train_accuracy"] <= 1.0 and facts["images_per_s"] > 0


def test_predict_returns_probabilities_and_penultimate_features():
    model = build_classifier(TINY)
    assert model.get_layer(FEATURES_LAYER).units == 16
    x, _ = _synthetic_digits(30, seed=2)
    out = predict(model, x, batch_size=7)
    assert out.probs.shape == (30, 10) and out.features.shape == (30, 16)
    np.testing.assert_allclose(out.probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(out.features >= 0)  # relu features


def test_saved_classifier_loads_with_the_same_predictions(tmp_path):
    model = build_classifier(TINY)
    path = tmp_path / "models" / "classifier.keras"
    save_classifier(model, path)
    assert [p.name for p in path.parent.iterdir()] == ["classifier.keras"]
    x, _ = _synthetic_digits(10, seed=3)
    np.testing.assert_allclose(predict(load_classifier(path), x).probs, predict(model, x).probs,
                               rtol=1e-6)


def test_two_saves_of_equal_classifiers_give_the_same_bytes(tmp_path):
    """Keras stamps the save time and memory addresses into the zip; dvc.lock must hash the
    model, not the moment or the process."""
    first, second = tmp_path / "a.keras", tmp_path / "b.keras"
    keras.backend.clear_session()  # layer names as in a fresh process: conv2d, conv2d_1, ...
    keras.utils.set_random_seed(0)
    save_classifier(build_classifier(TINY), first)
    time.sleep(2.1)  # past the zip format's 2-second and Keras's 1-second time resolution
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = build_classifier(TINY)  # equal weights, other Python objects
    save_classifier(model, second)
    assert first.read_bytes() == second.read_bytes()
    x, _ = _synthetic_digits(5, seed=4)
    np.testing.assert_allclose(predict(load_classifier(second), x).probs,
                               predict(model, x).probs, rtol=1e-6)


def test_loading_refuses_missing_files_and_models_without_features(tmp_path):
    with pytest.raises(ClassifierError, match="run `dvc repro train_classifier` first"):
        load_classifier(tmp_path / "nope.keras")
    inputs = keras.Input((28, 28, 1))
    other = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    other.save(tmp_path / "other.keras")
    with pytest.raises(ClassifierError, match="no layer named 'features'"):
        load_classifier(tmp_path / "other.keras")


def test_loading_a_truncated_or_damaged_file_says_corrupt_and_how_to_rebuild(tmp_path):
    inputs = keras.Input((28, 28, 1))
    other = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    other.save(tmp_path / "whole.keras")
    data = (tmp_path / "whole.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(ClassifierError, match=r"corrupt or truncated .*dvc repro -f train_cl"):
        load_classifier(tmp_path / "cut.keras")
    with zipfile.ZipFile(tmp_path / "whole.keras") as src, \
            zipfile.ZipFile(tmp_path / "damaged.keras", "w") as dst:
        for info in src.infolist():  # a whole archive whose weights are not HDF5
            dst.writestr(info, b"not weights" if info.filename.endswith(".h5") else src.read(info))
    with pytest.raises(ClassifierError, match=r"corrupt or incompatible, Keras cannot load it"):
        load_classifier(tmp_path / "damaged.keras")
