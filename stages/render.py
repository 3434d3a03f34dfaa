"""Stage render: the PNG grids people look at (samples, reconstructions, walks, progress, digits,
styles)."""

import sys

import tensorflow as tf

from mnist_vae.config import load_params
from mnist_vae.data import DataError, load_splits
from mnist_vae.model import ModelFileError, load_vae
from mnist_vae.rendering import RenderError, load_progress, render_all
from mnist_vae.stage_exit import run_stage


def main() -> None:
    params = load_params()
    tf.config.experimental.enable_op_determinism()  # same model -> same bytes
    model = load_vae(params.paths.model)
    splits = load_splits(params.paths.data, params.data)  # the images the model trained on
    progress = load_progress(params.paths.progress)
    written = render_all(model, splits.x_test, splits.y_test, progress,
                         params.paths.plots, params.render)
    for name, path in written.items():
        print(f"render: {name} -> {path}")


if __name__ == "__main__":  # a bad or missing input: one line and exit code 1
    sys.exit(run_stage(main, "render", ModelFileError, RenderError, DataError))
