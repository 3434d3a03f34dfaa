"""Team mode on real servers on 127.0.0.1: the stack (PostgreSQL + an MLflow basic-auth
server, started by teamstack.py) with its logins and permissions, the pipeline logging to it as
`ci`, two pipelines promoting at once, PostgreSQL restarted mid-run, and an ssh:// DVC remote
served by a real sshd."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import dvc_queue
from conftest import CI_OVERLAY
from helpers import clone_repo, git, pipeline_env, run_dvc, run_stage, set_params, unused_port
from mnist_vae import teamstack

pytestmark = pytest.mark.slow

EXPERIMENT = MODEL = "mnist-vae"
METRIC = "test/bernoulli/neg_elbo"


def _missing(what: str, package: str) -> None:
    """Skip naming the Debian package; under CI fail instead (CI must run these tests)."""
    message = (f"{what} needs the Debian package {package} "
               "(make test installs it as root: scripts/install_test_deps.sh)")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _require_postgres() -> None:
    try:
        teamstack.postgres_bin()  # as root on Debian: installs the package when missing
    except teamstack.StackError:
        _missing("the team stack", "postgresql")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The team stack on free ports, its state in a temporary directory; deleted afterwards."""
    _require_postgres()
    stack = teamstack.Stack(tmp_path_factory.mktemp("team") / "state", pg_port=unused_port(),
                            mlflow_port=unused_port())
    started = time.monotonic()
    try:
        teamstack.start(stack, EXPERIMENT, MODEL)
        print(f"team stack up in {time.monotonic() - started:.0f} s")
        yield stack
    finally:
        teamstack.destroy(stack)


def _password(stack, user: str) -> str:
    return teamstack.load_secrets(stack.state_dir)[user]


def _api(stack, method: str, endpoint: str, body: dict | None = None, user: str | None = "reader",
         password: str | None = None) -> tuple[int, dict]:
    auth = (user, password if password is not None else _password(stack, user)) if user else None
    return teamstack.api(stack, method, endpoint, body, auth)


def _ok(stack, method: str, endpoint: str, body: dict | None = None, user: str = "reader"):
    status, reply = _api(stack, method, endpoint, body, user)
    assert status == 200, (endpoint, status, reply)
    return reply


def _experiment_id(stack) -> str:
    return _ok(stack, "GET", "experiments/get-by-name",
               {"experiment_name": EXPERIMENT})["experiment"]["experiment_id"]


def _team_env(repo: Path, stack, user: str = "ci", password: str | None = None, **extra):
    env = teamstack.client_env(stack, user)
    if password is not None:
        env["MLFLOW_TRACKING_PASSWORD"] = password
    return pipeline_env(repo, **env, **extra)


def _ci_repo(downloaded_repo: Path, dest: Path, **train) -> Path:
    repo = clone_repo(downloaded_repo, dest)
    overlay = yaml.safe_load((repo / CI_OVERLAY).read_text())
    overlay["train"] = {**overlay["train"], **train}
    set_params(repo, overlay)
    return repo


def _run_id(repo: Path) -> str:
    return json.loads((repo / "models" / "mlflow_run.json").read_text())["run_id"]


def _versions(stack) -> list[dict]:
    reply = _ok(stack, "GET", "model-versions/search", {"filter": f"name='{MODEL}'"})
    return reply.get("model_versions", [])


def _champion(stack) -> dict:
    return _ok(stack, "GET", "registered-models/alias",
               {"name": MODEL, "alias": "champion"})["model_version"]


# --- logins and permissions ----------------------------------------------------------------

def test_missing_or_wrong_credentials_get_401(stack):
    query = {"experiment_name": EXPERIMENT}
    assert _api(stack, "GET", "experiments/get-by-name", query, user=None)[0] == 401
    assert _api(stack, "GET", "experiments/get-by-name", query, "ci", "wrong")[0] == 401
    assert _api(stack, "GET", "experiments/get-by-name", query, "nobody",
                _password(stack, "ci"))[0] == 401


