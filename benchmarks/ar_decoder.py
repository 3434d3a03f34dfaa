"""Does a local autoregressive decoder head buy nats? Trained against the default, measured.

The default decoder's 784 pixels are independent given z. This variant keeps it and adds a
PixelCNN-style head (the pipeline's `model.decoder.autoregressive_channels: 32`, a
`mnist_vae.autoregressive.LocalARHead`): a causal 7x7 convolution of the image itself (each
pixel sees only the pixels before it in raster order), added to a 1x1 projection of the
decoder's last hidden layer, one 1x1 hidden layer, and a residual onto the decoder's own
logits (zero at the start, so training starts from the default model). p(x | z) is then a
product of conditionals p(x_ij | x_<ij, z): still normalised, scored exactly in one pass,
sampled in 784.

Both models train on `configs/long.yaml`'s data (dynamically binarised) for the same epochs
(or the epochs that fit `--time-budget-s`), in this one process, with the same seed, schedule
and 50-component mixture prior; the report gives each one's seconds per epoch, best validation
-ELBO and the IWAE NLL (the pipeline's own `iwae_estimate`, same draws) on the evaluate stage's
seeded subset of the binarised test set. `--score` rescores saved models (either kind);
`--iwae-part K/N` scores part K of N of those images with the very draws a whole run gives
them, so parts scored in separate sittings make the whole run's number (`--combine`):

    PYTHONPATH=src:. .venv/bin/python -m benchmarks.ar_decoder --epochs 15 \
        --iwae-samples 1000 --iwae-images 1000 --out FILE.json
    PYTHONPATH=src:. .venv/bin/python -m benchmarks.ar_decoder --epochs 300 \
        --time-budget-s 3600 --models local_ar --save-dir DIR --out FILE.json
    PYTHONPATH=src:. .venv/bin/python -m benchmarks.ar_decoder --score DIR/local_ar.keras \
        models/vae.keras --iwae-samples 5000 --iwae-precision bfloat16 --samples-png S.png
    PYTHONPATH=src:. .venv/bin/python -m benchmarks.ar_decoder --score DIR/local_ar.keras \
        --iwae-samples 5000 --iwae-images 0 --iwae-part 1/2 --out PART1.json
    PYTHONPATH=src:. .venv/bin/python -m benchmarks.ar_decoder --combine PART1.json PART2.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mnist_vae import evaluation, losses
from mnist_vae.config import Params
from mnist_vae.data import Splits, load_arrays
from mnist_vae.inputs import prior_fit_images, steps_per_epoch, training_batches, validation_images
from mnist_vae.model import VAE, build_vae, count_params, load_vae
from mnist_vae.overlays import params_with_overlay
from mnist_vae.prior_fit import fit_prior
from mnist_vae.rendering import save_png, sheet
from mnist_vae.training import configure_determinism, learning_rate, plan_epochs, plan_schedule

ROOT = Path(__file__).resolve().parents[1]
OVERLAY = ROOT / "configs" / "long.yaml"
EVAL_BATCH = 500
SEED = 0  # the drawn digits'
AR_CHANNELS = 32  # the head's width
PLAN_AFTER = 2  # the epoch whose pace plans a time budget (epoch 1 also traces the graph)


class BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the epoch with the lowest validation loss, and each epoch's time."""

    def __init__(self):
        super().__init__()
        self.best, self.best_loss, self.best_epoch, self.seconds = None, np.inf, 0, []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        if logs["val_loss"] < self.best_loss:
            self.best_loss, self.best_epoch = float(logs["val_loss"]), epoch + 1
            self.best = self.model.get_weights()


class TimeBudget(keras.callbacks.Callback):
    """Plans the epochs that fit `budget_s` at epoch 2's pace (epoch 1 also traces the graph),
    spreads the cosine schedule over them, and stops there, or sooner if the budget runs out."""

    def __init__(self, budget_s: float, steps: int, clock: BestWeights):
        super().__init__()
        self.budget_s, self.steps, self.clock, self.planned = budget_s, steps, clock, None

    def on_epoch_end(self, epoch, logs=None):
        done, spent, pace = epoch + 1, sum(self.clock.seconds), self.clock.seconds[-1]
        if done == PLAN_AFTER:
            self.planned = plan_epochs(self.params["epochs"], done, spent, pace, self.budget_s)
            plan_schedule(self.model, self.planned, self.steps)
        if done == self.planned or spent + pace > self.budget_s:
            self.model.stop_training = True


