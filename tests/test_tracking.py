"""MLflow tracking on real, private SQLite stores: what one pipeline run records, failures,
runs restored from DVC's run cache, and a tracking server that does not answer."""

import json
import shutil
import socket
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlflow_helpers import (
    METRIC,
    git_repo,
    store_uri,
    tiny_params,
    write_eval,
    write_png,
)
from mnist_vae import tracking
from mnist_vae.files import write_json
from mnist_vae.model import load_vae


@pytest.fixture(autouse=True)
def _tiny_model(tiny_vae_file):
    global TINY_VAE_FILE
    TINY_VAE_FILE = tiny_vae_file


def _train(params, epochs=0):
    """What the train stage does, in miniature: fit with the run's callbacks, write outputs."""
    with tracking.stage_run(params, "train") as run:
        Path(params.paths.model).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TINY_VAE_FILE, params.paths.model)
        if epochs:
            vae = load_vae(params.paths.model)
            vae.compile(optimizer="adam")
            x = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
            vae.fit(x, validation_data=(x[:8],), epochs=epochs, batch_size=8, verbose=0,
                    callbacks=run.callbacks())
            vae.save(params.paths.model)
        Path(params.paths.train_facts).write_text(json.dumps({"epochs_run": epochs,
                                                               "wall_time_s": 1.5}))
    return run


def _evaluate(params, neg_elbo=100.0):
    with tracking.stage_run(params, "evaluate") as run:
        write_eval(params, neg_elbo)
    return run


def _render(params):
    with tracking.stage_run(params, "render") as run:
        write_png(Path(params.paths.plots) / "samples.png")
        write_png(Path(params.paths.plots) / "progress" / "epoch.png")
    return run


def _pipeline_files(root: Path, params):
    (root / "params.yaml").write_text("train:\n  epochs: 2\n")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    prov = root / params.paths.provenance
    prov.parent.mkdir(parents=True, exist_ok=True)
    prov.write_text(json.dumps({"files": {"train-images-idx3-ubyte.gz": {"sha256": "ab" * 32}}}))
    (root / params.paths.data).write_bytes(b"not really an npz, but checksummed all the same")


# --- where runs go -------------------------------------------------------------------------

def test_default_store_is_sqlite_in_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(Path(__file__).parent)  # e.g. a temporary copy under `dvc exp run`
    root = tracking.repo_root()
    assert root == tmp_path.resolve()
    uri = tracking.tracking_uri(root)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.artifact_location(uri) == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_mlflow_tracking_uri_points_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.tracking_uri(tmp_path) == "http://mlflow.example:5000"
    assert tracking.artifact_location("http://mlflow.example:5000") is None


def test_connecting_does_not_export_the_default_store(store):
    tracking.connect(tiny_params().tracking, store)
    assert mlflow.get_tracking_uri() == store_uri(store)
    assert "MLFLOW_TRACKING_URI" not in __import__("os").environ


def test_redact_hides_credentials():
    assert tracking.redact("https://u:secret@host:8443/x") == "https://***@host:8443/x"
    assert tracking.redact("http://host:5000") == "http://host:5000"


# --- one run across train -> evaluate -> render ---------------------------------------------

