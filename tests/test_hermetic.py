"""The suite is hermetic: what a developer built or exported in their checkout changes nothing."""

import subprocess
import sys

import pytest

from helpers import REPO_ROOT, copy_repo, git, pipeline_outputs, unused_port

pytestmark = pytest.mark.slow

# What `make repro`, `make ui` and an interrupted training leave in a checkout, as junk.
JUNK = {
    "dvclive/metrics.json": "{not json",
    "dvclive/plots/metrics/train/loss.tsv": "junk",
    "metrics/eval.json": "{}",
    "models/train.json": "junk",
    "models/vae.keras": "not a model",
    "data/provenance.json": "junk",
    "mlflow.db": "not a database",
    ".checkpoints/0123abcd/checkpoint.npz": "truncated",
    "plots/samples.png": "not a png",
}
# A representative slow test: it asserts that a failed train stage leaves no outputs behind.
PROBE = "tests/test_mlflow_e2e.py::test_an_unreachable_server_fails_training_fast_naming_the_uri"


def test_build_outputs_are_pipeline_outputs():
    """Every junk path above is one the pipeline writes: the copy rule must cover them all."""
    outputs = pipeline_outputs(REPO_ROOT)
    for rel in JUNK:
        assert any(rel == o or rel.startswith(o + "/") for o in outputs) or rel == "mlflow.db", rel


def test_a_slow_test_passes_in_a_checkout_full_of_build_outputs(tmp_path):
    checkout = copy_repo(tmp_path / "checkout")
    (tmp_path / "shared").symlink_to(REPO_ROOT.parent / "shared")  # the mirror beside the repo
    for rel, text in JUNK.items():
        (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
        (checkout / rel).write_text(text)
    (checkout / "dvc.lock").write_text("schema: '2.0'\nstages: {junk: {cmd: false}}\n")
    git(checkout, "add", "dvc.lock")  # staged, as `dvc repro` leaves it
    env = {
        "PATH": f"{REPO_ROOT / '.venv' / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{unused_port()}",  # exported by the developer
        "MNIST_VAE_SOURCE": str(tmp_path / "nowhere"),
        "DVC_ROOT": str(tmp_path / "elsewhere"),
    }
    done = subprocess.run([sys.executable, "-m", "pytest", PROBE, "-q", "-p", "no:cacheprovider"],
                          cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout[-3000:] + done.stderr
