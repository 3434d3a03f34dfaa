"""MLflow tracking: one run per trained model, spanning train -> evaluate -> render.

With registry.py, the only module that imports mlflow. Each tracked stage wraps its work in
`with stage_run(params, "<stage>") as run:`. Entering connects to the store (failing fast,
before any training, when a tracking server does not answer) and opens the run: `train`
starts a new one; `evaluate` and `render` reopen the run whose id `train` wrote to
`paths.run_id`. Leaving after success logs what the stage wrote to disk (the same files DVC
records) and marks the run FINISHED; leaving with an exception marks it FAILED and re-raises.

Where runs go: `MLFLOW_TRACKING_URI` when set (a team server), else the embedded store
`sqlite:///<root>/mlflow.db` with artifacts in `<root>/mlartifacts`, where <root> is the
repository (`DVC_ROOT`, which `dvc exp run` points at the real repository even when the stage
runs in a temporary copy, else the git top level, else the working directory).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.util
import json
import math
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_vae.config import Params, TrackingConfig, to_flat_dict
from mnist_vae.files import write_json
from mnist_vae.server_access import check_access

if TYPE_CHECKING:
    import mlflow


def _lazy_import(name: str):
    """`name`, executed on first attribute access (the stdlib's LazyLoader recipe)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Importing MLflow takes seconds; loading it on first use lets the server probe run first.
mlflow = _lazy_import("mlflow")  # noqa: F811

STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# The params sections each tracked stage reads; they become run params (`train.batch_size`).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("data", "model", "train", "tracking"),
    "evaluate": ("data", "evaluate", "tracking"),
    "render": ("data", "render", "tracking"),
}
# Files logged as run artifacts, as the issue asks: the exact inputs and lock of the pipeline.
PIPELINE_FILES = ("params.yaml", "dvc.lock")

TAG_STAGES = "mnist_vae.stages"  # comma-separated stages completed in this run
TAG_MODEL_RUN = "mnist_vae.model_run_id"  # the run whose `train` produced the model
TAG_NEW_RUN_REASON = "mnist_vae.new_run_reason"
TAG_GIT_DIRTY = "git.dirty"
TAG_GIT_CHANGED = "git.changed_files"
REASON_RESTORED = "restored-from-run-cache"
REASON_RERUN = "stage-rerun"


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message names the URI and the fix."""


# --- where runs go -------------------------------------------------------------------------

def repo_root() -> Path:
    """The repository whose store we use: DVC_ROOT, else the git top level, else cwd."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    top = _git("rev-parse", "--show-toplevel")
    return Path(top).resolve() if top else Path.cwd().resolve()


def tracking_uri(root: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else the embedded SQLite store in `root`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(root).resolve() / STORE_FILE}"


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, `mlartifacts/` next to the database; a server decides its own."""
    prefix = "sqlite:///"  # then an absolute path (sqlite:////abs/db) or one relative to cwd
    database = uri[len(prefix):] if uri.startswith(prefix) else ""
    if not database or database == ":memory:":
        return None
    return (Path(database).resolve().parent / ARTIFACTS_DIR).as_uri()


def use_store(uri: str) -> None:
    """Make `uri` MLflow's store in this process without exporting it to the environment.

    mlflow.set_tracking_uri also sets MLFLOW_TRACKING_URI, which would make the embedded
    store look user-configured to the next caller of `tracking_uri`.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def redact(uri: str) -> str:
    """`uri` without any user:password part, safe for messages and files."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def check_reachable(uri: str, timeout_s: float) -> None:
    """Raise TrackingError within ~timeout_s when an http(s) tracking server does not answer.

    Any HTTP answer (even 401 or 404) counts as reachable: only a refused or timed-out
    connection, or an unresolvable host, fails. DNS lookups ignore socket timeouts, so the
    probe runs in a thread with a deadline.
    """
    if urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return
    outcome: dict[str, str] = {}

    def probe() -> None:
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered
        except (urllib.error.URLError, OSError) as err:
            outcome["error"] = str(getattr(err, "reason", err))

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s + 0.5)
    if thread.is_alive():
        outcome["error"] = f"no answer within {timeout_s:g} s"
    if "error" in outcome:
        raise TrackingError(
            f"MLflow tracking server {redact(uri)} is unreachable ({outcome['error']}). "
            "Start it, fix MLFLOW_TRACKING_URI, or unset MLFLOW_TRACKING_URI to use the "
            "local store."
        )


def connect(cfg: TrackingConfig, root: Path) -> str:
    """Point MLflow at the store (failing fast) and return the experiment's id."""
    uri = tracking_uri(root)
    check_reachable(uri, cfg.server_timeout_s)
    check_access(uri, cfg.experiment, cfg.server_timeout_s)  # 401/403 before any work
    use_store(uri)
    return ensure_experiment(cfg.experiment, uri)


