"""Shared fixtures: repository paths, the local MNIST mirror, repo copies for e2e tests, and
private MLflow stores."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import clone_repo, copy_repo, git, pipeline_env, run_dvc, set_params

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Hermetic: what a developer exported for their own runs (a team server, a data source, a DVC
# experiment's variables) must not reach the tests; a test that wants one passes it explicitly.
for _var in [v for v in os.environ if v.startswith(("MLFLOW_", "DVC_")) or v == "MNIST_VAE_SOURCE"]:
    del os.environ[_var]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MIRROR = REPO_ROOT.parent / "shared" / "datasets" / "mnist"


@pytest.fixture(autouse=True)
def no_tracking_uri_from_an_earlier_test():
    """Each test starts with MLflow's in-process URIs unset, whatever the test before it set."""
    if "mlflow" in sys.modules:
        mlflow = sys.modules["mlflow"]
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)  # which leaves MLFLOW_REGISTRY_URI set: drop it too
    os.environ.pop("MLFLOW_REGISTRY_URI", None)
    yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_mirror() -> Path:
    if not (SHARED_MIRROR / "SHA256SUMS").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the local MNIST mirror at {SHARED_MIRROR}")
        pytest.skip(f"no local MNIST mirror at {SHARED_MIRROR}")
    return SHARED_MIRROR


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """A fresh git repo holding this repository's files (what a commit would hold)."""
    return copy_repo(tmp_path / "repo")


@pytest.fixture(scope="session")
def downloaded_repo(tmp_path_factory, shared_mirror) -> Path:
    """A repo copy where `dvc repro download` ran from the local mirror, shared by slow tests.

    Treat it as read-only: `helpers.clone_repo(downloaded_repo, tmp_path / "repo")` gives a
    test its own copy (DVC cache and data/mnist.npz included) to run later stages in.
    """
    repo = copy_repo(tmp_path_factory.mktemp("downloaded") / "repo")
    run_dvc(repo, "repro", "download",
            env=pipeline_env(repo, MNIST_VAE_SOURCE=str(shared_mirror)))
    return repo


CI_OVERLAY = "configs/ci.yaml"  # the small-subset settings CI and the e2e tests use


@pytest.fixture(scope="session")
def built_repo(downloaded_repo, tmp_path_factory) -> Path:
    """A committed repo copy where `dvc repro` ran every stage once with the CI overlay.

    Its MLflow store is the embedded default (<repo>/mlflow.db). Treat it as read-only:
    `clone_repo(built_repo, tmp_path / "repo")` gives a test its own copy.
    """
    repo = clone_repo(downloaded_repo, tmp_path_factory.mktemp("built") / "repo")
    set_params(repo, yaml.safe_load((repo / CI_OVERLAY).read_text()))
    run_dvc(repo, "repro", env=pipeline_env(repo), timeout=1200)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny pipeline built")
    return repo


# --- MLflow: private stores (mlflow imported lazily: most tests never need it) ----------

@pytest.fixture(scope="session")
def empty_store_db(tmp_path_factory) -> Path:
    """An empty, migrated MLflow database: creating one takes seconds, copying it none."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    with contextlib.chdir(path.parent):  # where the `Default` experiment's ./mlruns goes
        MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def store(tmp_path, monkeypatch, empty_store_db) -> Path:
    """A fresh working directory whose embedded MLflow store nobody else sees."""
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "DVC_ROOT", "DVC_EXP_NAME",
                "DVC_EXP_BASELINE_REV", "DVC_STAGE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(empty_store_db, tmp_path / "mlflow.db")
    import mlflow

    mlflow.set_tracking_uri(None)  # whatever an earlier test set in-process
    mlflow.set_registry_uri(None)
    yield tmp_path
    mlflow.end_run()
    mlflow.set_tracking_uri(None)
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def tiny_vae_file(tmp_path_factory) -> Path:
    """A tiny untrained VAE saved once per session; copy it where a test needs a model."""
    from mlflow_helpers import save_tiny_vae

    path = tmp_path_factory.mktemp("tiny-vae") / "vae.keras"
    save_tiny_vae(path)
    return path


@pytest.fixture
def tmpfs(tmp_path):
    """Mount real small file systems: `tmpfs("1m")` is a directory on a fresh 1 MiB tmpfs.

    Needs root and mount permission: skipped where mounting is denied, a failure under CI.
    """
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                               str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            why = f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})"
            pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=True)
