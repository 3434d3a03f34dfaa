"""MLflow runs: open one (new or existing), log params, tags, metrics and files, close it.

With tracking_store.py, continuation.py and registry.py, the only modules that use mlflow. `train`
opens a new run (`training_run`) and writes its id to `paths.run_id`; `register` reopens it
(see continuation.py). Every logging call is made by the stage itself, so each side effect
shows in its stage file.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from mnist_vae import provenance
from mnist_vae.config import Params, to_flat_dict
from mnist_vae.files import file_sha256, write_json
from mnist_vae.stage_exit import Stopped
from mnist_vae.tracking_store import TrackingError, connect, mlflow, redact, repo_root

# The params sections each tracked stage reads; they become run params (`train.batch_size`).
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("data", "model", "train", "tracking"),
    "register": ("data", "evaluate", "render", "tracking"),
}
PIPELINE_FILES = ("params.yaml", "dvc.lock")  # the exact inputs and lock of the pipeline

TAG_STAGES = "mnist_vae.stages"  # comma-separated stages completed in this run
TAG_MODEL_RUN = "mnist_vae.model_run_id"  # the run whose `train` produced the model
TAG_NEW_RUN_REASON = "mnist_vae.new_run_reason"


@dataclass(frozen=True)
class StageRun:
    """The run a stage logs to; `new_run_reason` says why it is not the training run."""

    run_id: str
    stage: str
    new_run_reason: str | None = None


TAG_PID = "mnist_vae.pid"  # the process that opened the run, to close it if that process dies
TAG_HOST = "mnist_vae.host"
TAG_CLOSED_REASON = "mnist_vae.closed_reason"


class Terminated(Stopped):
    """The process received SIGTERM; the run ends KILLED, like after Ctrl-C."""


STOP_GRACE_S = 20.0  # after SIGTERM or Ctrl-C the process is gone within this, whatever happens
# While `closing` ends a run (`cleanup` > 0) a signal waits; once it has, the run's error is
# already on its way out and the waiting signal is dropped (the deadline still holds).
_held = {"cleanup": 0, "dropped": False}


def stop_on_sigterm(grace_s: float = STOP_GRACE_S) -> None:
    """Turn SIGTERM (and SIGINT) into an exception, so an open run is closed KILLED.

    The exception is held back while MLflow or its database layer is on the stack (raised
    inside a store transaction it would leave the store unable to close the run) and while
    `closing` ends a run. Signals after the first are ignored: they cannot cut the closing of
    the run short. The first one also starts a deadline: a process still alive `grace_s`
    later (a stalled store, a thread that never ends) exits at once, its run left for the next
    train start to close.
    """
    pending: list[BaseException] = []
    _held["dropped"] = False

    def on_signal(signum: int, frame) -> None:
        if pending:
            _say(f"{signal.Signals(signum).name} again: already stopping (ending the MLflow "
                 f"run); the process exits within {grace_s:.0f} s of the first signal\n")
            return
        pending.append(Terminated(signum) if signum == signal.SIGTERM else KeyboardInterrupt())
        _exit_after(grace_s, signum)
        raise_when_safe(signum, frame)

    def raise_when_safe(signum: int, frame) -> None:
        if _held["dropped"]:
            return
        if _held["cleanup"] or _in_store_call(frame):
            signal.setitimer(signal.ITIMER_REAL, 0.05)  # try again once that call returned
            return
        raise pending[0]

    signal.signal(signal.SIGALRM, raise_when_safe)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _exit_after(grace_s: float, signum: int) -> None:
    """End the process `grace_s` from now if it is still alive, in a thread the stall can't hold.

    The timer thread needs the GIL; faulthandler's watchdog (5 s later, tracebacks on stderr,
    exit code 1) does not, for code that holds the GIL for good.
    """
    def hard_exit() -> None:
        _say(f"still stopping {grace_s:.0f} s after {signal.Signals(signum).name} (the tracking "
             "store does not answer?); exiting now: the next train start closes the run\n")
        os._exit(128 + signum)

    timer = threading.Timer(grace_s, hard_exit)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(grace_s + 5, exit=True)


def _say(text: str) -> None:
    """Write to stderr from a signal handler (print could reenter a buffered write)."""
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), f"tracking: {text}".encode())


def _in_store_call(frame) -> bool:
    """Whether MLflow or SQLAlchemy code is running in `frame` or a caller of it."""
    while frame is not None:
        name = frame.f_code.co_filename
        if f"{os.sep}mlflow{os.sep}" in name or f"{os.sep}sqlalchemy{os.sep}" in name:
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def training_run(params: Params, root: Path | None = None) -> Iterator[StageRun]:
    """Connect (failing fast), close orphaned runs, start a new run for `train`, yield it."""
    experiment_id = connect(params.tracking, Path(root) if root else repo_root())
    mlflow.end_run()  # a run left active in this process would swallow ours
    close_orphans(experiment_id)
    with closing("train"):
        yield StageRun(start_run(experiment_id, name=None), "train")


def start_run(experiment_id: str, name: str | None, tags: dict[str, str] | None = None) -> str:
    """A new active run (named after the DVC experiment, or date + commit); returns its id."""
    name = name or provenance.run_name(provenance.head_commit())
    owner = {TAG_PID: str(os.getpid()), TAG_HOST: socket.gethostname()}
    active = mlflow.start_run(experiment_id=experiment_id, run_name=name,
                              tags={**owner, **(tags or {})})
    return active.info.run_id


def close_orphans(experiment_id: str) -> list[str]:
    """End KILLED the RUNNING runs whose opening process on this host is gone; say so."""
    client = mlflow.MlflowClient()
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'",
                              max_results=200)
    closed = []
    for run in runs:
        tags = run.data.tags
        pid = tags.get(TAG_PID, "")
        mine = tags.get(TAG_HOST) == socket.gethostname() and pid.isdigit()
        if not mine or psutil.pid_exists(int(pid)):
            continue
        client.set_tag(run.info.run_id, TAG_CLOSED_REASON,
                       f"process {pid} on {tags[TAG_HOST]} died without closing the run")
        client.set_terminated(run.info.run_id, status="KILLED")
        closed.append(run.info.run_id)
        print(f"tracking: run {run.info.run_id} was left RUNNING by process {pid}, which is gone "
              "(killed?); marked KILLED", file=sys.stderr)
    return closed


@contextlib.contextmanager
def closing(stage: str) -> Iterator[None]:
    """On success mark `stage` done and end the active run FINISHED; else FAILED (or KILLED)."""
    try:
        yield
        mark_stage_done(stage)
    except BaseException as err:
        _held["cleanup"] += 1  # a signal now waits until the run is ended
        try:
            active = mlflow.active_run()
            if active:
                status = "KILLED" if isinstance(err, (KeyboardInterrupt, Stopped)) else "FAILED"
                _end_failed(stage, active.info.run_id, status, err)
        finally:
            _held["cleanup"] -= 1
            _held["dropped"] = True  # `err` ends the stage; a held signal need not
        raise
    mlflow.end_run(status="FINISHED")


def _end_failed(stage: str, run_id: str, status: str, err: BaseException) -> None:
    """End the run with `status`; when the store cannot be told, raise one line saying so."""
    try:
        mlflow.end_run(status=status)
    except Exception as end_err:  # the server is gone (end_run already forgot the run locally)
        raise TrackingError(
            f"{stage} stopped ({type(err).__name__}: {_first_line(err)}) and the tracking "
            f"server did not answer ({_first_line(end_err)}); run {run_id} stays open until "
            "the next train start closes it. Checkpoints are kept: restore the server (or "
            "unset MLFLOW_TRACKING_URI) and rerun the stage to continue."
        ) from None
    print(f"tracking: {stage} failed; MLflow run {run_id} marked {status}", file=sys.stderr)


def _first_line(err: BaseException) -> str:
    """The first line of an error's message, shortened."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def stages_done(run) -> list[str]:
    """Stages that completed in `run`, from its tag."""
    value = run.data.tags.get(TAG_STAGES, "")
    return [s for s in value.split(",") if s]


