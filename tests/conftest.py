"""Shared fixtures: repository paths and a quiet TensorFlow."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_MIRROR = REPO_ROOT.parent / "shared" / "datasets" / "mnist"


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def shared_mirror() -> Path:
    if not (SHARED_MIRROR / "SHA256SUMS").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the local MNIST mirror at {SHARED_MIRROR}")
        pytest.skip(f"no local MNIST mirror at {SHARED_MIRROR}")
    return SHARED_MIRROR