def test_the_reader_reads_and_every_write_gets_403(stack):
    experiment_id = _experiment_id(stack)
    assert _api(stack, "POST", "runs/create", {"experiment_id": experiment_id})[0] == 403
    assert _api(stack, "POST", "experiments/set-experiment-tag",
                {"experiment_id": experiment_id, "key": "k", "value": "v"})[0] == 403
    assert _api(stack, "PATCH", "registered-models/update",
                {"name": MODEL, "description": "vandalised"})[0] == 403
    assert _api(stack, "POST", "registered-models/alias",
                {"name": MODEL, "alias": "champion", "version": "1"})[0] == 403


def test_the_reader_cannot_create_an_experiment_or_a_model_ci_and_admin_can(stack):
    for prefix in ("api", "ajax-api"):  # the REST API and the UI's paths
        for endpoint, body in (("experiments/create", {"name": f"by-reader-{prefix}"}),
                               ("registered-models/create", {"name": f"by-reader-{prefix}"})):
            status, reply = teamstack.api(stack, "POST", endpoint, body,
                                          ("reader", _password(stack, "reader")), prefix=prefix)
            assert status == 403, (prefix, endpoint, status, reply)
    status, reply = teamstack.api(stack, "POST", "model-versions/create",
                                  {"name": MODEL, "source": "mlflow-artifacts:/x"},
                                  ("reader", _password(stack, "reader")))
    assert status == 403, reply
    assert _api(stack, "GET", "experiments/get-by-name", {"experiment_name": "by-reader-api"},
                user="admin")[0] == 404, "no experiment was created"
    assert _api(stack, "POST", "runs/search", {"experiment_ids": [_experiment_id(stack)]})[0] == 200
    for user in ("ci", "admin"):
        _ok(stack, "POST", "experiments/create", {"name": f"by-{user}"}, user=user)
        _ok(stack, "POST", "registered-models/create", {"name": f"by-{user}"}, user=user)
    assert _api(stack, "POST", "experiments/create", {"name": "by-nobody"}, "reader",
                "wrong")[0] == 401


def test_ci_logs_a_run_and_registers_a_version(stack):
    run = _ok(stack, "POST", "runs/create", {"experiment_id": _experiment_id(stack)},
              user="ci")["run"]["info"]
    _ok(stack, "POST", "runs/log-metric", {"run_id": run["run_id"], "key": "m", "value": 1.0,
                                           "timestamp": 0, "step": 0}, user="ci")
    _ok(stack, "POST", "runs/update", {"run_id": run["run_id"], "status": "FINISHED"}, user="ci")
    _ok(stack, "POST", "registered-models/create", {"name": "ci-smoke"}, user="ci")
    version = _ok(stack, "POST", "model-versions/create",
                  {"name": "ci-smoke", "source": f"{run['artifact_uri']}/model",
                   "run_id": run["run_id"]}, user="ci")["model_version"]
    _ok(stack, "POST", "registered-models/alias",
        {"name": "ci-smoke", "alias": "champion", "version": version["version"]}, user="ci")
    assert _ok(stack, "GET", "runs/get", {"run_id": run["run_id"]})["run"]["info"][
        "status"] == "FINISHED"


def test_the_stack_restarts_with_its_data_and_a_password_from_the_environment(
        tmp_path, monkeypatch):
    _require_postgres()
    other = teamstack.Stack(tmp_path / "state", pg_port=unused_port(), mlflow_port=unused_port())
    try:
        teamstack.start(other, "kept", "kept-model")
        old = _password(other, "ci")
        assert (os.stat(other.state_dir / "secrets.json").st_mode & 0o777) == 0o600
        teamstack.stop(other)
        monkeypatch.setenv("MNIST_VAE_CI_PASSWORD", "rotated-" + old[:8])
        teamstack.start(other, "kept", "kept-model")
        query = {"experiment_name": "kept"}
        assert _api(other, "GET", "experiments/get-by-name", query, "ci", old)[0] == 401
        assert _api(other, "GET", "experiments/get-by-name", query, "ci",
                    "rotated-" + old[:8])[0] == 200
    finally:
        teamstack.destroy(other)


# --- the pipeline against the stack ---------------------------------------------------------