def build(kind: str, params: Params) -> VAE:
    """A fresh model of `kind` ('default' or 'local_ar'), seeded from params."""
    configure_determinism(params.train)
    if kind == "default":
        return build_vae(params.model)
    decoder = dataclasses.replace(params.model.decoder, autoregressive_channels=AR_CHANNELS)
    return build_vae(dataclasses.replace(params.model, decoder=decoder))


def train_model(model: VAE, splits: Splits, params: Params) -> dict[str, Any]:
    """Fit for params.train.epochs, or the epochs of them that fit train.time_budget_s (cosine
    schedule over them, KL warm-up); keep the best epoch."""
    cfg, steps = params.train, steps_per_epoch(len(splits.x_train), params.train.batch_size)
    model.compile(keras.optimizers.Adam(learning_rate(cfg, steps)), beta=cfg.beta,
                  kl_warmup_steps=cfg.kl_warmup_epochs * steps)
    val = tf.data.Dataset.from_tensor_slices(validation_images(splits, params.data))
    keep = BestWeights()
    budget = [] if cfg.time_budget_s is None else [TimeBudget(cfg.time_budget_s, steps, keep)]
    batches = training_batches(splits.x_train, cfg, params.data.binarize == "dynamic")
    model.fit(batches, epochs=cfg.epochs, steps_per_epoch=steps,
              validation_data=val.batch(EVAL_BATCH), callbacks=[keep, *budget], shuffle=False,
              verbose=2)
    model.set_weights(keep.best)
    planned = (budget[0].planned or len(keep.seconds)) if budget else cfg.epochs
    return {"epochs": len(keep.seconds), "planned_epochs": planned,
            "time_budget_s": cfg.time_budget_s, "train_s": round(sum(keep.seconds), 1),
            "median_epoch_s": round(float(np.median(keep.seconds)), 2),
            "best_epoch": keep.best_epoch, "best_val_loss": round(keep.best_loss, 3)}


def score(model: VAE, test_binarized: np.ndarray, params: Params, samples: int,
          images: int, precision: str = "float32",
          part: tuple[int, int] = (1, 1)) -> dict[str, Any]:
    """IWAE NLL (the pipeline's `iwae_estimate`, its draws) on the evaluate stage's seeded test
    subset, or on part K of N of it with the very draws a whole run gives those images;
    `precision` bfloat16 decodes in bf16 and the heaviest samples again in float32."""
    subset, chosen = scored_images(len(test_binarized), params, samples, images, part)
    view = evaluation.View("bernoulli_binarized", test_binarized[subset[chosen]],
                           losses.bernoulli_nll)
    # iwae_estimate seeds through np.random.default_rng, which takes a Generator as it is
    draws = draws_after(params.evaluate.seed + 1, chosen.start * samples * model.latent_dim)
    start = time.perf_counter()
    iwae = evaluation.iwae_estimate(model, view, samples, params.evaluate.iwae_max_batch, draws,
                                    precision)
    nll = iwae.nll
    return {"iwae_nll": round(float(nll.mean()), 4),
            "iwae_se": round(float(nll.std(ddof=1) / np.sqrt(len(nll))), 3),
            "iwae_samples": samples, "iwae_images": len(nll), "iwae_precision": precision,
            "iwae_part": f"{part[0]}/{part[1]}", "iwae_positions": [chosen.start, chosen.stop],
            "refined_fraction": round(iwae.refined_fraction, 4),
            "max_shift_nats": iwae.max_shift_nats,
            "iwae_s": round(time.perf_counter() - start, 1)}


