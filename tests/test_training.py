"""Training on tiny synthetic data: learning, early stopping, the NaN guard,
checkpoints, and a run killed with SIGKILL then resumed matching an uninterrupted one."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from unittest.mock import ANY

import keras
import numpy as np
import pytest

from mnist_vae.checkpoints import (
    CHECKPOINT_FILE,
    CheckpointMismatch,
    checkpoint_key,
    load_checkpoint,
)
from mnist_vae.config import (
    DataConfig,
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    Params,
    PriorConfig,
    TrainConfig,
)
from mnist_vae.data import split
from mnist_vae.training import TrainingDiverged, compiled_vae, train

SRC = Path(__file__).resolve().parents[1] / "src"

TINY_MODEL = ModelConfig(
    latent_dim=2,
    encoder=EncoderConfig(filters=(4,), kernel_sizes=(3,), strides=(4,), dropout=(0.1,)),
    decoder=DecoderConfig(reshape=(7, 7, 4), filters=(4,), kernel_sizes=(3,), strides=(4,)),
    prior=PriorConfig(conditional=False),  # the tiny data's labels are all 0
)
TINY_TRAIN = TrainConfig(batch_size=16, epochs=3, learning_rate=0.01, patience=10,
                         progress_samples=4)
TINY_DATA = DataConfig(val_size=16)


def _blobs(n: int, seed: int) -> np.ndarray:
    """uint8 images of one bright square each: structure a tiny VAE can learn."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), np.uint8)
    for image, (r, c) in zip(images, rng.integers(2, 18, (n, 2)), strict=True):
        image[r:r + 8, c:c + 8] = 255
    return images


def _splits(n_train=64, data_cfg=TINY_DATA):
    arrays = {"x_train": _blobs(n_train + data_cfg.val_size, 0),
              "y_train": np.zeros(n_train + data_cfg.val_size, np.uint8),
              "x_test": _blobs(8, 1), "y_test": np.zeros(8, np.uint8)}
    return split(arrays, data_cfg)


# --- training ----------------------------------------------------------------------------

class Records:
    def __init__(self):
        self.records = []

    def log_epoch(self, record):
        self.records.append(record)


def test_training_lowers_the_loss_and_reports_facts(tmp_path):
    splits = _splits()
    logger = Records()
    cfg = dataclasses.replace(TINY_TRAIN, epochs=4)
    result = train(splits, TINY_DATA, TINY_MODEL, cfg, tmp_path / "ckpt", logger, verbose=0)
    losses = [r["val/loss"] for r in logger.records]
    assert len(losses) == 4 and losses[-1] < losses[0] - 50
    assert [r["epoch"] for r in logger.records] == [1, 2, 3, 4]
    assert result.history == logger.records
    facts = result.facts
    assert facts["epochs_run"] == 4 and facts["steps_per_epoch"] == 4
    assert facts["best_epoch"] == int(np.argmin(losses)) + 1
    assert facts["best_val_loss"] == pytest.approx(min(losses))
    assert facts["images_per_s"] > 0 and facts["resumed_from_epoch"] == 0
    assert result.progress.shape == (4, 4, 28, 28)
    assert not np.allclose(result.progress[0], result.progress[-1])


def test_kl_warmup_ramps_the_weight_linearly_to_beta(tmp_path):
    cfg = dataclasses.replace(TINY_TRAIN, epochs=3, beta=2.0, kl_warmup_epochs=2)
    logger = Records()
    train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "ckpt", logger, verbose=0)
    # 4 steps per epoch, 8 warm-up steps: the weight after step s is beta * s / 8.
    weights = [r["kl_weight"] for r in logger.records]
    np.testing.assert_allclose(weights, [2.0 * 5 / 8, 2.0, 2.0], rtol=1e-6)


class ScriptedValLoss(keras.callbacks.Callback):
    """Replaces each epoch's val_loss with a scripted value and remembers the trained weights."""

    def __init__(self, values):
        super().__init__()
        self.values, self.weights = values, []

    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = self.values[epoch]
        self.weights.append([w.numpy() for w in self.model.trainable_weights])


