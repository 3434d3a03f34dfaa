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
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import baselines, compare  # noqa: E402
from benchmarks.probe import Probe  # noqa: E402
from benchmarks.settings import MODELS, OVERLAYS, Settings  # noqa: E402
from mnist_vae import classifier, config, data, evaluation, losses, overlays  # noqa: E402


def load_model_params(name: str) -> config.Params:
    """params.yaml, with the model's overlay (configs/*.yaml) where it has one."""
    return overlays.params_with_overlay(OVERLAYS.get(name))


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

    def __init__(self, probe: Probe, batch_size: int, images_per_epoch: int):
        super().__init__()
        self.probe, self.batch_size, self.images_per_epoch = probe, batch_size, images_per_epoch
        self._in_epoch = 0

    def on_train_begin(self, logs=None):
        self.probe.start(self.model)

    def on_train_batch_end(self, batch, logs=None):
        images = min(self.batch_size, self.images_per_epoch - self._in_epoch)
        self._in_epoch += images
        self.probe.step(images)
        if self.probe.done():
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self._in_epoch >= self.images_per_epoch:  # not a pass cut short by the budget
            self.probe.epoch_end()
        self._in_epoch = 0

    def on_train_end(self, logs=None):
        self.probe.stop()  # what the pipeline does after fit (its prior fit) is not training


def train_keras_io(splits: data.Splits, probe: Probe, settings: Settings):
    model = baselines.build_keras_io(settings.seed)
    callback = KerasProbe(probe, baselines.KERAS_IO_BATCH, len(splits.x_train))  # keeps the rest
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
    """Our model (default or article config), trained by the pipeline's own code: its input
    pipeline, schedule, per-epoch validation, checkpoints and early stopping all count as
    training time. Returns the model with the best validation epoch's weights and its fitted
    prior, as train does, and the facts of that prior's fit (its time is after the budget).
    """
    from mnist_vae import inputs, training  # noqa: PLC0415 (the model branch's modules)

    params = load_model_params(name)
    shared = dataclasses.replace(config.load_params().data, **settings.data)
    if dataclasses.replace(params.data, **settings.data) != shared:
        raise ValueError(f"{name}: its config changes the data section; every benchmarked model "
                         "must see the same split (params.yaml's data section)")
    cfg = params.train
    steps = inputs.steps_per_epoch(len(splits.x_train), cfg.batch_size)
    callback = KerasProbe(probe, cfg.batch_size, steps * cfg.batch_size)
    with tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as checkpoints:
        result = training.train(splits, shared, params.model, cfg, checkpoints,
                                callbacks=(callback,), verbose=0)
    return result.model, result.facts["prior"]


def set_threads(threads: int) -> None:
    """Give TensorFlow (and torch, when present) `threads` CPU threads; 0 keeps their default."""
    if threads <= 0:
        return
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    if baselines.torch_available():
        import torch

        torch.set_num_threads(threads)


def count_params(model: Any) -> int:
    if hasattr(model, "net"):
        return int(sum(p.numel() for p in model.net.parameters()))
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def final_metrics(model: Any, splits: data.Splits, settings: Settings) -> dict:
    """The evaluate stage's numbers (its own code path) on the test set, summarised; the whole
    metrics dictionary is kept under `evaluation`."""
    params = config.load_params()
    cfg = dataclasses.replace(params.evaluate, **settings.evaluate)
    judge = classifier.load_classifier(settings.classifier_path)
    metrics = evaluation.evaluate(model, judge, splits.x_test, splits.y_test, None, cfg)
    test, samples = metrics["test"]["bernoulli"], metrics["samples"]
    return {
        "test_neg_elbo": test["neg_elbo"],
        "test_rec_nll": test["rec_nll"],
        "test_kl": test["kl"],
        "iwae_nll": test["iwae_nll"],
        "iwae_k": cfg.iwae_samples,
        "recognisable": samples["recognisable"],
        "class_entropy": samples["class_entropy"],
        "frechet": samples["frechet"],
        "frechet_floor": samples["frechet_floor"],
        "active_units": metrics["test"]["active_units"],
        "eval_s": metrics["meta"]["seconds"]["total"],
        "evaluation": metrics,
    }


TRAINERS = {
    baselines.KERAS_IO: train_keras_io,
    baselines.PYTORCH_MLP: train_pytorch_mlp,
}


def measure(name: str, settings: Settings) -> tuple[dict, Any]:
    """Train `name` for the budget, probing its curve, then compute its final numbers;
    returns them with the trained model."""
    set_threads(settings.threads)  # before TensorFlow starts its runtime
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
        model, result["prior"] = train_with_pipeline_code(name, splits, probe, settings)
    train_facts = probe.finish()
    result.update(
        status="ok",
        n_params=count_params(model),
        train=train_facts,
        target=compare.target_from_curve(train_facts["curve"]),
        final=final_metrics(model, splits, settings),
        load_after=os.getloadavg()[0],
    )
    return result, model


def train_judge(settings: Settings, path: str | Path) -> None:
    """Train the digit classifier on the shared split's training images and save it."""
    set_threads(settings.threads)
    splits, params = shared_splits(settings)
    cfg = dataclasses.replace(params.classifier, **settings.classifier)
    model, facts = classifier.train_classifier(splits.x_train, splits.y_train, cfg, verbose=2)
    facts["test_accuracy"] = classifier.accuracy(model, splits.x_test, splits.y_test)
    print(json.dumps(facts), flush=True)
    classifier.save_classifier(model, path)


SAMPLES_FOR_PICTURE = 12


def samples_path(out_path: str | Path) -> Path:
    """Where a model's picture samples go, next to its result."""
    return Path(out_path).with_suffix(".samples.npy")


def main(argv: list[str]) -> int:
    if argv[0] == "--train-classifier":
        train_judge(Settings.from_json(argv[1]), argv[2])
        return 0
    name, settings_path, out_path = argv
    settings = Settings.from_json(settings_path)
    result, model = measure(name, settings)
    samples = evaluation.prior_samples(model, SAMPLES_FOR_PICTURE, settings.seed,
                                       SAMPLES_FOR_PICTURE)
    np.save(samples_path(out_path), samples)
    Path(out_path).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
