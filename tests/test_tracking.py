"""MLflow runs on real, private SQLite stores: what one pipeline run records (train opens the
run, register reopens it), failures, runs restored from DVC's run cache, and reruns."""

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlflow_helpers import (
    METRIC,
    git_repo,
    run_register,
    tiny_params,
    write_eval,
    write_params_yaml,
    write_png,
)
from mnist_vae import continuation, provenance, registry, tracking
from mnist_vae.files import file_sha256, write_json
from mnist_vae.model import load_vae


@pytest.fixture(autouse=True)
def _tiny_model(tiny_vae_file):
    global TINY_VAE_FILE
    TINY_VAE_FILE = tiny_vae_file


def _train(params, epochs=0):
    """What stages/train.py does, in miniature: the same tracking calls around a tiny fit."""
    paths = params.paths
    with tracking.training_run(params) as run:
        tracking.log_identity(params)
        tracking.log_params(params, "train")
        Path(paths.model).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TINY_VAE_FILE, paths.model)
        if epochs:
            vae = load_vae(paths.model)
            vae.compile(optimizer="adam")
            x = np.random.default_rng(0).random((16, 28, 28, 1)).astype("float32")
            vae.fit(x, validation_data=(x[:8],), epochs=epochs, batch_size=8, verbose=0,
                    callbacks=[tracking.epoch_metrics_callback(params.tracking.outage_s)])
            vae.save(paths.model)
        facts = {"epochs_run": epochs, "wall_time_s": 1.5}
        write_json(paths.train_facts, facts)
        tracking.log_metrics(tracking.numeric_items(facts, prefix="fit"))
        tracking.log_files(paths.train_facts, *tracking.PIPELINE_FILES, paths.provenance)
        tracking.write_run_pointer(paths.run_id)
    return run


def _register(params, neg_elbo=100.0):
    """evaluate's and render's outputs, then the real register stage; returns its record."""
    write_eval(params, neg_elbo)
    write_png(Path(params.paths.plots) / "samples.png")
    write_png(Path(params.paths.plots) / "progress" / "epoch.png")
    return run_register(params)


def _pipeline_files(root: Path, params):
    write_params_yaml(root, params)
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    prov = root / params.paths.provenance
    prov.parent.mkdir(parents=True, exist_ok=True)
    prov.write_text(json.dumps({"files": {"train-images-idx3-ubyte.gz": {"sha256": "ab" * 32}}}))
    (root / params.paths.data).write_bytes(b"not really an npz, but checksummed all the same")


# --- one run across train -> evaluate -> render ---------------------------------------------