def test_early_stopping_keeps_the_best_epochs_weights(tmp_path):
    script = ScriptedValLoss([300.0, 250.0, 260.0, 255.0, 240.0, 999.0])
    cfg = dataclasses.replace(TINY_TRAIN, epochs=6, patience=2)
    result = train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "ckpt",
                   callbacks=(script,), verbose=0)
    assert result.facts["epochs_run"] == 4 and result.facts["stopped_early"]
    assert result.facts["best_epoch"] == 2 and result.facts["best_val_loss"] == 250.0
    saved_weights = [w.numpy() for w in result.model.trainable_weights]
    for saved, best in zip(saved_weights, script.weights[1], strict=True):
        np.testing.assert_array_equal(saved, best)


class PoisonAtEpoch(keras.callbacks.Callback):
    """Sets the decoder's first kernel to NaN when the given epoch (0-based) begins."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            kernel = self.model.decoder.layers[1].kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


def test_nan_guard_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = dataclasses.replace(TINY_TRAIN, epochs=4)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(TrainingDiverged) as err:
        train(_splits(), TINY_DATA, TINY_MODEL, cfg, ckpt, callbacks=(PoisonAtEpoch(2),),
              verbose=0)
    message = str(err.value)
    assert "loss is not finite (nan) in epoch 3, seen at step" in message
    assert f"checkpoint of epoch 2 is kept in {ckpt}" in message
    assert "train.learning_rate" in message
    model = compiled_vae(TINY_MODEL, cfg, steps=4)
    state, best, progress = load_checkpoint(ckpt / CHECKPOINT_FILE, model)
    assert state.epochs_done == 2 and len(progress) == 2
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert all(np.isfinite(w).all() for w in best)


def test_checkpoint_from_another_architecture_is_refused(tmp_path):
    cfg = dataclasses.replace(TINY_TRAIN, epochs=1)
    train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "ckpt", verbose=0)
    other = dataclasses.replace(TINY_MODEL, latent_dim=3)
    with pytest.raises(CheckpointMismatch, match="do not fit this model"):
        load_checkpoint(tmp_path / "ckpt" / CHECKPOINT_FILE, compiled_vae(other, cfg, 4))


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_an_unusable_checkpoint_is_set_aside_and_training_starts_over(tmp_path, capsys, damage):
    cfg = dataclasses.replace(TINY_TRAIN, epochs=1)
    ckpt = tmp_path / "ckpt"
    train(_splits(), TINY_DATA, TINY_MODEL, cfg, ckpt, verbose=0)
    file = ckpt / CHECKPOINT_FILE
    if damage == "truncated":  # a write cut short, e.g. by a full disk
        file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
        model_cfg = TINY_MODEL
    else:  # a checkpoint from another architecture under the same key
        model_cfg = dataclasses.replace(TINY_MODEL, latent_dim=3)
    original = file.read_bytes()
    capsys.readouterr()
    start = time.monotonic()
    result = train(_splits(), TINY_DATA, model_cfg, dataclasses.replace(cfg, epochs=2), ckpt,
                   verbose=0)
    print(f"{damage} checkpoint: set aside, training restarted after "
          f"{time.monotonic() - start:.1f} s of training")
    assert result.facts["resumed_from_epoch"] == 0 and result.facts["epochs_run"] == 2
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("ckpt.corrupt-")]
    assert len(aside) == 1 and (aside[0] / CHECKPOINT_FILE).read_bytes() == original
    said = [line for line in capsys.readouterr().err.splitlines() if "unusable" in line]
    assert len(said) == 1 and str(aside[0]) in said[0]


def test_checkpoint_key_follows_training_params_and_data(tmp_path):
    data = tmp_path / "mnist.npz"
    data.write_bytes(b"one")
    base = Params()
    key = checkpoint_key(base, data)
    assert key == checkpoint_key(base, data)
    assert key != checkpoint_key(dataclasses.replace(
        base, train=dataclasses.replace(base.train, epochs=3)), data)
    assert key != checkpoint_key(dataclasses.replace(
        base, model=dataclasses.replace(base.model, latent_dim=3)), data)
    assert key == checkpoint_key(dataclasses.replace(  # training never reads the test set
        base, data=dataclasses.replace(base.data, test_limit=5)), data)
    data.write_bytes(b"two")
    assert key != checkpoint_key(base, data)


# --- resume after SIGKILL ----------------------------------------------------------------

DRIVER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import keras
    import numpy as np
    from mnist_vae.config import DataConfig, ModelConfig, TrainConfig, parse_section
    from mnist_vae.data import Splits
    from mnist_vae.training import train

    spec = json.loads(Path(sys.argv[1]).read_text())
    arrays = np.load(spec["data"])
    splits = Splits(**{k: arrays[k] for k in arrays.files})
    model_cfg = parse_section(ModelConfig, spec["model"], "model")
    cfg = parse_section(TrainConfig, spec["train"], "train")
    data_cfg = parse_section(DataConfig, spec["data_cfg"], "data")

    class Block(keras.callbacks.Callback):
        # Mid-epoch: after the second step of epoch `block_epoch`, say so and hang.
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == spec["block_epoch"] and batch == 1:
                Path(spec["marker"]).write_text("blocked")
                time.sleep(600)

    callbacks = (Block(),) if spec.get("block_epoch") is not None else ()
    result = train(splits, data_cfg, model_cfg, cfg, spec["checkpoint"], callbacks=callbacks,
                   verbose=0)
    np.savez(spec["out"], *result.model.get_weights(), progress=result.progress)
    Path(spec["out"] + ".json").write_text(json.dumps(
        {"facts": result.facts, "history": result.history}))
""")


