"""The train stage as users run it: `python stages/train.py`, and `dvc repro` end to end,
including a run killed with SIGKILL and resumed by the next `dvc repro`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers import clone_repo, copy_repo, pipeline_env, run_dvc, run_stage, set_params
from mnist_vae.config import load_params
from mnist_vae.model import load_vae
from mnist_vae.overlays import load_overlay

TINY = {
    "data": {"val_size": 16, "train_limit": 64, "test_limit": 8},
    "model": {"latent_dim": 2,
              "encoder": {"filters": [4], "kernel_sizes": [3], "strides": [4]},
              "decoder": {"reshape": [7, 7, 4], "filters": [4], "kernel_sizes": [3],
                          "strides": [4]},
              "prior": {"conditional": False}},  # 64 images: too few per digit
    "train": {"epochs": 2, "batch_size": 16, "learning_rate": 0.01, "progress_samples": 4},
}


def _synthetic_mnist(path: Path) -> None:
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=rng.integers(0, 256, (80, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 80, dtype=np.uint8),
             x_test=rng.integers(0, 256, (8, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, 8, dtype=np.uint8))


@pytest.fixture
def tiny_repo(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    set_params(repo, TINY)
    _synthetic_mnist(repo / "data" / "mnist.npz")
    return repo


def test_train_stage_writes_model_facts_progress_and_dvclive(tiny_repo):
    result = run_stage(tiny_repo, "train", pipeline_env(tiny_repo))
    assert "train: best epoch" in result.stdout
    params = load_params(tiny_repo / "params.yaml")
    paths = params.paths
    vae = load_vae(tiny_repo / paths.model)
    assert vae.latent_dim == 2
    facts = json.loads((tiny_repo / paths.train_facts).read_text())
    assert facts["epochs_run"] == 2 and facts["best_epoch"] in (1, 2)
    assert facts["train_images"] == 64 and facts["images_per_s"] > 0
    assert facts["stage_wall_time_s"] >= facts["train_time_s"] > 0
    with np.load(tiny_repo / paths.progress) as progress:
        assert progress["images"].shape == (2, 4, 28, 28)
        assert list(progress["epoch"]) == [1, 2]
    metrics = json.loads((tiny_repo / paths.dvclive / "metrics.json").read_text())
    assert metrics["best_epoch"] == facts["best_epoch"] and metrics["step"] == 2
    assert metrics["best"]["val"]["loss"] == pytest.approx(facts["best_val_loss"])
    for split in ("train", "val"):
        for name in ("loss", "reconstruction", "kl"):
            rows = (tiny_repo / paths.dvclive / "plots" / "metrics" / split / f"{name}.tsv")
            assert rows.read_text().splitlines()[0] == f"step\t{name}"
            assert [line.split("\t")[0] for line in rows.read_text().splitlines()[1:]] == [
                "1", "2"]
    assert not any((tiny_repo / paths.checkpoints).glob("*/checkpoint.npz"))


@pytest.mark.slow
def test_train_stage_stops_on_divergence_without_writing_a_model(tiny_repo):
    set_params(tiny_repo, {"train": {"learning_rate": 1e30, "lr_schedule": "constant"}})
    result = run_stage(tiny_repo, "train", pipeline_env(tiny_repo), check=False)
    assert result.returncode == 1
    assert "train: loss is not finite" in result.stderr
    assert "Lower train.learning_rate" in result.stderr
    assert not (tiny_repo / "models" / "vae.keras").exists()


# --- end to end through DVC --------------------------------------------------------------

@pytest.fixture(scope="module")
def ci_repo(tmp_path_factory, request):
    """A repo with configs/ci.yaml applied whose `dvc repro train` ran once (download too)."""
    mirror = request.getfixturevalue("shared_mirror")
    repo = copy_repo(tmp_path_factory.mktemp("e2e") / "repo")
    set_params(repo, load_overlay(repo / "configs" / "ci.yaml"))
    env = pipeline_env(repo, MNIST_VAE_SOURCE=str(mirror))
    run_dvc(repo, "repro", "train", env=env)
    return repo, env


def _metrics(repo: Path) -> dict:
    return json.loads((repo / "dvclive" / "metrics.json").read_text())


@pytest.mark.slow
def test_dvc_repro_downloads_then_trains_and_dvc_sees_the_metrics(ci_repo):
    repo, env = ci_repo
    facts = json.loads((repo / "models" / "train.json").read_text())
    assert facts["train_images"] == 2000 and facts["epochs_run"] == 2
    assert load_vae(repo / "models" / "vae.keras").sample(2, seed=0).shape == (2, 28, 28, 1)
    shown = json.loads(run_dvc(repo, "metrics", "show", "--json", env=env).stdout)
    assert "best_epoch" in json.dumps(shown)
    status = run_dvc(repo, "status", "train", env=env).stdout
    assert "Data and pipelines are up to date" in status
    assert run_dvc(repo, "repro", "train", env=env).stdout.count("didn't change") >= 1


@pytest.mark.slow
def test_dvc_repro_after_sigkill_resumes_and_matches_an_uninterrupted_run(ci_repo, tmp_path):
    repo, env = ci_repo
    reference = _metrics(repo)
    killed = clone_repo(repo, tmp_path / "killed")
    env_killed = {**env, "PYTHONPATH": str(killed / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "-f", "-s", "train"],
                            cwd=killed, env=env_killed, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    checkpoints = killed / ".checkpoints"
    deadline = time.monotonic() + 300
    while not list(checkpoints.glob("*/checkpoint.npz")):
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    (checkpoint,) = checkpoints.glob("*/checkpoint.npz")
    with np.load(checkpoint) as npz:
        assert json.loads(str(npz["state"]))["epochs_done"] == 1  # of 2

    # forced: dvc.lock still names the uninterrupted run's outputs, which DVC's cache holds
    resumed = run_dvc(killed, "repro", "-f", "--no-run-cache", "-s", "train", env=env_killed)
    assert "Resuming from" in resumed.stdout and "1 epochs done" in resumed.stdout
    # Weights and validation metrics repeat exactly; Keras' running train means are summed in
    # float32 by multithreaded kernels and may move in the last bit (~1e-7), so compare them so.
    resumed_metrics = _metrics(killed)
    assert resumed_metrics["val"] == reference["val"]
    assert resumed_metrics["train"] == pytest.approx(reference["train"], rel=1e-6, abs=0)
    assert (killed / "models" / "vae.keras").exists()
    assert not list(checkpoints.glob("*/checkpoint.npz"))
