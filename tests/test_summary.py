"""The summary printed at the end of `make repro`: numbers, changes since HEAD, where to look."""

import json
import sys

import pytest

from helpers import clone_repo, git, pipeline_env, run
from mnist_vae import summary
from mnist_vae.config import Params

METRICS = {
    "test": {"bernoulli": {"neg_elbo": 91.42, "iwae_nll": 86.95}},
    "samples": {"recognisable": 0.942, "frechet": 3.5, "frechet_floor": 0.4},
    "meta": {"trained_view": "bernoulli"},
}


def _with(neg_elbo, recognisable):
    return {**METRICS, "test": {"bernoulli": {"neg_elbo": neg_elbo, "iwae_nll": 86.95}},
            "samples": {**METRICS["samples"], "recognisable": recognisable}}


def test_each_headline_says_which_way_it_moved_since_head():
    lines = summary.metric_lines(METRICS, _with(neg_elbo=92.42, recognisable=0.95))
    text = "\n".join(lines)
    assert "-ELBO (test, bernoulli)" in text and "91.42 nats" in text
    assert "(-1.00 vs HEAD's 92.42 nats: better)" in text
    assert "94.2%" in text and "(-0.8% vs HEAD's 95.0%: worse)" in text
    assert "IWAE NLL (test)" in text and "(same as HEAD)" in text
    assert "Frechet distance" in text and "(Frechet of test vs test)" in text


def test_without_a_previous_build_there_is_nothing_to_compare():
    text = "\n".join(summary.metric_lines(METRICS, None))
    assert "HEAD" not in text and "91.42 nats" in text and "86.95 nats" in text


def test_the_iwae_is_the_trained_views():
    metrics = {**METRICS, "meta": {"trained_view": "gaussian"},
               "test": {"bernoulli": {"neg_elbo": 91.0}, "gaussian": {"iwae_nll": -700.5}}}
    assert "-700.50 nats" in "\n".join(summary.metric_lines(metrics, None))


def test_outside_a_build_it_says_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no git repository, no outputs, no MLflow store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mlflow_run.json").write_text('{"run_id": "abc", "run_name": "r"}')
    text = summary.summary(Params())
    assert "Metrics: metrics/eval.json is missing (run `make repro`)" in text
    assert "Pictures: none in plots/" in text
    assert "MLflow run: abc (r, experiment mnist-vae)" in text
    assert ("Registered: none recorded (models/registered.json is missing: the register stage "
            "has not run)") in text


def test_the_registered_version_comes_from_the_register_stages_record(tmp_path):
    record = tmp_path / "registered.json"
    record.write_text('{"run_id": "abc", "model": "mnist-vae", "version": 3, '
                      '"aliases": ["challenger", "champion"], "tracking_uri": "sqlite:///x.db"}')
    assert summary.registered_version(record) == (
        "mnist-vae version 3 (challenger, champion) when registered, in sqlite:///x.db")


@pytest.mark.slow
def test_summary_of_a_built_repo_names_its_numbers_pictures_run_and_version(built_repo,
                                                                          tmp_path):
    repo = clone_repo(built_repo, tmp_path / "repo")
    env = pipeline_env(repo)
    command = [sys.executable, "-m", "mnist_vae.summary"]
    out = run(command, repo, env).stdout
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    neg_elbo = metrics["test"]["bernoulli"]["neg_elbo"]
    assert f"{neg_elbo:.2f} nats  (same as HEAD)" in out  # built_repo committed its build
    for name in ("samples", "reconstructions", "interpolations", "manifold", "progress"):
        assert f"plots/{name}.png" in out, name
    run_id = json.loads((repo / "models" / "mlflow_run.json").read_text())["run_id"]
    assert f"MLflow run: {run_id}" in out
    assert "Registered: mnist-vae version 1 (challenger, champion)" in out
    assert "make ui" in out and "make plots" in out

    # a later build: HEAD holds the first build's numbers, the worktree a worse one
    metrics["test"]["bernoulli"]["neg_elbo"] = neg_elbo + 1.5
    (repo / "metrics" / "eval.json").write_text(json.dumps(metrics))
    out = run(command, repo, env).stdout
    assert f"(+1.50 vs HEAD's {neg_elbo:.2f} nats: worse)" in out

    # a first build: no metrics committed at HEAD
    git(repo, "rm", "-q", "--cached", "metrics/eval.json")
    git(repo, "commit", "-q", "-m", "forget the metrics")
    assert "no previous build committed at git HEAD" in run(command, repo, env).stdout
