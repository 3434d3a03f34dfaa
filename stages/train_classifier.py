"""Stage train_classifier: fit the digit classifier that judges the VAE's samples."""

import dataclasses

from mnist_vae.classifier import accuracy, save_classifier, train_classifier
from mnist_vae.config import load_params
from mnist_vae.data import load_splits
from mnist_vae.files import write_json


def main() -> None:
    params = load_params()
    # Grey pixels whatever data.binarize says: the classifier judges decoder means.
    splits = load_splits(params.paths.data, dataclasses.replace(params.data, binarize="none"))
    model, facts = train_classifier(splits.x_train, splits.y_train, params.classifier)
    # timings vary run to run: printed, not committed with the metrics (a rebuild leaves git clean)
    seconds = {key: facts.pop(key) for key in ("wall_time_s", "images_per_s")}
    facts["val_accuracy"] = accuracy(model, splits.x_val, splits.y_val)
    facts["test_accuracy"] = accuracy(model, splits.x_test, splits.y_test)
    facts["test_images"] = int(len(splits.x_test))
    save_classifier(model, params.paths.classifier)
    write_json(params.paths.classifier_metrics, facts)
    print(f"classifier: test accuracy {facts['test_accuracy']:.4f} "
          f"({seconds['wall_time_s']:.0f} s, {seconds['images_per_s']:.0f} images/s, "
          f"{facts['train_images']} training images)")


if __name__ == "__main__":
    main()