def _run_driver(tmp_path, name, spec, block_epoch=None):
    spec = {**spec, "block_epoch": block_epoch, "marker": str(tmp_path / f"{name}.blocked"),
            "out": str(tmp_path / f"{name}.npz")}
    spec_path = tmp_path / f"{name}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": str(SRC), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(spec_path)],
                            env=env), spec


def _wait_for(path: Path, proc, timeout=240):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"driver exited with {proc.returncode} before blocking"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout} s"
        time.sleep(0.2)


def test_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    data_cfg = dataclasses.replace(TINY_DATA, binarize="dynamic")
    splits = _splits(data_cfg=data_cfg)
    np.savez(tmp_path / "splits.npz", **dataclasses.asdict(splits))
    cfg = dataclasses.replace(TINY_TRAIN, epochs=4, kl_warmup_epochs=2, lr_schedule="cosine")
    spec = {"data": str(tmp_path / "splits.npz"), "model": dataclasses.asdict(TINY_MODEL),
            "train": dataclasses.asdict(cfg), "data_cfg": dataclasses.asdict(data_cfg)}

    killed, _ = _run_driver(tmp_path, "killed", {**spec, "checkpoint": str(tmp_path / "a")},
                            block_epoch=2)
    _wait_for(tmp_path / "killed.blocked", killed)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert not (tmp_path / "killed.npz").exists()
    with np.load(tmp_path / "a" / CHECKPOINT_FILE) as npz:
        assert json.loads(str(npz["state"]))["epochs_done"] == 2

    resumed, resumed_spec = _run_driver(tmp_path, "resumed",
                                        {**spec, "checkpoint": str(tmp_path / "a")})
    straight, straight_spec = _run_driver(tmp_path, "straight",
                                          {**spec, "checkpoint": str(tmp_path / "b")})
    assert resumed.wait(timeout=240) == 0 and straight.wait(timeout=240) == 0

    a = json.loads(Path(resumed_spec["out"] + ".json").read_text())
    b = json.loads(Path(straight_spec["out"] + ".json").read_text())
    assert a["facts"]["resumed_from_epoch"] == 2 and b["facts"]["resumed_from_epoch"] == 0
    assert len(a["history"]) == 4
    with np.load(resumed_spec["out"]) as wa, np.load(straight_spec["out"]) as wb:
        assert wa.files == wb.files
        for key in wa.files:
            np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)
    # Weights are bit for bit (above). The per-epoch running means Keras reports are summed in
    # float32 by multithreaded kernels, whose reduction order can move the last bit (~1e-7).
    assert [e.keys() for e in a["history"]] == [e.keys() for e in b["history"]]
    for ea, eb in zip(a["history"], b["history"], strict=True):
        assert ea == pytest.approx(eb, rel=1e-6, abs=0), ea["epoch"]


