"""train stage: data/mnist.npz + model/train params -> models/vae.keras, facts, progress, dvclive.

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
from mnist_vae.files import write_json


def main() -> int:
    started = time.perf_counter()
    params = load_params()
    paths = params.paths
    try:  # tf.distribute hook: a non-chief worker trains alongside the chief and writes nothing
        if not distribute.is_chief(params.train.distribute):
            return train_as_worker(params)
    except distribute.DistributeError as err:
        print(f"train: {err}", file=sys.stderr)
        return 1
    with tracking.stage_run(params, "train") as run:  # marked FAILED if the block raises
        from mnist_vae import training  # TensorFlow: only once the tracking store answered
        from mnist_vae.data import load_splits

        splits = load_splits(paths.data, params.data)
        checkpoint_dir = Path(paths.checkpoints) / training.checkpoint_key(params, paths.data)
        try:
            with training.DvcLiveLogger(paths.dvclive) as logger:
                result = training.train(splits, params.data, params.model, params.train,
                                        checkpoint_dir, logger, callbacks=run.callbacks(),
                                        verbose=1 if sys.stdout.isatty() else 2)  # bar or line
                logger.log_summary(result.facts, result.history)
        except (training.TrainingDiverged, distribute.DistributeError) as err:
            print(f"train: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        except distribute.lost_worker_errors() as err:  # tf.distribute hook
            print(f"train: {distribute.describe_lost_worker(err)}", file=sys.stderr)
            raise SystemExit(1) from None
        result.facts["stage_wall_time_s"] = round(time.perf_counter() - started, 2)
        training.save_model(result.model, paths.model)
        training.write_progress(paths.progress, result.progress)
        write_json(paths.train_facts, result.facts)
    training.remove_checkpoint(checkpoint_dir)
    facts, prior = result.facts, result.facts["prior"]
    fitted = (f"{prior['components']}-component mixture prior fitted in {prior['seconds']:.0f} s"
              if prior["kind"] == "mixture" else "N(0, I) prior")
    print(f"train: best epoch {facts['best_epoch']} of {facts['epochs_run']}, "
          f"val loss {facts['best_val_loss']:.2f} nats, {facts['images_per_s']:.0f} images/s, "
          f"{fitted}, {facts['stage_wall_time_s']:.0f} s; MLflow run {run.run_id}")
    return 0


def train_as_worker(params) -> int:
    """Take part in every step and collective; checkpoints go to a temporary directory."""
    from mnist_vae import training
    from mnist_vae.data import load_splits

    key = training.checkpoint_key(params, params.paths.data)
    try:
        result = training.train(load_splits(params.paths.data, params.data), params.data,
                                params.model, params.train,
                                Path(params.paths.checkpoints) / key, verbose=2)
    except distribute.lost_worker_errors() as err:
        print(f"train (worker): {distribute.describe_lost_worker(err)}", file=sys.stderr)
        return 1
    print(f"train (worker): done, {result.facts['epochs_run']} epochs; the chief wrote outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