def test_one_run_holds_params_curves_metrics_artifacts_and_tags(store, monkeypatch):
    params = tiny_params()
    _pipeline_files(store, params)
    commit = git_repo(store)
    monkeypatch.setenv("DVC_EXP_NAME", "exp-tiny")
    train = _train(params, epochs=2)
    record = _register(params)
    assert record["run_id"] == train.run_id, "register adds to the training run"
    client = MlflowClient()
    run = client.get_run(train.run_id)

    assert run.info.status == "FINISHED"
    assert run.info.run_name == "exp-tiny"
    assert run.data.params["train.batch_size"] == str(params.train.batch_size)
    assert run.data.params["model.latent_dim"] == "3"
    assert run.data.params["model.encoder.filters"] == "[4, 8]"
    assert run.data.params["tracking.champion_metric"] == METRIC
    assert run.data.params["render.seed"] == "0" and run.data.params["evaluate.seed"] == "0"
    for key in ("loss", "val_loss", "kl", "val_reconstruction"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1], key
    assert run.data.metrics[METRIC] == 100.0
    assert run.data.metrics["fit/epochs_run"] == 2
    assert run.data.metrics["meta/seconds/total"] == 1.0  # evaluate's facts, not its metrics
    assert run.data.tags["mlflow.source.git.commit"] == commit
    assert run.data.tags["git.dirty"] == "false"
    assert run.data.tags["dvc.exp_name"] == "exp-tiny"
    assert run.data.tags["data.sha256"] == file_sha256(store / params.paths.data)
    assert run.data.tags["data.provenance.files.train-images-idx3-ubyte.gz.sha256"] == "ab" * 32
    assert run.data.tags[tracking.TAG_STAGES] == "train,register"
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["mnist"]

    artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert {"params.yaml", "dvc.lock", "provenance.json", "train.json", "eval.json",
            "eval_facts.json", "plots"} <= artifacts
    plots = {f.path for f in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/samples.png", "plots/progress"}
    assert run.outputs.model_outputs, "the evaluated model is logged to the run"
    assert json.loads(Path(params.paths.run_id).read_text())["run_id"] == run.info.run_id
    assert json.loads(Path(params.paths.registered).read_text()) == record
    assert record["version"] == 1 and record["aliases"] == ["challenger", "champion"]
    artifact_dir = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifact_dir.is_relative_to(store / "mlartifacts")


def test_run_name_without_dvc_experiment_is_date_and_short_commit(monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    import datetime as dt
    name = provenance.run_name("0123456789abcdef", dt.datetime(2026, 1, 2, 3, 4, 5))
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
            tracking.training_run(params) as run:
        raise RuntimeError("loss diverged")
    assert MlflowClient().get_run(run.run_id).info.status == "FAILED"
    assert not Path(params.paths.run_id).exists()
    assert mlflow.active_run() is None


def test_failed_registration_marks_the_run_failed_and_registers_nothing(store):
    params = tiny_params()
    train = _train(params)
    with pytest.raises(ValueError, match="cannot log the model"), \
            continuation.reopened_run(params, "register"):
        raise ValueError("cannot log the model")
    client = MlflowClient()
    assert client.get_run(train.run_id).info.status == "FAILED"
    assert client.search_model_versions(f"name='{params.tracking.registered_model}'") == []


def test_a_missing_champion_metric_fails_before_anything_is_registered(store):
    params = tiny_params(tracking={"champion_metric": "test/no_such_metric"})
    _train(params)
    with pytest.raises(registry.RegistryError,
                       match="test/no_such_metric.*test/bernoulli/neg_elbo"):
        _register(params)
    assert not Path(params.paths.registered).exists()
    assert MlflowClient().search_model_versions(f"name='{params.tracking.registered_model}'") == []


# --- runs restored from DVC's run cache, and re-run stages ---------------------------------

def test_outputs_restored_for_a_store_without_the_run_start_a_tagged_run(store, capsys):
    params = tiny_params()
    Path(params.paths.model).parent.mkdir(parents=True)
    shutil.copyfile(TINY_VAE_FILE, params.paths.model)
    write_json(params.paths.run_id,
               {"run_id": "0" * 32, "run_name": "lost-run"})
    record = _register(params)
    run = MlflowClient().get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "lost-run-register"
    assert run.data.tags[tracking.TAG_NEW_RUN_REASON] == continuation.REASON_RESTORED
    assert run.data.tags[tracking.TAG_MODEL_RUN] == "0" * 32
    assert run.data.params["model.latent_dim"] == "3"  # the training params are still there
    assert run.data.metrics[METRIC] == 100.0 and record["version"] == 1
    assert "not in this store" in capsys.readouterr().err


def test_a_rerun_stage_logs_to_a_new_run_linked_to_the_model_run(store):
    params = tiny_params()
    first = _train(params)
    _register(params, 100.0)
    again = _register(params, 99.0)  # evaluate re-ran on the same model (e.g. new eval code)
    assert again["run_id"] != first.run_id
    client = MlflowClient()
    assert client.get_run(first.run_id).data.metrics[METRIC] == 100.0
    rerun = client.get_run(again["run_id"])
    assert rerun.data.metrics[METRIC] == 99.0
    assert rerun.data.tags[tracking.TAG_MODEL_RUN] == first.run_id
    assert rerun.data.tags[tracking.TAG_NEW_RUN_REASON] == continuation.REASON_RERUN
    assert again["version"] == 2 and again["aliases"] == ["challenger", "champion"]


def test_changed_stage_params_do_not_overwrite_logged_ones(store):
    params = tiny_params()
    first = _train(params)
    changed = tiny_params(data={"test_limit": 100})  # evaluate reads it, train did not rerun
    run_id = _register(changed)["run_id"]
    assert run_id != first.run_id
    assert MlflowClient().get_run(run_id).data.params["data.test_limit"] == "100"
    assert MlflowClient().get_run(first.run_id).data.params["data.test_limit"] == "0"


# --- dvc.yaml and the params each stage logs -----------------------------------------------

def test_logged_sections_cover_every_param_dvc_yaml_declares(repo_root):
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    assert set(tracking.STAGE_SECTIONS) <= set(stages)
    for stage in tracking.STAGE_SECTIONS:
        # a run that register starts anew logs the training params too
        logged = {*tracking.STAGE_SECTIONS[stage], *tracking.STAGE_SECTIONS["train"]}
        for entry in stages[stage].get("params", []):
            keys = entry if isinstance(entry, dict) else [entry]
            for key in keys:
                section = str(key).split(".", 1)[0]
                assert section == "paths" or section in logged, (
                    f"{stage} reads {key} but tracking.STAGE_SECTIONS does not log it")


def test_the_logged_model_loads_back_as_the_vae(store):
    params = tiny_params()
    _train(params)
    _register(params)
    run_id = json.loads(Path(params.paths.run_id).read_text())["run_id"]
    model_id = MlflowClient().get_run(run_id).outputs.model_outputs[0].model_id
    loaded = mlflow.keras.load_model(f"models:/{model_id}", load_model_kwargs={"compile": False})
    original = load_vae(params.paths.model)
    z = np.zeros((2, 3), "float32")
    np.testing.assert_allclose(loaded.decode(z), original.decode(z), atol=1e-6)


def _failing(codes: list[str]):
    """A `send` that fails with each MLflow error code in turn, then succeeds; counts calls."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ErrorCode

    calls = []

    def send():
        calls.append(1)
        if len(calls) <= len(codes):
            code = ErrorCode.Value(codes[len(calls) - 1])
            raise MlflowException("store says no", error_code=code)

    return send, calls


def test_a_store_outage_shorter_than_the_bound_is_waited_out(capsys):
    send, calls = _failing(["TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR"])
    tracking.resend_through_outage(send, outage_s=5, what="epoch 3 metrics", pause_s=0.01)
    assert len(calls) == 3
    said = capsys.readouterr().err.splitlines()
    assert len(said) == 2 and "tracking.outage_s" in said[0], said
    assert said[1] == "tracking: the store is back; epoch 3 metrics logged"


def test_a_store_outage_past_the_bound_fails_and_a_refusal_fails_at_once():
    from mlflow.exceptions import MlflowException

    send, calls = _failing(["TEMPORARILY_UNAVAILABLE"] * 1000)
    with pytest.raises(MlflowException, match="store says no"):
        tracking.resend_through_outage(send, outage_s=0.2, what="x", pause_s=0.01)
    assert 2 <= len(calls) < 1000
    send, calls = _failing(["INVALID_PARAMETER_VALUE", "INTERNAL_ERROR"])
    with pytest.raises(MlflowException):
        tracking.resend_through_outage(send, outage_s=5, what="x", pause_s=0.01)
    assert len(calls) == 1, "a 4xx refusal is not resent"


def test_an_epoch_whose_reply_was_lost_after_the_write_is_stored_once(store, monkeypatch):
    params = tiny_params()
    real = MlflowClient.log_batch
    lost = []

    def write_then_lose_reply(self, *args, **kwargs):
        real(self, *args, **kwargs)
        if not lost:
            lost.append(1)
            from mlflow.exceptions import MlflowException
            raise MlflowException("connection reset", error_code="INTERNAL_ERROR")

    monkeypatch.setattr(MlflowClient, "log_batch", write_then_lose_reply)
    monkeypatch.setattr(tracking.time, "sleep", lambda s: None)
    with tracking.training_run(params) as run:
        tracking.log_epoch(0, {"loss": 3.5, "val_loss": 4.0}, outage_s=5)
    for key in ("loss", "val_loss"):
        assert len(MlflowClient().get_metric_history(run.run_id, key)) == 1, key
