"""Stage train: data/mnist.npz + model/train params -> model, facts, progress, dvclive, MLflow run.

Resumes from `paths.checkpoints/<key>/` when an earlier run with the same settings was killed.
Opens the pipeline's MLflow run (its id goes to `paths.run_id`); an unreachable tracking server
fails the stage in seconds, before TensorFlow is even imported. Under `train.distribute:
multi_worker` every worker runs this; only the chief logs and writes outputs (distribute.py).
"""

import sys
import time
from pathlib import Path

from mnist_vae import distribute, tracking
from mnist_vae.config import load_params
from mnist_vae.data import DataError
from mnist_vae.files import write_json
from mnist_vae.stage_exit import run_stage


def main() -> int:
    started = time.perf_counter()
    tracking.stop_on_sigterm()  # SIGTERM ends the run KILLED, not left RUNNING
    params = load_params()
    paths = params.paths
    outage_s = params.tracking.outage_s  # how long a mid-run store outage may last
    try:  # a non-chief worker trains alongside the chief and writes nothing
        if not distribute.is_chief(params.train.distribute):
            from mnist_vae import training
            return training.train_as_worker(params)
    except distribute.DistributeError as err:
        print(f"train: {err}", file=sys.stderr)
        return 1
    with tracking.training_run(params) as run:  # a new MLflow run, FAILED if the block raises
        tracking.log_identity(params)  # git commit, DVC experiment, data checksums; the dataset
        tracking.log_params(params, "train")
        from mnist_vae import checkpoints, live, training  # TensorFlow: once the store answered
        from mnist_vae.data import load_splits

        splits = load_splits(paths.data, params.data)
        checkpoint_dir = Path(paths.checkpoints) / checkpoints.checkpoint_key(params, paths.data)
        try:
            with live.DvcLiveLogger(paths.dvclive) as logger:
                result = training.train(splits, params.data, params.model, params.train,
                                        checkpoint_dir, logger,
                                        callbacks=[tracking.epoch_metrics_callback(outage_s)],
                                        verbose=1 if sys.stdout.isatty() else 2)  # bar or line
                logger.log_summary(result.facts, result.history)
        except (training.TrainingDiverged, distribute.DistributeError) as err:
            print(f"train: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        except distribute.lost_worker_errors() as err:
            print(f"train: {distribute.describe_lost_worker(err)}", file=sys.stderr)
            raise SystemExit(1) from None
        resumed = result.history[:result.facts["resumed_from_epoch"]]  # epochs of a killed run
        tracking.log_epochs([training.keras_logs(record) for record in resumed], outage_s)
        result.facts["stage_wall_time_s"] = round(time.perf_counter() - started, 2)
        training.save_model(result.model, paths.model)
        training.write_progress(paths.progress, result.progress)
        write_json(paths.train_facts, result.facts)
        tracking.log_metrics(tracking.numeric_items(result.facts, prefix="fit"))
        tracking.log_files(paths.train_facts, *tracking.PIPELINE_FILES, paths.provenance)
        tracking.write_run_pointer(paths.run_id)
    checkpoints.remove_checkpoint(checkpoint_dir)
    facts, prior = result.facts, result.facts["prior"]
    fitted = (f"{prior['components']}-component mixture prior fitted in {prior['seconds']:.0f} s"
              if prior["kind"] == "mixture" else "N(0, I) prior")
    print(f"train: best epoch {facts['best_epoch']} of {facts['epochs_run']}, "
          f"val loss {facts['best_val_loss']:.2f} nats, {facts['images_per_s']:.0f} images/s "
          f"in {facts['precision']}, "
          f"{fitted}, {facts['stage_wall_time_s']:.0f} s; MLflow run {run.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main, "train", tracking.TrackingError, DataError))
