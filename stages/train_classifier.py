"""Stage train_classifier: fit the digit classifier that judges the VAE's samples."""

import dataclasses
import sys

from mnist_vae.classifier import accuracy, save_classifier, train_classifier
from mnist_vae.config import load_params
from mnist_vae.data import DataError, load_splits
from mnist_vae.files import write_json
from mnist_vae.progress import keras_verbose
from mnist_vae.stage_exit import run_stage


def main() -> None:
    params = load_params()
    # Grey pixels whatever data.binarize says: the classifier judges decoder means.
    splits = load_splits(params.paths.data, dataclasses.replace(params.data, binarize="none"))
    model, facts = train_classifier(splits.x_train, splits.y_train, params.classifier,
                                    verbose=keras_verbose())  # a bar, or a line per epoch in a log
    metrics = {key: facts.pop(key) for key in ("train_accuracy", "train_loss")}
    metrics["val_accuracy"] = accuracy(model, splits.x_val, splits.y_val)
    metrics["test_accuracy"] = accuracy(model, splits.x_test, splits.y_test)
    facts["test_images"] = int(len(splits.x_test))  # sizes and timings: bookkeeping
    save_classifier(model, params.paths.classifier)
    write_json(params.paths.classifier_metrics, metrics)
    write_json(params.paths.classifier_facts, facts)
    print(f"classifier: test accuracy {metrics['test_accuracy']:.4f} "
          f"({facts['wall_time_s']:.0f} s, {facts['train_images']} training images)")


if __name__ == "__main__":  # a bad or missing input: one line and exit code 1
    sys.exit(run_stage(main, "train_classifier", DataError))