# --- the fitted prior ----------------------------------------------------------------------

def test_training_ends_by_fitting_the_mixture_prior_to_the_training_codes(tmp_path):
    # One full-covariance Gaussian: 64 codes determine it, so it generalises to the 16
    # validation codes (4 components on 64 codes overfit: worse than N(0, I) on validation).
    model_cfg = dataclasses.replace(TINY_MODEL,
                                    prior=PriorConfig(components=1, conditional=False))
    result = train(_splits(), TINY_DATA, model_cfg, TINY_TRAIN, tmp_path / "ckpt", verbose=0)
    facts = result.facts["prior"]
    assert facts["kind"] == "mixture" and facts["components"] == 1 and facts["codes"] == 64
    assert facts["codes_log_prob"] > facts["codes_log_prob_standard"]  # ML beats N(0, I)
    assert facts["val_codes_log_prob"] > facts["val_codes_log_prob_standard"]  # and generalises
    prior = result.model.prior_distribution()
    assert prior.components == 1 and not prior.is_standard


def test_a_standard_prior_stays_n01(tmp_path):
    model_cfg = dataclasses.replace(TINY_MODEL,
                                    prior=PriorConfig(kind="standard", conditional=False))
    cfg = dataclasses.replace(TINY_TRAIN, epochs=1)
    result = train(_splits(), TINY_DATA, model_cfg, cfg, tmp_path / "ckpt", verbose=0)
    assert result.facts["prior"] == {"kind": "standard"}
    assert result.model.prior_distribution().is_standard


def test_a_mixture_too_big_for_the_data_fails_before_training(tmp_path):
    model_cfg = dataclasses.replace(TINY_MODEL,
                                    prior=PriorConfig(components=65, conditional=False))
    logger = Records()
    with pytest.raises(ValueError, match=r"model\.prior\.components: 65 .* 64 training images"):
        train(_splits(), TINY_DATA, model_cfg, TINY_TRAIN, tmp_path / "ckpt", logger, verbose=0)
    assert logger.records == [] and not (tmp_path / "ckpt").exists()