def ensure_experiment(name: str, uri: str) -> str:
    """Get or create the experiment; a SQLite store keeps its artifacts next to the database."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_location(uri)
        try:
            return client.create_experiment(name, artifact_location=location)
        except mlflow.MlflowException:  # created concurrently by another stage or process
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise TrackingError(
            f"MLflow experiment {name!r} is deleted in {redact(mlflow.get_tracking_uri())}; "
            f"restore it (`mlflow experiments restore`) or set tracking.experiment"
        )
    return experiment.experiment_id


# --- run identity --------------------------------------------------------------------------

def _git(*args: str) -> str | None:
    """Output of a git command in cwd, or None when git or the repository is missing."""
    try:
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.rstrip("\n") if done.returncode == 0 else None


def git_state(outputs: tuple[str, ...] = ()) -> tuple[str | None, list[str] | None]:
    """The HEAD commit and the tracked files that differ from it, pipeline outputs excluded.

    DVC rewrites dvc.lock and the pipeline's outputs (metrics, dvclive files, ...) while it
    runs; counting them would make every run look dirty.
    """
    commit = _git("rev-parse", "HEAD") or os.environ.get("DVC_EXP_BASELINE_REV")
    excluded = [f":(exclude){path}" for path in ("dvc.lock", *outputs)]
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    changed = None if status is None else [line[3:] for line in status.splitlines()]
    return commit, changed


def run_name(commit: str | None, now: dt.datetime | None = None) -> str:
    """The DVC experiment name when there is one, else date + short commit."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    now = now or dt.datetime.now()
    return f"{now:%Y-%m-%d-%H%M%S}-{commit[:7] if commit else 'nogit'}"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance_checksums(path: Path) -> dict[str, str]:
    """Every `*sha256*` string in the download stage's provenance JSON, by dotted key."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    found: dict[str, str] = {}

    def walk(node: Any, key: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                name = v.get("name") or v.get("file") if isinstance(v, dict) else None
                walk(v, f"{key}.{name or i}")
        elif isinstance(node, str) and "sha256" in key.rsplit(".", 1)[-1].lower():
            found[key] = node

    walk(data, "")
    return found


def run_tags(params: Params) -> dict[str, str]:
    """Tags that identify code and data: git commit + dirty tree, DVC experiment, checksums."""
    commit, changed = git_state(tuple(to_flat_dict(params.paths).values()))
    tags = {}
    if commit:
        tags["mlflow.source.git.commit"] = commit
    if changed is not None:
        tags[TAG_GIT_DIRTY] = str(bool(changed)).lower()
        if changed:
            tags[TAG_GIT_CHANGED] = ", ".join(changed)[:4000]
    for env, tag in (("DVC_EXP_NAME", "dvc.exp_name"), ("DVC_EXP_BASELINE_REV",
                     "dvc.exp_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    data = Path(params.paths.data)
    if data.is_file():
        tags["data.sha256"] = file_sha256(data)
    for key, value in provenance_checksums(Path(params.paths.provenance)).items():
        tags[f"data.provenance.{key}"] = value
    return tags


# --- opening and closing runs --------------------------------------------------------------

@dataclass(frozen=True)
class StageRun:
    """The run a stage logs to; `callbacks()` gives Keras callbacks that log live."""

    run_id: str
    stage: str
    new_run_reason: str | None = None

    def callbacks(self) -> list:
        """Keras callbacks that log every epoch's train/val metrics with its step."""
        return [epoch_metrics_callback()]


def epoch_metrics_callback():
    """MLflow's own Keras callback: per-epoch `logs` as metrics, step = epoch (0-based)."""
    from mlflow.keras import MlflowCallback  # imports Keras: only the training stage needs it

    class EpochMetrics(MlflowCallback):
        def on_test_end(self, logs=None):
            """Skip: `val_*` already arrive with each epoch's logs, with their step."""

    return EpochMetrics()