@pytest.fixture(scope="module")
def team_pipeline(stack, downloaded_repo, tmp_path_factory):
    """`dvc repro` of the CI overlay logging to the stack as `ci`: (repo, dvc's output)."""
    repo = _ci_repo(downloaded_repo, tmp_path_factory.mktemp("team-pipeline") / "repo")
    result = run_dvc(repo, "repro", env=_team_env(repo, stack), timeout=1500)
    return repo, result.stdout + result.stderr


def test_the_pipeline_runs_unchanged_against_the_stack(stack, team_pipeline):
    repo, output = team_pipeline
    run = _ok(stack, "GET", "runs/get", {"run_id": _run_id(repo)})["run"]
    assert run["info"]["status"] == "FINISHED"
    tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
    assert tags["mnist_vae.stages"].split(",") == ["train", "register"]
    metrics = {m["key"] for m in run["data"]["metrics"]}
    assert METRIC in metrics and "fit/best_val_loss" in metrics
    versions = [v for v in _versions(stack) if v["run_id"] == run["info"]["run_id"]]
    assert len(versions) == 1
    assert _champion(stack)["version"] == versions[0]["version"]  # the first version
    # proxied artifacts: the files are in the stack's directory, the client wrote none itself
    stored = {p.name for p in stack.artifacts.rglob("*") if p.is_file()}
    assert {"eval.json", "MLmodel", "model.keras"} <= stored
    assert not (repo / "mlartifacts").exists() and not (repo / "mlflow.db").exists()


def test_no_password_lands_in_params_tags_outputs_or_files(stack, team_pipeline):
    repo, output = team_pipeline
    run = _ok(stack, "GET", "runs/get", {"run_id": _run_id(repo)})["run"]
    recorded = json.dumps(run["data"].get("params", [])) + json.dumps(run["data"].get("tags", []))
    secrets = teamstack.load_secrets(stack.state_dir)
    files = [p for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts]
    for name in ("ci", "admin", "reader", "postgres"):
        secret = secrets[name]
        assert secret not in recorded, f"the {name} password is in the run's params or tags"
        assert secret not in output, f"the {name} password is in dvc's output"
        leaks = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert not leaks, f"the {name} password is in {leaks}"


def test_wrong_credentials_fail_training_before_it_starts_naming_the_user(stack,
                                                                          downloaded_repo,
                                                                          tmp_path):
    repo = clone_repo(downloaded_repo, tmp_path / "repo")
    dvclive = sorted((repo / "dvclive").rglob("*"))  # what git carries there
    runs_before = len(_runs(stack))
    started = time.monotonic()
    result = run_stage(repo, "train", env=_team_env(repo, stack, password="wrong"), check=False,
                       timeout=120)
    seconds = time.monotonic() - started
    print(f"train failed after {seconds:.1f} s")
    assert result.returncode != 0
    assert f"MLflow server {stack.url} rejected the login of user 'ci' (HTTP 401" in result.stderr
    assert "MLFLOW_TRACKING_PASSWORD" in result.stderr
    assert "Epoch" not in result.stdout + result.stderr
    assert len(_runs(stack)) == runs_before, "no run opened"
    assert not (repo / "models" / "vae.keras").exists()
    assert sorted((repo / "dvclive").rglob("*")) == dvclive, "train wrote dvclive files"


def test_a_readers_login_fails_training_before_it_starts(stack, downloaded_repo, tmp_path):
    repo = clone_repo(downloaded_repo, tmp_path / "repo")
    runs_before = len(_runs(stack))
    result = run_stage(repo, "train", env=_team_env(repo, stack, user="reader"), check=False,
                       timeout=120)
    assert len(_runs(stack)) == runs_before, "no run opened"
    assert result.returncode != 0
    assert (f"user 'reader' has READ on experiment '{EXPERIMENT}' and cannot log runs"
            in result.stderr)
    assert "Epoch" not in result.stdout + result.stderr
    assert not (repo / "models" / "vae.keras").exists()


# --- parallel work ---------------------------------------------------------------------------

