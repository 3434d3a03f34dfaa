"""train stage: data/mnist.npz + model/train params -> models/vae.keras, facts, progress, dvclive.

Resumes from `paths.checkpoints/<key>/` when an earlier run with the same settings was killed.
"""

import sys
import time
from pathlib import Path

from mnist_vae.config import load_params
from mnist_vae.data import load_splits
from mnist_vae.training import (
    DvcLiveLogger,
    TrainingDiverged,
    checkpoint_key,
    remove_checkpoint,
    save_model,
    train,
    write_json,
    write_progress,
)


def main() -> int:
    started = time.perf_counter()
    params = load_params()
    paths = params.paths
    splits = load_splits(paths.data, params.data)
    checkpoint_dir = Path(paths.checkpoints) / checkpoint_key(params, paths.data)
    try:
        with DvcLiveLogger(paths.dvclive) as logger:
            result = train(splits, params.data, params.model, params.train, checkpoint_dir,
                           logger, verbose=1 if sys.stdout.isatty() else 2)  # bar or a line
            logger.log_summary(result.facts, result.history)
    except TrainingDiverged as err:
        print(f"train: {err}", file=sys.stderr)
        return 1
    result.facts["stage_wall_time_s"] = round(time.perf_counter() - started, 2)
    save_model(result.model, paths.model)
    write_progress(paths.progress, result.progress)
    write_json(paths.train_facts, result.facts)
    remove_checkpoint(checkpoint_dir)
    facts = result.facts
    print(f"train: best epoch {facts['best_epoch']} of {facts['epochs_run']}, "
          f"val loss {facts['best_val_loss']:.2f} nats, {facts['images_per_s']:.0f} images/s, "
          f"{facts['stage_wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
