"""Which run `register` logs to: the training run, a run that continued it, or a new linked run.

DVC may restore `train`'s outputs from its run cache (no new run, and in a fresh store no run
at all), and `register` may rerun on the same model: then a new run, tagged with the model's
run id and the reason, takes the results instead of overwriting the old ones.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from mnist_vae import tracking
from mnist_vae.config import Params
from mnist_vae.tracking_store import connect, mlflow, repo_root

REASON_RESTORED = "restored-from-run-cache"
REASON_RERUN = "stage-rerun"


@contextlib.contextmanager
def reopened_run(params: Params, stage: str, root: Path | None = None,
                 ) -> Iterator[tracking.StageRun]:
    """Reopen the run of `paths.run_id` (or continue it in a new one), yield it, close it."""
    experiment_id = connect(params.tracking, Path(root) if root else repo_root())
    mlflow.end_run()  # a run left active in this process would swallow ours
    with tracking.closing(stage):
        yield _open(params, stage, experiment_id)


def _open(params: Params, stage: str, experiment_id: str) -> tracking.StageRun:
    """The model's run or a continuation of it when it can take the stage, else a new run."""
    pointer = tracking.read_run_pointer(params.paths.run_id)
    model_run_id = pointer.get("run_id")
    model_run = _get_run(model_run_id) if model_run_id else None
    for candidate in _continuable_runs(model_run_id, model_run, experiment_id):
        if _can_continue(candidate, stage, params):
            mlflow.start_run(run_id=candidate.info.run_id)
            tracking.log_params(params, stage)
            return tracking.StageRun(candidate.info.run_id, stage)
    reason = REASON_RERUN if model_run else REASON_RESTORED
    previous = model_run.info.run_name if model_run else pointer.get("run_name")
    run_id = tracking.start_run(
        experiment_id, name=f"{previous}-{stage}" if previous else None,
        tags={tracking.TAG_MODEL_RUN: model_run_id or "unknown",
              tracking.TAG_NEW_RUN_REASON: reason})
    tracking.log_identity(params)
    tracking.log_params(params, "train", stage)
    why = ("it already holds this stage's results" if model_run
           else "it is not in this store (outputs restored from DVC's run cache?)")
    print(f"tracking: {stage} cannot add to run {model_run_id} ({why}); "
          f"logging to new run {run_id}", file=sys.stderr)
    return tracking.StageRun(run_id, stage, new_run_reason=reason)


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
        sorted(experiments), filter_string=f"tags.`{tracking.TAG_MODEL_RUN}` = '{model_run_id}'",
        order_by=["attributes.start_time DESC"], max_results=20,
    )
    return [*([model_run] if model_run else []), *continued]


def _can_continue(run, stage: str, params: Params) -> bool:
    """A run takes a stage if it has not done it yet and logged no conflicting params."""
    if stage in tracking.stages_done(run):
        return False
    wanted = tracking.stage_params(params, (stage,))
    return all(run.data.params.get(k, v) == v for k, v in wanted.items())
