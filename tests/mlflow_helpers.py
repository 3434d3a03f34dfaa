"""Shared by the MLflow tests: a private SQLite store per test, tiny params and a tiny VAE
(whose model the model and evaluation tests build too)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np

from benchmarks.ar_sampling import with_random_residual
from mnist_vae.config import Params, parse_params
from mnist_vae.model import build_vae

SRC = Path(__file__).resolve().parents[1] / "src"
VENV_BIN = Path(__file__).resolve().parents[1] / ".venv" / "bin"
METRIC = "test/bernoulli/neg_elbo"
TINY_MODEL = {
    "latent_dim": 3,
    "encoder": {"filters": [4, 8], "kernel_sizes": [3, 3], "strides": [2, 2]},
    "decoder": {"reshape": [7, 7, 4], "filters": [8, 4], "kernel_sizes": [3, 3],
                "strides": [2, 2]},
}


def tiny_params(**sections) -> Params:
    """Params with a tiny model; `sections` override whole sections (`train={...}`)."""
    return parse_params({"model": TINY_MODEL, **sections})


def store_uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def save_tiny_vae(path: str | Path, seed: int = 0):
    """A tiny untrained VAE saved at `path` (weights differ per seed)."""
    import keras

    keras.utils.set_random_seed(seed)
    vae = build_vae(tiny_params().model)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    vae.save(path)
    return vae


def tiny_autoregressive_vae(seed: int = 0):
    """A tiny VAE with a 4-channel autoregressive head whose residual (zero when new) has
    seeded random weights, so the pixels before each one count."""
    vae = build_vae(tiny_params(model={**TINY_MODEL, "decoder": {
        **TINY_MODEL["decoder"], "autoregressive_channels": 4}},
        data={"binarize": "dynamic"}).model)
    with_random_residual(vae.ar_head, seed)
    return vae


def write_eval(params: Params, neg_elbo: float) -> None:
    """paths.metrics and paths.eval_facts shaped like the evaluate stage's."""
    path = Path(params.paths.metrics)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "test": {"bernoulli": {"neg_elbo": neg_elbo, "iwae_nll": neg_elbo - 2}},
        "samples": {"recognisable": 0.5},
    }))
    Path(params.paths.eval_facts).write_text(json.dumps(
        {"likelihood": "bernoulli", "seconds": {"total": 1.0}}))


def write_params_yaml(root: Path, params: Params) -> None:
    """`params` as root/params.yaml, so a stage's `load_params()` reads exactly them."""
    import yaml

    plain = json.loads(json.dumps(dataclasses.asdict(params)))  # tuples -> lists
    (Path(root) / "params.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))


def run_register(params: Params) -> dict:
    """The register stage's main(), run in the cwd with `params`; returns its record."""
    import importlib

    write_params_yaml(Path.cwd(), params)
    importlib.import_module("stages.register").main()
    return json.loads(Path(params.paths.registered).read_text())


def write_png(path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(path)


def git_repo(path: Path) -> str:
    """Make `path` a git repository with one commit of what is there; return the commit."""
    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com",
                               *args], cwd=path, check=True, capture_output=True, text=True)
    (path / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n")  # as in the repository
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "init", "--allow-empty")
    return git("rev-parse", "HEAD").stdout.strip()


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child process that must import this worktree's package."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(SRC)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env.update(extra)
    return env
