"""End to end with real servers on 127.0.0.1: a tiny `dvc repro` tracked by an `mlflow server`
(checked through its REST API), the champion served by `mlflow models serve` (valid and
invalid requests), and a stage that meets an unreachable server."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.models import Model

from helpers import clone_repo, pipeline_env, run_dvc, run_stage, set_params, unused_port
from mlflow_helpers import VENV_BIN, subprocess_env
from servers import mlflow_server, start, stop, wait_ready

pytestmark = pytest.mark.slow

TINY = {
    "data": {"val_size": 500, "train_limit": 500, "test_limit": 200},
    "model": {"latent_dim": 4},
    "train": {"epochs": 2, "batch_size": 100, "jit_compile": False},
    "classifier": {"epochs": 1},
    "evaluate": {"iwae_samples": 4, "iwae_images": 50, "prior_samples": 200},
    "render": {"samples_grid": 4, "manifold_size": 5},
    "tracking": {"serve_max_rows": 16},
}


def _get(base: str, endpoint: str, **query) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}?" + urllib.parse.urlencode(query)
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def _post(url: str, body: bytes | dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """`mlflow server` on a free 127.0.0.1 port with its own SQLite store and artifacts."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as (uri, _):
        yield uri


@pytest.fixture(scope="module")
def tracked_repo(downloaded_repo, tracking_server, tmp_path_factory):
    """A tiny pipeline run by `dvc repro` against the tracking server."""
    repo = clone_repo(downloaded_repo, tmp_path_factory.mktemp("tracked") / "repo")
    set_params(repo, TINY)
    run_dvc(repo, "repro", env=pipeline_env(repo, MLFLOW_TRACKING_URI=tracking_server),
            timeout=1200)
    return repo