def test_the_digit_prior_leaves_the_model_and_its_prior_exactly_as_they_were(tmp_path):
    splits = dataclasses.replace(_splits(100), y_train=np.arange(100) % 10)
    cfg = dataclasses.replace(TINY_TRAIN, epochs=1)
    results = {}
    for conditional in (False, True):
        model_cfg = dataclasses.replace(TINY_MODEL, prior=PriorConfig(
            components=2, conditional=conditional, components_per_digit=1))
        results[conditional] = train(splits, TINY_DATA, model_cfg, cfg,
                                     tmp_path / str(conditional), verbose=0)
    plain, drawing = results[False], results[True]
    for a, b in zip(plain.model.prior_distribution().__dict__.values(),
                    drawing.model.prior_distribution().__dict__.values(), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(plain.model.get_weights(), drawing.model.get_weights(), strict=False):
        np.testing.assert_array_equal(a, b)  # the shared weights, in the same order
    assert drawing.facts["prior"].pop("digits")["per_digit"]["3"]["codes"] == 10
    assert drawing.facts["prior"] == plain.facts["prior"] | {"seconds": ANY}
    assert drawing.model.draws_digits and not plain.model.draws_digits
    # one component per digit: the mean of that digit's codes z ~ q(z|x), drawn as training does
    mean, log_var = (np.asarray(t, np.float64) for t in drawing.model.encode(splits.x_train))
    codes = mean + np.exp(0.5 * log_var) * np.random.default_rng(cfg.seed).standard_normal(
        mean.shape)
    for digit in (3, 8):
        np.testing.assert_allclose(drawing.model.prior_distribution(digit).means[0],
                                   codes[splits.y_train == digit].mean(axis=0), rtol=1e-5)


def test_a_digit_prior_too_big_for_the_data_fails_before_training(tmp_path):
    model_cfg = dataclasses.replace(TINY_MODEL, prior=PriorConfig(
        components=1, conditional=True, components_per_digit=7))
    with pytest.raises(ValueError, match=r"components_per_digit: 7 components .* got 6 per "
                                         r"digit from 64 training images"):
        train(_splits(), TINY_DATA, model_cfg, TINY_TRAIN, tmp_path / "ckpt", verbose=0)


def test_the_digit_prior_can_be_fitted_to_the_encoders_means(tmp_path):
    splits = dataclasses.replace(_splits(100), y_train=np.arange(100) % 10)
    model_cfg = dataclasses.replace(TINY_MODEL, prior=PriorConfig(
        components=2, conditional=True, components_per_digit=1, digit_codes="mean"))
    result = train(splits, TINY_DATA, model_cfg, dataclasses.replace(TINY_TRAIN, epochs=1),
                   tmp_path / "ckpt", verbose=0)
    means = np.asarray(result.model.encode(splits.x_train)[0], np.float64)
    np.testing.assert_allclose(result.model.prior_distribution(6).means[0],
                               means[splits.y_train == 6].mean(axis=0), rtol=1e-5)


# --- precision -----------------------------------------------------------------------------

def test_mixed_bfloat16_training_is_deterministic_and_saves_a_float32_model(tmp_path):
    from mnist_vae.model import load_vae
    from mnist_vae.training import save_model

    cfg = dataclasses.replace(TINY_TRAIN, epochs=2, precision="mixed_bfloat16")
    runs = [train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / f"ckpt{i}", verbose=0)
            for i in range(2)]
    assert runs[0].history == runs[1].history
    for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    float32 = train(_splits(), TINY_DATA, TINY_MODEL, dataclasses.replace(cfg, precision="float32"),
                    tmp_path / "ckpt-f32", verbose=0)
    assert float32.history != runs[0].history  # bf16 really computed something else
    assert runs[0].facts["precision"] == "mixed_bfloat16"
    save_model(runs[0].model, tmp_path / "vae.keras")
    loaded = load_vae(tmp_path / "vae.keras")
    assert {layer.dtype_policy.name for layer in loaded.encoder.layers + loaded.decoder.layers
            } == {"float32"}
    decoded = loaded.decode(np.zeros((3, TINY_MODEL.latent_dim), "float32"))
    assert decoded.dtype == "float32"
    np.testing.assert_allclose(np.asarray(decoded), np.asarray(runs[0].model.decode(
        np.zeros((3, TINY_MODEL.latent_dim), "float32"))))


def test_auto_times_both_precisions_then_trains_exactly_as_the_precision_it_picked(tmp_path):
    cfg = dataclasses.replace(TINY_TRAIN, epochs=2, precision="auto")
    picked = train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "a" / "ckpt", verbose=0)
    choice = picked.facts["precision_choice"]
    assert choice["asked"] == "auto" and choice["used"] == picked.facts["precision"]
    assert (tmp_path / "a" / "precision.json").is_file()
    explicit = train(_splits(), TINY_DATA, TINY_MODEL,
                     dataclasses.replace(cfg, precision=choice["used"]),
                     tmp_path / "b" / "ckpt", verbose=0)
    assert picked.history == explicit.history  # timing the candidates left no trace
    again = train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "a" / "ckpt", verbose=0)
    assert again.facts["precision_choice"]["source"].endswith("(measured earlier)")
    assert again.history == picked.history


