"""Stage `download`: fetch and verify MNIST, write `paths.data` and `paths.provenance`.

Sources: the mirrors in params (`download.mirrors`), or only `MNIST_VAE_SOURCE` when set
(a directory or http(s) URL with the four .gz files and a SHA256SUMS manifest).
"""

import logging
import os
import sys

from mnist_vae.config import load_params
from mnist_vae.download import DownloadError, download_mnist, resolve_sources, save_mnist
from mnist_vae.stage_exit import run_stage


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="download: %(message)s", stream=sys.stderr)
    params = load_params()
    sources = resolve_sources(params.download, os.environ)
    mnist = download_mnist(sources, params.download)
    save_mnist(mnist, params.paths.data, params.paths.provenance)
    shapes = ", ".join(f"{k} {'x'.join(map(str, a.shape))}" for k, a in mnist.arrays.items())
    print(f"download: wrote {params.paths.data} ({shapes}) and {params.paths.provenance}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main, "download", DownloadError))  # one line for a documented failure