def test_two_pipelines_promoting_at_once_leave_champion_on_the_best_version(
        stack, team_pipeline, downloaded_repo, tmp_path):
    repos = [_ci_repo(downloaded_repo, tmp_path / f"repo{i}", seed=seed, learning_rate=lr)
             for i, (seed, lr) in enumerate(((1, 0.004), (2, 0.0005)))]
    procs = [subprocess.Popen([sys.executable, "-m", "dvc", "repro"],
                              cwd=repo, env=_team_env(repo, stack), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for repo in repos]
    outputs = [proc.communicate(timeout=1800)[0] for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-4000:]
    run_ids = {_run_id(repo) for repo in repos}
    versions = _versions(stack)
    assert run_ids <= {v["run_id"] for v in versions}, "both versions registered"
    comparable = [v for v in versions if METRIC in {t["key"] for t in v.get("tags", [])}]
    best = min(comparable, key=lambda v: (float(_tag(v, METRIC)), int(v["version"])))
    assert _champion(stack)["version"] == best["version"], [
        (v["version"], _tag(v, METRIC)) for v in comparable]


@pytest.mark.timeout(1800)
def test_two_queued_experiments_run_in_parallel_against_the_stack(stack, downloaded_repo,
                                                                   tmp_path):
    repo = _ci_repo(downloaded_repo, tmp_path / "repo")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "CI overlay")
    env = _team_env(repo, stack)
    names = {"par-lr-high": "train.learning_rate=0.004", "par-lr-low": "train.learning_rate=0.001"}
    for name, change in names.items():
        run_dvc(repo, "exp", "run", "--queue", "-n", name, "-S", change, env=env)
    started = time.monotonic()
    dvc_queue.run_all(repo, env, jobs=2)  # bounded: a stalled queue fails with DVC's logs
    print(f"two queued experiments on two workers: {time.monotonic() - started:.0f} s")
    runs = {_tags(r).get("dvc.exp_name"): r for r in _runs(stack)}
    assert set(names) <= set(runs), sorted(filter(None, runs))
    for name in names:
        assert runs[name]["info"]["status"] == "FINISHED"
        assert _tags(runs[name])["mnist_vae.stages"] == "train,register"
    versions = _versions(stack)
    assert {runs[n]["info"]["run_id"] for n in names} <= {v["run_id"] for v in versions}
    comparable = [v for v in versions if METRIC in {t["key"] for t in v.get("tags", [])}]
    best = min(comparable, key=lambda v: (float(_tag(v, METRIC)), int(v["version"])))
    assert _champion(stack)["version"] == best["version"]


def _tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def _tag(version: dict, key: str) -> str:
    return {t["key"]: t["value"] for t in version.get("tags", [])}[key]


# --- faults -----------------------------------------------------------------------------------

def test_postgres_down_across_an_epoch_end_loses_and_duplicates_nothing(stack, downloaded_repo,
                                                                       tmp_path):
    repo = _ci_repo(downloaded_repo, tmp_path / "repo", epochs=4)
    env = _team_env(repo, stack)
    before = {r["info"]["run_id"] for r in _runs(stack)}
    postgres = Path(teamstack.read_state(stack)["postgres_root"])
    train = _Output([sys.executable, "stages/train.py"], repo, env)
    try:
        run_id = _wait_for_first_epoch(stack, before, train)
        teamstack.stop_postgres(stack, postgres)  # open connections are cut
        down = time.monotonic()
        try:
            said = train.wait_for("tracking: the store failed", timeout_s=600)  # epoch refused
        finally:
            teamstack.start_postgres(stack, postgres)
        print(f"PostgreSQL down {time.monotonic() - down:.1f} s across an epoch's end; {said}")
        output = train.finish(timeout_s=900)
    finally:
        train.kill()
    assert train.proc.returncode == 0, output[-4000:]
    assert "tracking: the store is back" in output, output[-4000:]
    run = _ok(stack, "GET", "runs/get", {"run_id": run_id})["run"]
    assert run["info"]["status"] == "FINISHED"
    history = _ok(stack, "GET", "metrics/get-history", {"run_id": run_id, "metric_key": "loss"})
    steps = sorted(m["step"] for m in history["metrics"])
    epochs = json.loads((repo / "models" / "train.json").read_text())["epochs_run"]
    assert steps == list(range(epochs)), "every epoch logged exactly once"