def scored_images(n_test: int, params: Params, samples: int, images: int,
                  part: tuple[int, int]) -> tuple[np.ndarray, slice]:
    """(the evaluate stage's seeded test subset, the positions in it that `part` scores)."""
    subset = evaluation.iwae_subset(n_test, images, params.evaluate.seed)
    unit = evaluation.iwae_plan(samples, params.evaluate.iwae_max_batch)[0]
    return subset, part_of(len(subset), part, unit)


def part_of(n: int, part: tuple[int, int], unit: int) -> slice:
    """Part K of N (from 1) of n images, cut at multiples of `unit` (the images per IWAE batch,
    so a part's draws start where a whole run's do for its first image)."""
    k, parts = part
    bounds = [min(n, unit * round(i * n / parts / unit)) for i in range(parts)] + [n]
    return slice(bounds[k - 1], bounds[k])


def draws_after(seed: int, skip: int, chunk: int = 10_000_000) -> np.random.Generator:
    """The generator seeded with `seed`, moved past its first `skip` standard normals (NumPy's
    normals come out the same however the calls are split)."""
    rng = np.random.default_rng(seed)
    for done in range(0, skip, chunk):
        rng.standard_normal(min(chunk, skip - done))
    return rng


def run(kind: str, params: Params, splits: Splits, test_binarized: np.ndarray,
        samples: int, images: int, save_dir: Path | None = None) -> dict[str, Any]:
    """Train one model, fit its mixture prior, (save it,) score it."""
    model = build(kind, params)
    facts = {"model": kind, "parameters": count_params(model)} | train_model(model, splits,
                                                                               params)
    start = time.perf_counter()
    fit_prior(model, prior_fit_images(splits, params.data), validation_images(splits, params.data),
              params.model.prior, params.train.seed)
    facts["prior_fit_s"] = round(time.perf_counter() - start, 1)
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        model.save(save_dir / f"{kind}.keras")
    return facts | score(model, test_binarized, params, samples, images)


def draw(model: VAE, n: int, seed: int) -> np.ndarray:
    """n binary digits from z ~ p(z) and x ~ p(x | z): pixel by pixel with an autoregressive
    head, all at once for the default, so the two are seen alike."""
    rng = np.random.default_rng(seed)
    z = model.prior_distribution().sample(n, rng).astype("float32")
    if model.is_autoregressive:
        hidden, base = model.features(z, training=False)
        return model.ar_head.sample(hidden, base, rng.random(tuple(base.shape)[:3]))[0]
    return (rng.random((n, 28, 28, 1)) < np.asarray(model.decode(z))).astype("float32")


def kind_of(model: VAE) -> str:
    """'local_ar' or 'default', as `build` calls them."""
    return "local_ar" if model.is_autoregressive else "default"


def rescore(path: Path, params: Params, test_binarized: np.ndarray, samples: int,
            images: int, precision: str = "float32", part: tuple[int, int] = (1, 1),
            drawn_png: Path | None = None) -> dict[str, Any]:
    """Score a saved model (either kind, with its own prior) as `run` scores a trained one;
    with `drawn_png`, save there 64 digits it draws."""
    model = load_vae(path)
    facts = {"model": str(path), "kind": kind_of(model)} | score(
        model, test_binarized, params, samples, images, precision, part)
    if drawn_png is not None:
        save_png(sheet(draw(model, 64, SEED), 3, 2), drawn_png)
    return facts


def parse_part(text: str) -> tuple[int, int]:
    """'K/N' as (K, N), 1 <= K <= N; a ValueError saying how to write it otherwise."""
    k, _, n = str(text).partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise ValueError(f"{text!r}: give K/N with 1 <= K <= N, e.g. 1/2")
    return int(k), int(n)