# --- the time budget ------------------------------------------------------------------------

class TenSecondTicks:
    """A clock for training.py whose every perf_counter() reading is 10 s after the last."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 10.0
        return self.now

    def process_time(self):
        return time.process_time()


def test_plan_epochs_fits_the_budget_at_the_pace_given():
    from mnist_vae.training import plan_epochs

    assert plan_epochs(20, 1, 17.0, 17.0, 600.0) == 20  # this machine: today's epochs
    assert plan_epochs(20, 1, 37.0, 37.0, 600.0) == 16  # a machine twice as slow
    assert plan_epochs(4, 1, 10.0, 10.0, 25.0) == 2
    assert plan_epochs(4, 1, 10.0, 10.0, 5.0) == 1  # at least the epoch already trained
    assert plan_epochs(300, 2, 50.0, 22.0, 3600.0) == 163
    assert plan_epochs(300, 2, 50.0, 40.0, 60.0) == 2  # the budget is spent: stop here


def test_the_running_pace_errs_slow():
    from mnist_vae.training import recent_pace

    assert recent_pace([12.0]) == 12.0
    assert recent_pace([40.0, 10.0, 10.0, 10.0]) == 10.0  # the traced first epoch drops out
    assert recent_pace([10.0, 10.0, 10.0, 40.0]) == 40.0  # a slowdown counts at once
    assert recent_pace([10.0, 40.0, 10.0]) == 20.0  # one fast epoch does not hide a slow one


def test_a_time_budget_plans_the_epochs_spreads_the_schedule_and_keeps_the_best(
        tmp_path, monkeypatch):
    from mnist_vae import training

    monkeypatch.setattr(training, "time", TenSecondTicks())  # every epoch takes 10 s
    script = ScriptedValLoss([250.0, 300.0, 200.0, 100.0])
    cfg = dataclasses.replace(TINY_TRAIN, epochs=4, time_budget_s=25.0)
    logger = Records()
    result = train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "ckpt", logger,
                   callbacks=(script,), verbose=0)
    facts = result.facts
    assert facts["planned_epochs"] == 2 and facts["epochs_run"] == 2
    assert facts["time_budget_s"] == 25.0 and not facts["stopped_early"]
    assert facts["best_epoch"] == 1 and facts["best_val_loss"] == 250.0
    for saved, best in zip(result.model.trainable_weights, script.weights[0], strict=True):
        np.testing.assert_array_equal(saved.numpy(), best)
    rates = [r["learning_rate"] for r in logger.records]
    # epoch 1 ran on the 4-epoch schedule; from then on the cosine ends at 0 after epoch 2
    assert rates[0] == pytest.approx(0.01 * 0.5 * (1 + np.cos(np.pi / 4)), rel=1e-5)
    assert rates[1] == pytest.approx(0.0, abs=1e-9)


def test_without_a_time_budget_nothing_is_planned_and_the_result_is_unchanged(
        tmp_path, monkeypatch):
    from mnist_vae import training

    plain = train(_splits(), TINY_DATA, TINY_MODEL, dataclasses.replace(TINY_TRAIN, epochs=2),
                  tmp_path / "a", verbose=0)
    monkeypatch.setattr(training, "time", TenSecondTicks())
    ample = train(_splits(), TINY_DATA, TINY_MODEL,
                  dataclasses.replace(TINY_TRAIN, epochs=2, time_budget_s=1e6),
                  tmp_path / "b", verbose=0)
    assert plain.facts["planned_epochs"] == ample.facts["planned_epochs"] == 2
    assert plain.history == ample.history  # a budget that fits every epoch changes nothing


class ScriptedEpochs(keras.callbacks.Callback):
    """A clock for training.py under which epoch k takes seconds[k]: it moves on as each epoch
    ends, before the bookkeeping (which runs after the extra callbacks) reads it."""

    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.now = list(seconds), 0.0

    def perf_counter(self):
        return self.now

    def process_time(self):
        return time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        self.now += self.seconds[epoch]


@pytest.mark.parametrize(("seconds", "budget_s", "plans"), [
    # the host slows from epoch 4: the plan of 8 epochs (130 s) is cut at once to 6 (90 s)
    ([10, 10, 10, 20, 20, 20, 20, 20], 100.0, [[1, 8], [4, 6]]),
    # it slows, then slows more: cut twice, from 10 epochs (176 s) to 7 (110 s)
    ([10, 10, 15, 15, 20, 20, 20, 20, 20, 20], 120.0, [[1, 10], [3, 8], [5, 7]]),
    # the host speeds up after a slow first epoch: the plan is never stretched
    ([30, 5, 5, 5, 5, 5, 5, 5], 100.0, [[1, 3]]),
])
def test_a_time_budget_cuts_the_plan_when_the_host_slows_and_never_stretches_it(
        tmp_path, monkeypatch, seconds, budget_s, plans):
    from mnist_vae import training

    host = ScriptedEpochs(seconds)
    monkeypatch.setattr(training, "time", host)
    cfg = dataclasses.replace(TINY_TRAIN, epochs=len(seconds), time_budget_s=budget_s)
    logger = Records()
    result = train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "ckpt", logger,
                   callbacks=(host,), verbose=0)
    facts, planned = result.facts, plans[-1][1]
    assert facts["plans"] == plans
    assert facts["planned_epochs"] == facts["epochs_run"] == planned
    assert facts["train_time_s"] == sum(seconds[:planned]) <= budget_s
    assert logger.records[-1]["learning_rate"] == pytest.approx(0.0, abs=1e-9)
    rates = [r["learning_rate"] for r in logger.records]
    assert rates == sorted(rates, reverse=True)  # a cut only ever lowers the rate


def test_a_resumed_run_keeps_cutting_the_plan_from_the_pace_it_saved(tmp_path, monkeypatch):
    from mnist_vae import training

    seconds = [10, 10, 10, 20, 20, 20, 20, 20]
    cfg = dataclasses.replace(TINY_TRAIN, epochs=8, time_budget_s=100.0)
    host = ScriptedEpochs(seconds)
    monkeypatch.setattr(training, "time", host)
    whole = train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "whole",
                  callbacks=(host,), verbose=0)
    host = ScriptedEpochs(seconds)
    monkeypatch.setattr(training, "time", host)
    with pytest.raises(KeyboardInterrupt):  # killed after the cut, before epoch 5
        train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "killed",
              callbacks=(host, StopAtEpoch(4)), verbose=0)
    host = ScriptedEpochs(seconds)
    monkeypatch.setattr(training, "time", host)
    resumed = train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "killed",
                    callbacks=(host,), verbose=0)
    assert resumed.facts["resumed_from_epoch"] == 4
    assert resumed.facts["plans"] == whole.facts["plans"] == [[1, 8], [4, 6]]
    assert resumed.history == whole.history


class StopAtEpoch(keras.callbacks.Callback):
    """Raises when the given epoch (0-based) begins: a run killed between epochs."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_resumed_run_keeps_the_plan_its_first_epoch_made(tmp_path, monkeypatch):
    from mnist_vae import training

    monkeypatch.setattr(training, "time", TenSecondTicks())
    cfg = dataclasses.replace(TINY_TRAIN, epochs=4, time_budget_s=25.0)
    whole = train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "whole", verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "killed",
              callbacks=(StopAtEpoch(1),), verbose=0)
    resumed = train(_splits(), TINY_DATA, TINY_MODEL, cfg, tmp_path / "killed", verbose=0)
    assert resumed.facts["resumed_from_epoch"] == 1 and resumed.facts["planned_epochs"] == 2
    assert resumed.history == whole.history
