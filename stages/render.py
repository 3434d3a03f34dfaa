"""Stage render: the PNG grids people look at (samples, reconstructions, walks, progress, digits,
styles)."""

import tensorflow as tf

from mnist_vae.config import load_params
from mnist_vae.data import load_splits
from mnist_vae.model import load_vae
from mnist_vae.rendering import load_progress, render_all


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


if __name__ == "__main__":
    main()
