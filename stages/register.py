"""Stage register: the evaluated model into MLflow, as a new registered version.

Reopens the training run (`paths.run_id`; a new linked run when that run is missing or already
registered), logs the test metrics, the evaluation facts, the pictures and the pipeline files
to it, logs the model, registers a version with alias `challenger` and moves `champion` to it
when it wins. Writes what it did to `paths.registered`.
"""

import json
import sys
from pathlib import Path

from mnist_vae import continuation, registry, tracking
from mnist_vae.config import load_params
from mnist_vae.files import write_json
from mnist_vae.stage_exit import run_stage


def main() -> None:
    tracking.stop_on_sigterm()  # SIGTERM ends the run KILLED, not left RUNNING
    params = load_params()
    paths = params.paths
    metrics = tracking.numeric_items(json.loads(Path(paths.metrics).read_text()))
    facts = json.loads(Path(paths.eval_facts).read_text())
    registry.check_metric(metrics, params.tracking)  # before any run or version is touched
    with continuation.reopened_run(params, "register") as run:  # FAILED if the block raises
        tracking.log_files(paths.metrics, paths.eval_facts, *tracking.PIPELINE_FILES,
                           paths.provenance)
        tracking.log_tree(paths.plots, "*.png", artifact_path="plots")
        tracking.log_metrics(tracking.numeric_items(facts, prefix="meta"))
        info = registry.log_model(Path(paths.model), params.tracking)
        tracking.log_metrics(metrics, model_id=info.model_id)
        version = registry.register(info, run.run_id, metrics, params)
        record = registry.record(version, run.run_id)
    write_json(paths.registered, record)
    print(f"register: {record['model']} version {record['version']} "
          f"({', '.join(record['aliases'])}) from MLflow run {run.run_id}")


if __name__ == "__main__":
    sys.exit(run_stage(main, "register", tracking.TrackingError, registry.RegistryError))
