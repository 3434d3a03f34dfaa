"""Where MLflow runs go: the default store, MLFLOW_TRACKING_URI, credentials kept out of
messages, and a tracking server that does not answer."""

import os
import shutil
import socket
import time
from pathlib import Path

import mlflow
import pytest

from mlflow_helpers import store_uri, tiny_params
from mnist_vae import store as tracking_store
from mnist_vae import tracking

# --- where runs go -------------------------------------------------------------------------

def test_default_store_is_sqlite_in_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(Path(__file__).parent)  # e.g. a temporary copy under `dvc exp run`
    root = tracking_store.repo_root()
    assert root == tmp_path.resolve()
    uri = tracking_store.tracking_uri(root)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking_store.artifact_location(uri) == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_mlflow_tracking_uri_points_elsewhere(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_store.tracking_uri(tmp_path) == "http://mlflow.example:5000"
    assert tracking_store.artifact_location("http://mlflow.example:5000") is None


def test_connecting_does_not_export_the_default_store(store):
    tracking_store.connect(tiny_params().tracking, store)
    assert mlflow.get_tracking_uri() == store_uri(store)
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_redact_hides_credentials():
    assert tracking_store.redact("https://u:secret@host:8443/x") == "https://***@host:8443/x"
    assert tracking_store.redact("http://host:5000") == "http://host:5000"


# --- an unreachable tracking server --------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection_fails_the_stage_before_its_body_naming_the_uri(store, monkeypatch):
    uri = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    entered = False
    with pytest.raises(tracking_store.TrackingError) as err, \
            tracking.training_run(tiny_params()):
        entered = True
    assert not entered
    assert uri in str(err.value) and "unreachable" in str(err.value)


def test_a_server_that_never_answers_fails_within_the_timeout(store, monkeypatch):
    with socket.socket() as silent:  # accepts connections (backlog), never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(tracking_store.TrackingError, match="unreachable"):
            tracking_store.check_reachable(uri, timeout_s=1.0)
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
        tracking_store.check_reachable(f"http://127.0.0.1:{server.server_port}", timeout_s=2.0)
    finally:
        server.shutdown()


def test_a_copied_repository_writes_its_artifacts_into_its_own_directory(
        tmp_path, monkeypatch, empty_store_db, capsys):
    original, copy = tmp_path / "original", tmp_path / "copy"
    original.mkdir()
    shutil.copyfile(empty_store_db, original / "mlflow.db")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    try:
        with tracking.training_run(tiny_params(), root=original):
            tracking.log_files(note)
        shutil.copytree(original, copy)
        capsys.readouterr()
        with tracking.training_run(tiny_params(), root=copy) as run:
            tracking.log_files(note)
    finally:
        mlflow.end_run()
        mlflow.set_tracking_uri(None)
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("note.txt")
               if run.run_id in p.parts}
    assert written == {"copy"}
    said = [line for line in capsys.readouterr().err.splitlines() if "copied" in line]
    assert len(said) == 1 and str(original) in said[0] and str(copy) in said[0]
    client = mlflow.MlflowClient(f"sqlite:///{copy / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mnist-vae").experiment_id])
    assert len(runs) == 2  # the copied run too now points into the copy
    assert all(r.info.artifact_uri.startswith((copy / "mlartifacts").as_uri()) for r in runs)