class _Output:
    """A child process whose merged stdout and stderr a thread collects (a full pipe cannot
    block it), so the test can wait for a line while the child runs."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]):
        self.proc = subprocess.Popen(args, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self.lines.extend, args=(self.proc.stdout,),
                                        daemon=True)
        self._reader.start()

    def wait_for(self, prefix: str, timeout_s: float) -> str:
        """The first line starting with `prefix`, within `timeout_s` (else fail with the output)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = [line for line in list(self.lines) if line.startswith(prefix)]
            if found:
                return found[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        pytest.fail(f"no {prefix!r} line within {timeout_s} s:\n{''.join(self.lines)[-4000:]}")

    def finish(self, timeout_s: float) -> str:
        """Everything the child wrote, once it has exited (bounded)."""
        self.proc.wait(timeout=timeout_s)
        self._reader.join(timeout=30)
        return "".join(self.lines)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def _runs(stack) -> list[dict]:
    return _ok(stack, "POST", "runs/search", {"experiment_ids": [_experiment_id(stack)],
                                               "max_results": 1000}).get("runs", [])


def _wait_for_first_epoch(stack, before: set[str], train: _Output,
                          timeout_s: float = 600) -> str:
    """The new run's id once it has logged its first epoch's loss."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert train.proc.poll() is None, "".join(train.lines)[-4000:]
        for run in _runs(stack):
            if run["info"]["run_id"] not in before and any(
                    m["key"] == "loss" for m in run["data"].get("metrics", [])):
                return run["info"]["run_id"]
        time.sleep(1)
    pytest.fail(f"no epoch logged within {timeout_s} s")


@pytest.fixture
def as_ci(stack, monkeypatch, tmp_path):
    """This process logs to the stack as `ci`, with short MLflow HTTP bounds."""
    for key, value in teamstack.client_env(stack, "ci").items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.chdir(tmp_path)
    yield
    import mlflow

    mlflow.end_run()
    mlflow.set_tracking_uri(None)


def _register_tiny(vae_file: Path, value: float, params):
    """Log the tiny VAE in a new run on the stack and register it with test metric `value`."""
    import mlflow

    from mnist_vae import registry, tracking

    experiment_id = tracking.connect(params.tracking, Path.cwd())
    model = Path.cwd() / "vae.keras"
    shutil.copyfile(vae_file, model)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = registry.log_model(model, params.tracking)
        return registry.register(info, run.info.run_id, {METRIC: value}, params)


def _aliases_and_versions(stack, name: str) -> tuple[dict[str, str], list[str]]:
    model = _ok(stack, "GET", "registered-models/get", {"name": name})["registered_model"]
    aliases = {a["alias"]: a["version"] for a in model.get("aliases", [])}
    versions = _ok(stack, "GET", "model-versions/search", {"filter": f"name='{name}'"})
    return aliases, sorted(v["version"] for v in versions.get("model_versions", []))


def test_an_alias_call_failing_on_the_server_leaves_the_aliases_as_they_were(
        stack, as_ci, tiny_vae_file, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from mlflow_helpers import tiny_params

    params = tiny_params(tracking={"registered_model": "fault-alias"})
    _register_tiny(tiny_vae_file, 100.0, params)
    _register_tiny(tiny_vae_file, 105.0, params)
    set_alias = MlflowClient.set_registered_model_alias

    def failing(self, name, alias, version):
        if alias == "champion" and str(version) == "3":
            raise MlflowException("injected: the alias call failed")
        return set_alias(self, name, alias, version)

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", failing)
    with pytest.raises(MlflowException, match="injected"):
        _register_tiny(tiny_vae_file, 90.0, params)
    assert _aliases_and_versions(stack, "fault-alias") == (
        {"champion": "1", "challenger": "2"}, ["1", "2"])


def test_the_server_dying_during_registration_leaves_the_aliases_as_they_were(
        stack, as_ci, tiny_vae_file, monkeypatch, capsys):
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlflow_helpers import tiny_params

    params = tiny_params(tracking={"registered_model": "fault-dies"})
    _register_tiny(tiny_vae_file, 100.0, params)
    _register_tiny(tiny_vae_file, 105.0, params)
    register_model = mlflow.register_model
    killed = {}

    def register_then_die(*args, **kwargs):
        version = register_model(*args, **kwargs)
        teamstack.kill_mlflow(stack)  # the version exists; no alias has moved yet
        killed["at"] = time.monotonic()
        return version

    monkeypatch.setattr(mlflow, "register_model", register_then_die)
    try:
        with pytest.raises(MlflowException):
            _register_tiny(tiny_vae_file, 90.0, params)
        seconds = time.monotonic() - killed["at"]
    finally:
        teamstack.restart_mlflow(stack)
    assert "version 3 of fault-dies is left over" in capsys.readouterr().err
    with capsys.disabled():
        print(f"registration failed {seconds:.1f} s after the server was killed")
    aliases, versions = _aliases_and_versions(stack, "fault-dies")
    assert aliases == {"champion": "1", "challenger": "2"}
    assert versions == ["1", "2", "3"]  # the left-over version is whole: its files download
    files = Path(mlflow.artifacts.download_artifacts("models:/fault-dies/3"))
    assert (files / "MLmodel").is_file() and (files / "data" / "model.keras").is_file()


# --- the DVC remote over SSH -------------------------------------------------------------------

@pytest.fixture
def sshd(tmp_path):
    """A real sshd on a free 127.0.0.1 port: its own config and host key, key logins only."""
    if not Path("/usr/sbin/sshd").is_file():
        _missing("the ssh:// DVC remote test", "openssh-server")
    root = tmp_path / "sshd"
    root.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", root / name],
                       check=True)
    shutil.copyfile(root / "client_key.pub", root / "authorized_keys")
    os.chmod(root / "authorized_keys", 0o600)
    port = unused_port()
    config = root / "sshd_config"
    config.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
                      f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'pid'}\n"
                      "PubkeyAuthentication yes\nPasswordAuthentication no\n"
                      "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
                      "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", config],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc)
        yield {"port": port, "key": root / "client_key",
               "user": subprocess.run(["id", "-un"], capture_output=True, text=True,
                                      check=True).stdout.strip()}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_port(port: int, proc, timeout_s: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"sshd not listening on {port} after {timeout_s} s")


def test_dvc_push_and_pull_through_an_ssh_remote(sshd, downloaded_repo, tmp_path):
    repo = clone_repo(downloaded_repo, tmp_path / "repo")
    env = pipeline_env(repo)
    storage = tmp_path / "remote-storage"
    url = f"ssh://{sshd['user']}@127.0.0.1:{sshd['port']}{storage}"
    run_dvc(repo, "remote", "add", "-d", "team", url, env=env)
    run_dvc(repo, "remote", "modify", "--local", "team", "keyfile", str(sshd["key"]), env=env)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "data and the ssh remote")
    run_dvc(repo, "push", env=env, timeout=300)
    assert any(p.is_file() for p in storage.rglob("*")), "push wrote into the remote"

    fresh = tmp_path / "fresh"
    subprocess.run(["git", "clone", "-q", repo, fresh], check=True)
    fresh_env = pipeline_env(fresh)
    run_dvc(fresh, "remote", "modify", "--local", "team", "keyfile", str(sshd["key"]),
            env=fresh_env)
    assert not (fresh / "data" / "mnist.npz").exists()
    run_dvc(fresh, "pull", "download", env=fresh_env, timeout=300)
    assert (fresh / "data" / "mnist.npz").read_bytes() == (repo / "data" /
                                                            "mnist.npz").read_bytes()
    status = run_dvc(fresh, "status", "download", env=fresh_env).stdout
    assert "changed" not in status and "modified" not in status


# --- deploy/: the systemd unit's own command, run here ------------------------------------------

def _unit(path: Path) -> tuple[list[str], dict[str, str]]:
    """A systemd unit's ExecStart (split) and Environment= settings."""
    import shlex

    text = path.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if not line.startswith("#")]
    env = dict(line.removeprefix("Environment=").split("=", 1) for line in lines
               if line.startswith("Environment="))
    exec_start = next(line.removeprefix("ExecStart=") for line in lines
                      if line.startswith("ExecStart="))
    return shlex.split(exec_start), env