def mark_stage_done(stage: str) -> None:
    """Add `stage` to the active run's completed stages."""
    run = mlflow.MlflowClient().get_run(mlflow.active_run().info.run_id)
    done = [s for s in stages_done(run) if s != stage] + [stage]
    mlflow.set_tag(TAG_STAGES, ",".join(done))


# --- what runs record ----------------------------------------------------------------------

def log_identity(params: Params) -> None:
    """Git commit and dirty files, DVC experiment and data checksums as tags; MNIST as input."""
    mlflow.set_tags(provenance.run_tags(params))
    data = Path(params.paths.data)
    if not data.is_file():
        return
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    dataset = MetaDataset(source=LocalArtifactDatasetSource(str(data.resolve())),
                          name="mnist", digest=file_sha256(data)[:16])
    mlflow.log_input(dataset, context="training")


def stage_params(params: Params, stages: tuple[str, ...]) -> dict[str, str]:
    """The flattened params (`train.batch_size`) of the sections the stages read, as strings."""
    flat = to_flat_dict(params)
    sections = {s for stage in stages for s in STAGE_SECTIONS[stage]}
    return {k: _param_str(v) for k, v in flat.items() if k.split(".", 1)[0] in sections}


def _param_str(value: Any) -> str:
    """How MLflow stores a param value (it keeps strings)."""
    return str(list(value) if isinstance(value, tuple) else value)