def test_one_run_holds_params_curves_metrics_artifacts_and_tags(store, monkeypatch):
    params = tiny_params()
    _pipeline_files(store, params)
    commit = git_repo(store)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-tiny")
    runs = [_train(params, epochs=2), _evaluate(params), _render(params)]
    assert len({r.run_id for r in runs}) == 1
    client = MlflowClient()
    run = client.get_run(runs[0].run_id)

    assert run.info.status == "FINISHED"
    assert run.info.run_name == "exp-tiny"
    assert run.data.params["train.batch_size"] == str(params.train.batch_size)
    assert run.data.params["model.latent_dim"] == "3"
    assert run.data.params["model.encoder.filters"] == "[4, 8]"
    assert run.data.params["tracking.champion_metric"] == METRIC
    for key in ("loss", "val_loss", "kl", "val_reconstruction"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1], key
    assert run.data.metrics[METRIC] == 100.0
    assert run.data.metrics["fit/epochs_run"] == 2
    assert run.data.tags["mlflow.source.git.commit"] == commit
    assert run.data.tags["git.dirty"] == "false"
    assert run.data.tags["dvc.exp_name"] == "exp-tiny"
    assert run.data.tags["data.sha256"] == tracking.file_sha256(store / params.paths.data)
    assert run.data.tags["data.provenance.files.train-images-idx3-ubyte.gz.sha256"] == "ab" * 32
    assert run.data.tags[tracking.TAG_STAGES] == "train,evaluate,render"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["mnist"]

    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"params.yaml", "dvc.lock", "provenance.json", "train.json", "eval.json",
            "plots"} <= artifacts
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/samples.png", "plots/progress"}
    assert run.outputs.model_outputs, "the evaluated model is logged to the run"
    assert json.loads(Path(params.paths.run_id).read_text())["run_id"] == run.info.run_id
    artifact_dir = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifact_dir.is_relative_to(store / "mlartifacts")