def test_the_run_and_the_model_version_are_on_the_server(tracked_repo, tracking_server):
    run_id = json.loads((tracked_repo / "models" / "mlflow_run.json").read_text())["run_id"]
    experiment = _get(tracking_server, "experiments/get-by-name",
                      experiment_name="mnist-vae")["experiment"]
    runs = _post(f"{tracking_server}/api/2.0/mlflow/runs/search",
                 {"experiment_ids": [experiment["experiment_id"]]})[1]["runs"]
    assert [r["info"]["run_id"] for r in runs] == [run_id], "one run for the whole pipeline"
    run = runs[0]
    assert run["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert tags["mnist_vae.stages"] == "train,register"
    assert tags["mlflow.source.git.commit"] and "data.sha256" in tags
    assert params["train.epochs"] == "2" and params["model.latent_dim"] == "4"
    assert params["evaluate.iwae_samples"] == "4" and params["render.samples_grid"] == "4"
    eval_json = json.loads((tracked_repo / "metrics" / "eval.json").read_text())
    assert metrics["test/bernoulli/neg_elbo"] == pytest.approx(
        eval_json["test"]["bernoulli"]["neg_elbo"])
    history = _get(tracking_server, "metrics/get-history", run_id=run_id,
                   metric_key="val_loss")["metrics"]
    assert sorted(m["step"] for m in history) == [0, 1]
    files = {f["path"] for f in _get(tracking_server, "artifacts/list", run_id=run_id)["files"]}
    assert {"params.yaml", "dvc.lock", "provenance.json", "eval.json", "plots"} <= files
    plots = {f["path"] for f in _get(tracking_server, "artifacts/list", run_id=run_id,
                                     path="plots")["files"]}
    assert {"plots/samples.png", "plots/progress.png", "plots/digits.png",
            "plots/styles.png"} <= plots
    assert metrics["digits/styles/agreement"] == pytest.approx(
        eval_json["digits"]["styles"]["agreement"])

    champion = _get(tracking_server, "registered-models/alias", name="mnist-vae",
                    alias="champion")["model_version"]
    assert champion["version"] == "1" and champion["run_id"] == run_id
    registered = json.loads((tracked_repo / "models" / "registered.json").read_text())
    assert registered["run_id"] == run_id and registered["version"] == 1
    assert registered["aliases"] == ["challenger", "champion"]
    version_tags = {t["key"]: t["value"] for t in champion["tags"]}
    assert float(version_tags["test/bernoulli/neg_elbo"]) == pytest.approx(
        metrics["test/bernoulli/neg_elbo"])
    assert set(champion["aliases"]) == {"champion", "challenger"}
    mlflow.set_tracking_uri(tracking_server)  # models:/ URIs resolve through the global one
    try:
        mlmodel = mlflow.artifacts.download_artifacts(
            "models:/mnist-vae@champion/MLmodel", dst_path=str(tracked_repo.parent / "champion"))
    finally:  # unset (and its variable with it), so later tests keep their own stores
        mlflow.set_tracking_uri(None)
    inputs = Model.load(mlmodel).signature.inputs.to_dict()  # what the UI shows
    assert [(c["name"], c["type"], c["required"]) for c in inputs] == [
        ("z", "array", False), ("digit", "long", False), ("seed", "long", False)]


def test_the_champion_serves_digits_and_rejects_bad_requests(tracked_repo, tracking_server,
                                                             tmp_path):
    port = unused_port()
    log = tmp_path / "serve.log"
    env = subprocess_env(MLFLOW_TRACKING_URI=tracking_server)
    env.pop("PYTHONPATH")  # the model carries its own code
    proc = start([VENV_BIN / "mlflow", "models", "serve", "-m", "models:/mnist-vae@champion",
                  "--env-manager", "local", "-h", "127.0.0.1", "-p", port], log, env, tmp_path)
    try:
        seconds = wait_ready(f"http://127.0.0.1:{port}/ping", proc, log)
        print(f"mlflow models serve ready in {seconds:.1f} s")
        url = f"http://127.0.0.1:{port}/invocations"
        z = np.random.default_rng(0).standard_normal((3, 4)).round(4).tolist()
        status, reply = _post(url, {"inputs": z})
        assert status == 200, reply
        images = np.asarray(reply["predictions"])
        assert images.shape == (3, 28, 28) and images.min() >= 0 and images.max() <= 1
        bad = {
            "wrong width": {"inputs": [[0.0, 0.0, 0.0]]},
            "not numbers": {"inputs": [["a", 0, 0, 0]]},
            "too many rows": {"inputs": [[0.0] * 4] * 17},
            "not JSON": b"digits please",
        }
        for what, body in bad.items():
            status, reply = _post(url, body)
            assert 400 <= status < 500, (what, status, reply)
            assert reply.get("message"), what
        assert "between 1 and 16 latent vectors" in _post(url, bad["too many rows"])[1]["message"]
        status, reply = _post(url, {"instances": z[:1]})
        assert status == 200 and np.asarray(reply["predictions"]).shape == (1, 28, 28)
        _check_digit_requests(url)
    finally:
        stop(proc)


def _check_digit_requests(url: str) -> None:
    """Digit records: the same record draws the same image, bad digits get 400 with a message,
    and the server keeps serving after each."""
    asked = {"dataframe_records": [{"digit": 7, "seed": 3}, {"digit": 0, "seed": 1}]}
    status, reply = _post(url, asked)
    assert status == 200, reply
    images = np.asarray(reply["predictions"])
    assert images.shape == (2, 28, 28) and images.min() >= 0 and images.max() <= 1
    again = np.asarray(_post(url, {"dataframe_records": [{"digit": 7, "seed": 3}]})[1][
        "predictions"])
    np.testing.assert_allclose(again[0], images[0], atol=1e-6)
    for digit, message in [(10, "digit must be 0-9, got 10"), (-1, "digit must be 0-9, got -1"),
                           ("x", "digit is a string"), (2.5, "whole number 0-9, got 2.5"),
                           (True, "digit is a boolean")]:
        status, reply = _post(url, {"dataframe_records": [{"digit": digit, "seed": 0}]})
        assert status == 400 and message in reply.get("message", ""), (digit, status, reply)
        status, _ = _post(url, {"dataframe_records": [{"digit": 4}]})
        assert status == 200, f"the server stopped serving after digit {digit!r}"


def test_an_unreachable_server_fails_training_fast_naming_the_uri(downloaded_repo, tmp_path):
    repo = clone_repo(downloaded_repo, tmp_path / "repo")
    before = _files(repo / "dvclive")  # what git carries there (the committed summary)
    uri = f"http://127.0.0.1:{unused_port()}"
    start = time.monotonic()
    result = run_stage(repo, "train", env=pipeline_env(repo, MLFLOW_TRACKING_URI=uri),
                       check=False, timeout=120)
    seconds = time.monotonic() - start
    print(f"train failed after {seconds:.1f} s")
    assert result.returncode != 0
    assert f"MLflow tracking server {uri} is unreachable" in result.stderr
    assert not (repo / "models" / "vae.keras").exists()
    assert _files(repo / "dvclive") == before and not (repo / ".checkpoints").exists()


def _files(directory: Path) -> dict[str, bytes]:
    """Every file under `directory` with its bytes ({} when there is no such directory)."""
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}