def test_the_systemd_units_command_starts_a_working_server_with_the_read_only_rule(
        stack, tmp_path):
    """deploy/systemd's ExecStart and Environment, with its paths and port moved into a temp
    directory, on databases of the stack's PostgreSQL; the auth ini is deploy/basic_auth.ini.in."""
    import psycopg

    repo = Path(__file__).resolve().parents[1]
    argv, unit_env = _unit(repo / "deploy" / "systemd" / "mnist-vae-mlflow.service")
    pg_password = _password(stack, "postgres")
    with psycopg.connect(host=stack.host, port=stack.pg_port, user=teamstack.DB_USER,
                         password=pg_password, dbname="postgres", autocommit=True) as conn:
        for name in ("unit_mlflow", "unit_auth"):
            conn.execute(f'CREATE DATABASE "{name}"')
    opt = tmp_path / "opt-mnist-vae"  # the unit's /opt/mnist-vae, installed as its comment says
    (opt / "mnist_vae").mkdir(parents=True)
    shutil.copyfile(repo / "src" / "mnist_vae" / "tracking_auth.py",
                    opt / "mnist_vae" / "tracking_auth.py")
    ini = tmp_path / "basic_auth.ini"
    ini.write_text((repo / "deploy" / "basic_auth.ini.in").read_text()
                   .replace("@PASSWORD@", pg_password)
                   .replace("@postgres:5432/mlflow_auth",
                            f"@{stack.host}:{stack.pg_port}/unit_auth"))
    port, admin_password = unused_port(), "unit-admin-" + _password(stack, "admin")[:8]
    environment_file = {  # what /etc/mlflow/env holds
        "BACKEND_STORE_URI": teamstack.database_uri(stack, pg_password, "unit_mlflow"),
        "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "unit-test-secret"}
    moved = {"/opt/mlflow/bin/mlflow": str(Path(sys.executable).parent / "mlflow"),
             "/var/lib/mlflow/artifacts": str(tmp_path / "artifacts"), "5000": str(port),
             "${BACKEND_STORE_URI}": environment_file["BACKEND_STORE_URI"]}
    argv = [moved.get(arg, arg) for arg in argv]
    unit_env = {k: v.replace("/opt/mnist-vae", str(opt)) for k, v in unit_env.items()}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLFLOW_") and k != "PYTHONPATH"}
    env.update(PATH=os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]]),
               **environment_file, **unit_env)
    served = teamstack.Stack(tmp_path, mlflow_port=port, ready_timeout_s=180)
    served.logs.mkdir()
    with open(served.logs / "mlflow.log", "wb") as log:  # wait_healthy shows its tail
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        teamstack.wait_healthy(served, proc)
        admin = ("admin", admin_password)
        assert teamstack.api(served, "GET", "experiments/search", {"max_results": 1})[0] == 401
        assert teamstack.api(served, "POST", "users/create",
                             {"username": "reader", "password": "reader-pw-1234"}, admin)[0] == 200
        assert teamstack.api(served, "POST", "experiments/create", {"name": "by-admin"},
                             admin)[0] == 200
        reader = ("reader", "reader-pw-1234")
        assert teamstack.api(served, "GET", "experiments/get-by-name",
                             {"experiment_name": "by-admin"}, reader)[0] == 200
        assert teamstack.api(served, "POST", "experiments/create", {"name": "by-reader"},
                             reader)[0] == 403
    finally:
        teamstack._kill_group(proc.pid)
        with psycopg.connect(host=stack.host, port=stack.pg_port, user=teamstack.DB_USER,
                             password=pg_password, dbname="postgres", autocommit=True) as conn:
            for name in ("unit_mlflow", "unit_auth"):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
