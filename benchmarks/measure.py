"""Measure one model: train it for a budget on the shared split, probing its validation curve,
then score it with the evaluate stage's metrics. Run by `benchmarks.run`, one model per process
(a fresh TensorFlow/torch runtime each, so no model inherits another's threads or memory):

    python -m benchmarks.measure MODEL SETTINGS.json OUT.json
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import baselines, compare  # noqa: E402
from benchmarks.probe import Probe  # noqa: E402
from mnist_vae import classifier, config, data, evaluation, losses  # noqa: E402

OURS = "ours"
ARTICLE = "article"
ARTICLE_CONFIG = "configs/seed-article.yaml"


@dataclass(frozen=True)
class ModelSpec:
    """A benchmarked model: what it is and the 10-epoch -ELBO the issue measured for it."""

    description: str
    source: str
    reference_10_epoch: float | None = None


MODELS: dict[str, ModelSpec] = {
    OURS: ModelSpec("mnist-vae, default params.yaml", "params.yaml"),
    ARTICLE: ModelSpec("the article's model (conv 64x3, latent 8, squared error)",
                       ARTICLE_CONFIG, 114.9),
    baselines.KERAS_IO: ModelSpec("keras.io VAE example (conv 32/64, latent 2, BCE)",
                                  "keras-team/keras-io examples/generative/vae.py", 155.9),
    baselines.PYTORCH_MLP: ModelSpec("pytorch/examples MLP VAE (784-400-20, BCE)",
                                     "pytorch/examples vae/main.py", 105.4),
}
BASELINES = [baselines.PYTORCH_MLP, baselines.KERAS_IO, ARTICLE]


@dataclass(frozen=True)
class Settings:
    """Everything one measurement needs; the same for every model of a run."""

    budget_s: float = 600.0
    data: dict = field(default_factory=dict)      # overrides of params' data section
    evaluate: dict = field(default_factory=dict)  # overrides of params' evaluate section
    classifier: dict = field(default_factory=dict)  # overrides of params' classifier section
    classifier_path: str = ""
    probe_min_interval_s: float = 2.0
    probe_growth: float = 0.1
    seed: int = 0

    @classmethod
    def from_json(cls, path: str | Path) -> Settings:
        return cls(**json.loads(Path(path).read_text()))

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2))


def load_model_params(name: str) -> config.Params:
    """params.yaml, with the article's overlay for the article's model."""
    if name != ARTICLE:
        return config.load_params()
    overlay = config.load_overlay(ARTICLE_CONFIG)
    return config.parse_params(config.merge_overlay(config.read_params_mapping(), overlay))


def shared_splits(settings: Settings) -> tuple[data.Splits, config.Params]:
    """The one split every model sees: params.yaml's data section plus the run's overrides."""
    params = config.load_params()
    cfg = dataclasses.replace(params.data, **settings.data)
    return data.load_splits(params.paths.data, cfg), params


def bernoulli_view(images: np.ndarray) -> evaluation.View:
    return evaluation.View("bernoulli", images, losses.bernoulli_nll)


def val_neg_elbo(model: Any, x_val: np.ndarray, batch_size: int, seed: int) -> float:
    """Mean one-sample -ELBO (Bernoulli, grey pixels) over the validation set, seeded."""
    terms = evaluation.elbo_terms(model, bernoulli_view(x_val), batch_size, seed)
    return float(np.mean(terms["neg_elbo"]))


class KerasProbe(keras.callbacks.Callback):
    """Feeds a Probe from Keras' fit loop and stops fit when the budget is spent."""

    def __init__(self, probe: Probe, batch_size: int, n_train: int):
        super().__init__()
        self.probe, self.batch_size, self.n_train = probe, batch_size, n_train
        self._in_epoch = 0

    def on_train_begin(self, logs=None):
        self.probe.start(self.model)

    def on_train_batch_end(self, batch, logs=None):
        images = min(self.batch_size, self.n_train - self._in_epoch)
        self._in_epoch += images
        self.probe.step(images)
        if self.probe.done():
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self._in_epoch >= self.n_train:  # not a pass cut short by the budget
            self.probe.epoch_end()
        self._in_epoch = 0


def train_keras_io(splits: data.Splits, probe: Probe, settings: Settings):
    model = baselines.build_keras_io(settings.seed)
    callback = KerasProbe(probe, baselines.KERAS_IO_BATCH, len(splits.x_train))
    model.fit(splits.x_train, epochs=10**6, batch_size=baselines.KERAS_IO_BATCH,
              shuffle=True, verbose=0, callbacks=[callback])
    return model


