"""Shared fixtures: repository paths, the local MNIST mirror, and repo copies for e2e tests."""

import os
from pathlib import Path

import pytest

from helpers import copy_repo, pipeline_env, run_dvc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MIRROR = REPO_ROOT.parent / "shared" / "datasets" / "mnist"


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