def log_params(params: Params, *stages: str) -> None:
    """The stages' params not yet in the active run (MLflow refuses to change a logged value)."""
    existing = mlflow.MlflowClient().get_run(mlflow.active_run().info.run_id).data.params
    wanted = stage_params(params, stages)
    mlflow.log_params({k: v for k, v in wanted.items() if k not in existing})


def epoch_metrics_callback(outage_s: float):
    """MLflow's own Keras callback (optimizer params, model summary), but each epoch's `logs`
    sent before the next epoch starts and resent through a store outage (`log_epoch`)."""
    from mlflow.keras import MlflowCallback  # imports Keras: only the training stage needs it

    class EpochMetrics(MlflowCallback):
        def on_epoch_end(self, epoch, logs=None):
            """Keras' per-epoch logs (`val_*` included) at step = epoch, 0-based."""
            log_epoch(epoch, logs or {}, outage_s)

        def on_test_end(self, logs=None):
            """Skip: `val_*` already arrive with each epoch's logs, with their step."""

    return EpochMetrics()


def log_epochs(epochs: list[dict[str, float]], outage_s: float) -> None:
    """Per-epoch metrics done before a resume (step = epoch index), so the run has the curve."""
    for step, logs in enumerate(epochs):
        log_epoch(step, logs, outage_s)


def log_epoch(step: int, logs: Mapping[str, float], outage_s: float) -> None:
    """One epoch's metrics in one call, resent unchanged (same timestamp) while the store is
    down, for up to `outage_s`: the store keeps one copy of an identical metric, so a reply
    lost after the write cannot duplicate it (MLflow's asynchronous logging lost the epoch)."""
    from mlflow.entities import Metric

    stamp = int(time.time() * 1000)
    metrics = [Metric(key, float(value), stamp, step) for key, value in logs.items()]
    run_id = mlflow.active_run().info.run_id
    client = mlflow.MlflowClient()
    resend_through_outage(lambda: client.log_batch(run_id, metrics=metrics, synchronous=True),
                          outage_s, f"epoch {step} metrics")


def resend_through_outage(send: Callable[[], Any], outage_s: float, what: str,
                          pause_s: float = 1.0) -> None:
    """Call `send` until it succeeds; a server-side failure (5xx, no connection) is retried
    until `outage_s` has passed, then raised; a refusal (4xx) is raised at once."""
    from mlflow.exceptions import MlflowException

    deadline = time.monotonic() + outage_s
    announced = False
    while True:
        try:
            send()
            break
        except MlflowException as err:
            if err.get_http_status_code() < 500 or time.monotonic() + pause_s > deadline:
                raise
            if not announced:
                print(f"tracking: the store failed ({_first_line(err)}); resending {what} for "
                      f"up to {outage_s:g} s (tracking.outage_s)", file=sys.stderr, flush=True)
                announced = True
        time.sleep(pause_s)
    if announced:
        print(f"tracking: the store is back; {what} logged", file=sys.stderr, flush=True)


def numeric_items(data: Any, prefix: str = "", sep: str = "/") -> dict[str, float]:
    """Finite numbers in nested JSON, flattened to `a/b` keys (booleans and strings skipped)."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(numeric_items(v, f"{prefix}{sep}{k}" if prefix else str(k), sep))
    elif isinstance(data, (int, float)) and not isinstance(data, bool) and math.isfinite(data):
        out[prefix] = float(data)
    return out


def log_metrics(metrics: dict[str, float], model_id: str | None = None) -> None:
    """Metrics of the active run (and of its logged model, with `model_id`)."""
    mlflow.log_metrics(metrics, model_id=model_id)


def log_files(*paths: str | Path, artifact_path: str | None = None) -> None:
    """Each file that exists, as an artifact of the active run."""
    for path in paths:
        if Path(path).is_file():
            mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_tree(directory: str | Path, pattern: str, artifact_path: str) -> None:
    """Every file under `directory` matching `pattern`, keeping subdirectories."""
    directory = Path(directory)
    for path in sorted(directory.rglob(pattern)) if directory.is_dir() else []:
        rel_dir = path.parent.relative_to(directory)
        mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_path) / rel_dir))


# --- the run pointer (paths.run_id) ---------------------------------------------------------

def write_run_pointer(path: str | Path) -> None:
    """The active run's id, name, experiment and (redacted) store, for later stages."""
    info = mlflow.active_run().info
    write_json(path, {"run_id": info.run_id, "run_name": info.run_name,
                      "experiment_id": info.experiment_id,
                      "tracking_uri": redact(mlflow.get_tracking_uri())})


def read_run_pointer(path: str | Path) -> dict[str, str]:
    """The run id file `train` wrote, or {} when it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