def train_pytorch_mlp(splits: data.Splits, probe: Probe, settings: Settings):
    model = baselines.TorchMlpVAE()
    probe.start(model)
    while not probe.done():
        for batch in model.batches(splits.x_train):
            model.train_step(batch)
            probe.step(len(batch))
            if probe.done():
                return model
        probe.epoch_end()
    return model


def train_with_pipeline_code(name: str, splits: data.Splits, probe: Probe, settings: Settings):
    """Our model (default or article config), trained by the library as the pipeline does."""
    from mnist_vae import training  # the model branch's module

    params = load_model_params(name)
    callback = KerasProbe(probe, params.train.batch_size, len(splits.x_train))
    return training.fit_for_benchmark(splits, params, callbacks=[callback])


def count_params(model: Any) -> int:
    if hasattr(model, "net"):
        return int(sum(p.numel() for p in model.net.parameters()))
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def final_metrics(model: Any, splits: data.Splits, settings: Settings) -> dict:
    """Test -ELBO and IWAE NLL (Bernoulli, grey) and sample quality judged by the classifier."""
    params = config.load_params()
    cfg = dataclasses.replace(params.evaluate, **settings.evaluate)
    started = time.perf_counter()
    test, _, _ = evaluation.evaluate_likelihood(
        model, [bernoulli_view(splits.x_test)], splits.x_test, splits.y_test, cfg)
    judge = classifier.load_classifier(settings.classifier_path)
    samples = evaluation.prior_samples(model, cfg.prior_samples, cfg.seed, cfg.batch_size)
    quality = evaluation.sample_quality(
        classifier.predict(judge, samples), classifier.predict(judge, splits.x_test),
        cfg.confidence, cfg.seed)
    return {
        "test_neg_elbo": test["bernoulli"]["neg_elbo"],
        "test_rec_nll": test["bernoulli"]["rec_nll"],
        "test_kl": test["bernoulli"]["kl"],
        "iwae_nll": test["bernoulli"]["iwae_nll"],
        "iwae_k": cfg.iwae_samples,
        "iwae_images": cfg.iwae_images,
        "active_units": test["active_units"],
        "latent_dim": test["latent_dim"],
        "recognisable": quality["recognisable"],
        "class_entropy": quality["class_entropy"],
        "frechet": quality["frechet"],
        "frechet_floor": quality["frechet_floor"],
        "prior_samples": cfg.prior_samples,
        "eval_s": time.perf_counter() - started,
    }


TRAINERS = {
    baselines.KERAS_IO: train_keras_io,
    baselines.PYTORCH_MLP: train_pytorch_mlp,
}


def measure(name: str, settings: Settings) -> dict:
    """Train `name` for the budget, probing its curve, then compute its final numbers."""
    spec = MODELS[name]
    splits, params = shared_splits(settings)
    keras.utils.set_random_seed(settings.seed)
    probe = Probe(
        settings.budget_s,
        lambda model: val_neg_elbo(model, splits.x_val, params.evaluate.batch_size,
                                   settings.seed),
        min_interval_s=settings.probe_min_interval_s, growth=settings.probe_growth)
    result: dict[str, Any] = {
        "name": name, **dataclasses.asdict(spec), "load_before": os.getloadavg()[0],
        "data_sizes": {"train": len(splits.x_train), "val": len(splits.x_val),
                       "test": len(splits.x_test)},
    }
    if name in TRAINERS:
        model = TRAINERS[name](splits, probe, settings)
    else:
        model = train_with_pipeline_code(name, splits, probe, settings)
    train_facts = probe.finish()
    result.update(
        status="ok",
        n_params=count_params(model),
        train=train_facts,
        target=compare.target_from_curve(train_facts["curve"]),
        final=final_metrics(model, splits, settings),
        load_after=os.getloadavg()[0],
    )
    return result


def train_judge(settings: Settings, path: str | Path) -> None:
    """Train the digit classifier on the shared split's training images and save it."""
    splits, params = shared_splits(settings)
    cfg = dataclasses.replace(params.classifier, **settings.classifier)
    model, facts = classifier.train_classifier(splits.x_train, splits.y_train, cfg, verbose=2)
    facts["test_accuracy"] = classifier.accuracy(model, splits.x_test, splits.y_test)
    print(json.dumps(facts), flush=True)
    classifier.save_classifier(model, path)


def main(argv: list[str]) -> int:
    if argv[0] == "--train-classifier":
        train_judge(Settings.from_json(argv[1]), argv[2])
        return 0
    name, settings_path, out_path = argv
    result = measure(name, Settings.from_json(settings_path))
    Path(out_path).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