def test_run_name_without_dvc_experiment_is_date_and_short_commit(monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    import datetime as dt
    name = tracking.run_name("0123456789abcdef", dt.datetime(2026, 1, 2, 3, 4, 5))
    assert name == "2026-01-02-030405-0123456"


def test_dirty_tree_is_tagged(store):
    params = tiny_params()
    _pipeline_files(store, params)
    git_repo(store)
    (store / "params.yaml").write_text("train:\n  epochs: 3\n")
    (store / "dvc.lock").write_text("changed by dvc while running: not dirt\n")
    (store / params.paths.provenance).write_text("{}")  # a pipeline output: not dirt either
    run = MlflowClient().get_run(_train(params).run_id)
    assert run.data.tags["git.dirty"] == "true"
    assert run.data.tags["git.changed_files"] == "params.yaml"


# --- failures ------------------------------------------------------------------------------

def test_failed_training_marks_the_run_failed_and_writes_no_pointer(store):
    params = tiny_params()
    with pytest.raises(RuntimeError, match="diverged"), \
            tracking.stage_run(params, "train") as run:
        raise RuntimeError("loss diverged")
    assert MlflowClient().get_run(run.run_id).info.status == "FAILED"
    assert not Path(params.paths.run_id).exists()
    assert mlflow.active_run() is None


def test_failed_evaluation_marks_the_run_failed_and_registers_nothing(store):
    params = tiny_params()
    train = _train(params)
    with pytest.raises(ValueError, match="no test set"), \
            tracking.stage_run(params, "evaluate"):
        raise ValueError("no test set")
    client = MlflowClient()
    assert client.get_run(train.run_id).info.status == "FAILED"
    assert client.search_model_versions(f"name='{params.tracking.registered_model}'") == []


def test_a_missing_champion_metric_fails_before_anything_is_registered(store):
    params = tiny_params(tracking={"champion_metric": "test/no_such_metric"})
    _train(params)
    with pytest.raises(Exception, match="test/no_such_metric.*test/bernoulli/neg_elbo"):
        _evaluate(params)
    assert MlflowClient().search_model_versions(f"name='{params.tracking.registered_model}'") == []


# --- runs restored from DVC's run cache, and re-run stages ---------------------------------

def test_outputs_restored_for_a_store_without_the_run_start_a_tagged_run(store, capsys):
    params = tiny_params()
    Path(params.paths.model).parent.mkdir(parents=True)
    shutil.copyfile(TINY_VAE_FILE, params.paths.model)
    write_json(params.paths.run_id,
               {"run_id": "0" * 32, "run_name": "lost-run"})
    evaluate, render = _evaluate(params), _render(params)
    assert evaluate.run_id == render.run_id, "render continues evaluate's new run"
    run = MlflowClient().get_run(evaluate.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "lost-run-evaluate"
    assert run.data.tags[tracking.TAG_NEW_RUN_REASON] == tracking.REASON_RESTORED
    assert run.data.tags[tracking.TAG_MODEL_RUN] == "0" * 32
    assert run.data.params["model.latent_dim"] == "3"  # the training params are still there
    assert "not in this store" in capsys.readouterr().err


def test_a_rerun_stage_logs_to_a_new_run_linked_to_the_model_run(store):
    params = tiny_params()
    first = _train(params)
    _evaluate(params, 100.0)
    again = _evaluate(params, 99.0)  # evaluate re-ran on the same model (e.g. new eval code)
    assert again.run_id != first.run_id
    client = MlflowClient()
    assert client.get_run(first.run_id).data.metrics[METRIC] == 100.0
    rerun = client.get_run(again.run_id)
    assert rerun.data.metrics[METRIC] == 99.0
    assert rerun.data.tags[tracking.TAG_MODEL_RUN] == first.run_id
    assert rerun.data.tags[tracking.TAG_NEW_RUN_REASON] == tracking.REASON_RERUN


def test_changed_stage_params_do_not_overwrite_logged_ones(store):
    params = tiny_params()
    first = _train(params)
    changed = tiny_params(data={"test_limit": 100})  # evaluate reads it, train did not rerun
    run = _evaluate(changed)
    assert run.run_id != first.run_id
    assert MlflowClient().get_run(run.run_id).data.params["data.test_limit"] == "100"
    assert MlflowClient().get_run(first.run_id).data.params["data.test_limit"] == "0"


# --- an unreachable tracking server --------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection_fails_the_stage_before_its_body_naming_the_uri(store, monkeypatch):
    uri = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    entered = False
    with pytest.raises(tracking.TrackingError) as err, \
            tracking.stage_run(tiny_params(), "train"):
        entered = True
    assert not entered
    assert uri in str(err.value) and "unreachable" in str(err.value)


def test_a_server_that_never_answers_fails_within_the_timeout(store, monkeypatch):
    with socket.socket() as silent:  # accepts connections (backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(tracking.TrackingError, match="unreachable"):
            tracking.check_reachable(uri, timeout_s=1.0)
        assert time.monotonic() - start < 3.0


def test_any_http_answer_counts_as_reachable():
    import http.server
    import threading

    class Unauthorized(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Unauthorized)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tracking.check_reachable(f"http://127.0.0.1:{server.server_port}", timeout_s=2.0)
    finally:
        server.shutdown()


# --- dvc.yaml and the params each stage logs -----------------------------------------------

def test_logged_sections_cover_every_param_dvc_yaml_declares(repo_root):
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    tracked = [s for s in tracking.STAGE_SECTIONS if s in stages]
    if not tracked:
        pytest.skip("dvc.yaml has no tracked stage yet")
    for stage in tracked:
        for entry in stages[stage].get("params", []):
            keys = entry if isinstance(entry, dict) else [entry]
            for key in keys:
                section = str(key).split(".", 1)[0]
                assert section == "paths" or section in tracking.STAGE_SECTIONS[stage], (
                    f"{stage} reads {key} but tracking.STAGE_SECTIONS does not log it")


def test_the_logged_model_loads_back_as_the_vae(store):
    params = tiny_params()
    _train(params)
    _evaluate(params)
    run_id = json.loads(Path(params.paths.run_id).read_text())["run_id"]
    model_id = MlflowClient().get_run(run_id).outputs.model_outputs[0].model_id
    loaded = mlflow.keras.load_model(f"models:/{model_id}", load_model_kwargs={"compile": False})
    original = load_vae(params.paths.model)
    z = np.zeros((2, 3), "float32")
    np.testing.assert_allclose(loaded.decode(z), original.decode(z), atol=1e-6)