def part_arg(text: str) -> tuple[int, int]:
    """`parse_part` for argparse, which shows an ArgumentTypeError's own words."""
    try:
        return parse_part(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def combine(reports: list[dict]) -> list[dict[str, Any]]:
    """Per model, the part results of `reports` (`--iwae-part` runs) as one whole run's; a
    ValueError naming the model if its parts are not 1..N of one N, alike and contiguous."""
    by_model: dict[str, list[dict]] = {}
    for report in reports:
        for result in report["results"]:
            part = {"date": report.get("date"), "machine": report.get("machine")} | result
            by_model.setdefault(result["model"], []).append(part)
    return [combined(model, parts) for model, parts in by_model.items()]


def combined(model: str, parts: list[dict]) -> dict[str, Any]:
    """One model's parts as a whole run's result: the mean and standard error over all images."""
    try:
        numbered = sorted(((parse_part(part["iwae_part"]), part) for part in parts),
                          key=lambda item: item[0])
    except ValueError as error:
        raise ValueError(f"{model}: iwae_part {error}") from None
    parts = [part for _, part in numbered]
    split = max(n for (_, n), _ in numbered)
    expected = [(k, split) for k in range(1, split + 1)]
    if [kn for kn, _ in numbered] != expected:
        raise ValueError(f"{model}: parts {', '.join(part['iwae_part'] for part in parts)} "
                         f"given; combine exactly "
                         f"{', '.join(f'{k}/{n}' for k, n in expected)}")
    for key in ("kind", "iwae_samples", "iwae_precision"):
        if len({part[key] for part in parts}) > 1:
            raise ValueError(f"{model}: the parts differ in {key}; score every part alike")
    starts = [part["iwae_positions"][0] for part in parts]
    if starts != [0] + [part["iwae_positions"][1] for part in parts[:-1]]:
        raise ValueError(f"{model}: the parts' images do not follow on from each other; score "
                         "them with the same --iwae-images")
    n = np.array([part["iwae_images"] for part in parts])
    mean = np.array([part["iwae_nll"] for part in parts])
    sd = np.array([part["iwae_se"] for part in parts]) * np.sqrt(n)
    whole = float(np.sum(n * mean) / n.sum())
    pooled = (np.sum((n - 1) * sd**2) + np.sum(n * (mean - whole) ** 2)) / (n.sum() - 1)
    shifts = [part["max_shift_nats"] for part in parts]
    return {"model": model, "kind": parts[0]["kind"], "iwae_nll": round(whole, 4),
            "iwae_se": round(float(np.sqrt(pooled / n.sum())), 3),
            "iwae_samples": parts[0]["iwae_samples"], "iwae_images": int(n.sum()),
            "iwae_precision": parts[0]["iwae_precision"],
            "refined_fraction": round(float(np.sum(n * [part["refined_fraction"]
                                                        for part in parts]) / n.sum()), 4),
            "max_shift_nats": None if None in shifts else max(shifts),
            "iwae_s": round(sum(part["iwae_s"] for part in parts), 1),
            "parts": [{key: part[key] for key in ("iwae_part", "date", "machine", "iwae_images",
                                                  "iwae_nll", "iwae_s")} for part in parts]}


def experiment_params(epochs: int, time_budget_s: float | None = None) -> Params:
    """configs/long.yaml over params.yaml, `epochs` of training (or those of them that fit
    `time_budget_s`), the unconditional prior only."""
    params = params_with_overlay(OVERLAY, ROOT / "params.yaml")
    prior = dataclasses.replace(params.model.prior, conditional=False)
    return dataclasses.replace(
        params, model=dataclasses.replace(params.model, prior=prior),
        train=dataclasses.replace(params.train, epochs=epochs, time_budget_s=time_budget_s))


def is_part_report(report: Any) -> bool:
    """Whether `report` is what `--score ... --iwae-part K/N --out` writes."""
    results = report.get("results") if isinstance(report, dict) else None
    return bool(results) and all(isinstance(result, dict) and "iwae_part" in result
                                 for result in results)


def combine_files(paths: list[Path], out: Path | None) -> int:
    """`--combine`: the part reports at `paths` as one whole run's report, or a one-line
    refusal (and nothing written)."""
    from benchmarks.run import print_report

    reports = []
    for path in paths:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            print(f"ar_decoder: --combine: {path}: {error}", file=sys.stderr)
            return 1
        if not is_part_report(report):
            print(f"ar_decoder: --combine: {path} is not a report of `--score ... --iwae-part`",
                  file=sys.stderr)
            return 1
        reports.append(report)
    try:
        results = combine(reports)
    except ValueError as error:
        print(f"ar_decoder: --combine: {error}", file=sys.stderr)
        return 1
    print_report({"config": reports[0].get("config"), "combined_from": list(map(str, paths)),
                  "results": results}, out)
    return 0


def drawn_png(base: Path | None, model_path: Path) -> Path | None:
    """BASE-<model file stem>.png for a model's drawn digits, or None without a base."""
    if base is None:
        return None
    return base.with_name(f"{base.stem}-{model_path.stem}{base.suffix}")


def main(argv: list[str] | None = None) -> int:
    """Train the default and the local-AR variant alike; print (and save) what each scored."""
    from benchmarks.run import print_report

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15, help="with --time-budget-s: the most")
    p.add_argument("--time-budget-s", type=float, help="train for the epochs that fit this")
    p.add_argument("--models", nargs="+", default=["default", "local_ar"],
                   choices=["default", "local_ar"])
    p.add_argument("--iwae-samples", type=int, default=1000)
    p.add_argument("--iwae-images", type=int, default=1000, help="0: the whole test set")
    p.add_argument("--iwae-part", type=part_arg, default=(1, 1), metavar="K/N",
                   help="with --score: part K of N of those images, with a whole run's draws")
    p.add_argument("--iwae-precision", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: bf16 decoding refined in float32, as the evaluate stage's")
    p.add_argument("--train-limit", type=int, default=0, help="0: all training images")
    p.add_argument("--data", type=Path, default=None, help="default: params.yaml's paths.data")
    p.add_argument("--save-dir", type=Path, help="save each trained model here as KIND.keras")
    instead = p.add_mutually_exclusive_group()
    instead.add_argument("--score", type=Path, nargs="+", metavar="MODEL.keras",
                         help="score these saved models instead of training")
    instead.add_argument("--combine", type=Path, nargs="+", metavar="PART.json",
                         help="combine the reports of --iwae-part runs into the whole run's")
    p.add_argument("--samples-png", type=Path, metavar="PATH.png",
                   help="with --score: 64 digits each model draws, as PATH-<model file>.png")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.combine:
        return combine_files(args.combine, args.out)
    params = experiment_params(args.epochs, args.time_budget_s)
    data_cfg = dataclasses.replace(params.data, train_limit=args.train_limit)
    params = dataclasses.replace(params, data=data_cfg)
    data_path = args.data or ROOT / params.paths.data
    if not data_path.is_file():
        print(f"ar_decoder: {data_path}: no such file; run `make repro` (or pass --data)",
              file=sys.stderr)
        return 1
    if args.iwae_part != (1, 1) and not args.score:
        print("ar_decoder: --iwae-part scores part of saved models; add --score MODEL.keras",
              file=sys.stderr)
        return 1
    missing = [str(path) for path in args.score or () if not path.is_file()]
    if missing:
        print(f"ar_decoder: no such model: {', '.join(missing)}; train one with --save-dir",
              file=sys.stderr)
        return 1
    splits, test_binarized = evaluation.evaluation_sets(load_arrays(data_path), data_cfg)
    positions = scored_images(len(test_binarized), params, args.iwae_samples, args.iwae_images,
                              args.iwae_part)[1]
    if positions.start == positions.stop:
        print(f"ar_decoder: --iwae-part {args.iwae_part[0]}/{args.iwae_part[1]} holds no image "
              "(parts are cut at whole IWAE batches); use fewer parts", file=sys.stderr)
        return 1
    if args.score:
        results = [rescore(path, params, test_binarized, args.iwae_samples, args.iwae_images,
                           args.iwae_precision, args.iwae_part, drawn_png(args.samples_png, path))
                   for path in args.score]
    else:
        results = [run(kind, params, splits, test_binarized, args.iwae_samples,
                       args.iwae_images, args.save_dir) for kind in args.models]
    print_report({"config": "configs/long.yaml", "results": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