@contextlib.contextmanager
def stage_run(params: Params, stage: str, root: Path | None = None) -> Iterator[StageRun]:
    """Open this stage's run, yield it, log the stage's outputs, close it (FAILED on error)."""
    if stage not in STAGE_SECTIONS:
        raise ValueError(f"stage {stage!r} is not tracked; tracked: {', '.join(STAGE_SECTIONS)}")
    root = Path(root) if root else repo_root()
    experiment_id = connect(params.tracking, root)
    mlflow.end_run()  # a run left active in this process would swallow ours
    try:
        run = _open_run(params, stage, experiment_id)
        yield run
        FINISHERS[stage](params, run)
        _add_stage_done(run.run_id, stage)
    except BaseException as err:
        active = mlflow.active_run()
        if active:
            status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
            print(f"tracking: {stage} failed; MLflow run {active.info.run_id} marked {status}",
                  file=sys.stderr)
            mlflow.end_run(status=status)
        raise
    mlflow.end_run(status="FINISHED")


def _open_run(params: Params, stage: str, experiment_id: str) -> StageRun:
    """train: a new run. Later stages: the train run, a continuation of it, or a new run."""
    if stage == "train":
        return _start_run(params, stage, experiment_id, name=None)
    pointer = read_run_pointer(Path(params.paths.run_id))
    model_run_id = pointer.get("run_id")
    model_run = _get_run(model_run_id) if model_run_id else None
    for candidate in _continuable_runs(model_run_id, model_run, experiment_id):
        if _can_continue(candidate, stage, params):
            mlflow.start_run(run_id=candidate.info.run_id)
            _log_stage_params(params, (stage,))
            return StageRun(candidate.info.run_id, stage)
    reason = REASON_RERUN if model_run else REASON_RESTORED
    previous = model_run.info.run_name if model_run else pointer.get("run_name")
    run = _start_run(params, stage, experiment_id, name=f"{previous}-{stage}" if previous else None,
                     extra_tags={TAG_MODEL_RUN: model_run_id or "unknown",
                                 TAG_NEW_RUN_REASON: reason})
    why = ("it already holds this stage's results" if model_run
           else "it is not in this store (outputs restored from DVC's run cache?)")
    print(f"tracking: {stage} cannot add to run {model_run_id} ({why}); "
          f"logging to new run {run.run_id}", file=sys.stderr)
    return StageRun(run.run_id, stage, new_run_reason=reason)


def _start_run(params: Params, stage: str, experiment_id: str, name: str | None,
               extra_tags: dict[str, str] | None = None) -> StageRun:
    """A new run with identity tags, the data as a dataset input, and the stage's params."""
    tags = {**run_tags(params), **(extra_tags or {})}
    active = mlflow.start_run(experiment_id=experiment_id,
                              run_name=name or run_name(tags.get("mlflow.source.git.commit")),
                              tags=tags)
    _log_dataset(params)
    _log_stage_params(params, ("train", stage) if stage != "train" else (stage,))
    return StageRun(active.info.run_id, stage)


def _get_run(run_id: str):
    """The run, or None when this store does not have it (or it was deleted)."""
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except mlflow.MlflowException:
        return None
    return None if run.info.lifecycle_stage == "deleted" else run


def _continuable_runs(model_run_id: str | None, model_run, experiment_id: str) -> list:
    """The model's run if it exists, then runs that continued it (newest first)."""
    if not model_run_id:
        return []
    experiments = {experiment_id, *([model_run.info.experiment_id] if model_run else [])}
    continued = mlflow.MlflowClient().search_runs(
        sorted(experiments), filter_string=f"tags.`{TAG_MODEL_RUN}` = '{model_run_id}'",
        order_by=["attributes.start_time DESC"], max_results=20,
    )
    return [*([model_run] if model_run else []), *continued]


def _can_continue(run, stage: str, params: Params) -> bool:
    """A run takes a stage if it has not done it yet and logged no conflicting params."""
    if stage in stages_done(run):
        return False
    wanted = stage_params(params, (stage,))
    return all(run.data.params.get(k, v) == v for k, v in wanted.items())


def stages_done(run) -> list[str]:
    """Stages that completed in `run`, from its tag."""
    value = run.data.tags.get(TAG_STAGES, "")
    return [s for s in value.split(",") if s]


def _add_stage_done(run_id: str, stage: str) -> None:
    run = mlflow.MlflowClient().get_run(run_id)
    done = [s for s in stages_done(run) if s != stage] + [stage]
    mlflow.set_tag(TAG_STAGES, ",".join(done))


def stage_params(params: Params, stages: tuple[str, ...]) -> dict[str, str]:
    """The flattened params (`train.batch_size`) of the sections the stages read, as strings."""
    flat = to_flat_dict(params)
    sections = {s for stage in stages for s in STAGE_SECTIONS[stage]}
    return {k: _param_str(v) for k, v in flat.items() if k.split(".", 1)[0] in sections}


def _param_str(value: Any) -> str:
    """How MLflow stores a param value (it keeps strings)."""
    if isinstance(value, tuple):
        value = list(value)
    return str(value)


def _log_stage_params(params: Params, stages: tuple[str, ...]) -> None:
    """Log the params not yet in the active run (MLflow refuses to change a logged value)."""
    existing = mlflow.MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    wanted = stage_params(params, stages)
    mlflow.log_params({k: v for k, v in wanted.items() if k not in existing})


def _log_dataset(params: Params) -> None:
    """The MNIST arrays as the run's dataset input: name, source path and checksum."""
    data = Path(params.paths.data)
    if not data.is_file():
        return
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    dataset = MetaDataset(source=LocalArtifactDatasetSource(str(data.resolve())),
                          name="mnist", digest=file_sha256(data)[:16])
    mlflow.log_input(dataset, context="training")


# --- the run pointer (paths.run_id) ---------------------------------------------------------

def read_run_pointer(path: Path) -> dict[str, str]:
    """The run id file `train` wrote, or {} when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# --- what each stage logs after it succeeded ------------------------------------------------

def numeric_items(data: Any, prefix: str = "", sep: str = "/") -> dict[str, float]:
    """Finite numbers in nested JSON, flattened to `a/b` keys (booleans and strings skipped)."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(numeric_items(v, f"{prefix}{sep}{k}" if prefix else str(k), sep))
    elif isinstance(data, (int, float)) and not isinstance(data, bool) and math.isfinite(data):
        out[prefix] = float(data)
    return out


def _log_file(path: str | Path, artifact_path: str | None = None) -> None:
    if Path(path).is_file():
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def _log_pipeline_files(params: Params) -> None:
    """params.yaml, dvc.lock and the data provenance, as they are now."""
    for name in PIPELINE_FILES:
        _log_file(name)
    _log_file(params.paths.provenance)


def _finish_train(params: Params, run: StageRun) -> None:
    """Training facts as metrics and artifact, pipeline files, then the run pointer."""
    facts_path = Path(params.paths.train_facts)
    if facts_path.is_file():
        facts = json.loads(facts_path.read_text())
        mlflow.log_metrics({f"fit/{k}": v for k, v in numeric_items(facts).items()})
        _log_file(facts_path)
    _log_pipeline_files(params)
    write_json(params.paths.run_id, {
        "run_id": run.run_id,
        "run_name": mlflow.active_run().info.run_name,
        "experiment_id": mlflow.active_run().info.experiment_id,
        "tracking_uri": redact(mlflow.get_tracking_uri()),
    })


def _finish_evaluate(params: Params, run: StageRun) -> None:
    """Test metrics, the model (Keras flavour + generator) and its registration."""
    from mnist_vae import registry

    metrics_path = Path(params.paths.metrics)
    metrics = numeric_items(json.loads(metrics_path.read_text()))
    registry.check_metric(metrics, params.tracking)
    _log_file(metrics_path)
    _log_pipeline_files(params)
    info = registry.log_model(Path(params.paths.model), params.tracking)
    mlflow.log_metrics(metrics, model_id=info.model_id)
    registry.register(info, run.run_id, metrics, params)


def _finish_render(params: Params, run: StageRun) -> None:
    """Every PNG the render stage wrote, under `plots/`."""
    plots = Path(params.paths.plots)
    for png in sorted(plots.rglob("*.png")) if plots.is_dir() else []:
        rel_dir = png.parent.relative_to(plots)
        mlflow.log_artifact(str(png), artifact_path=str(Path("plots") / rel_dir))
    _log_file("dvc.lock")


FINISHERS = {"train": _finish_train, "evaluate": _finish_evaluate, "render": _finish_render}
