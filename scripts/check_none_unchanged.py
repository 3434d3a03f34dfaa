"""Check that `train.distribute: none` trains bit for bit as an earlier commit did.

    PYTHONPATH=src python scripts/check_none_unchanged.py BASE_REV [--data data/mnist.npz]

Trains one tiny epoch (512 images, N(0, I) prior) with BASE_REV's `src/` and params.yaml,
then with this tree's, each in a fresh process, and compares a SHA-256 of the weights. Run it
after moving the tf.distribute hooks (distribute.py) into reorganised training code: the
hooks must leave the one-process path untouched. Exit 0 when identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRAIN_ONE_EPOCH = """
import dataclasses, hashlib, sys, tempfile
import numpy as np
from mnist_vae import training
from mnist_vae.config import load_params
from mnist_vae.data import load_splits
params = load_params(sys.argv[1])
data = dataclasses.replace(params.data, train_limit=512, val_size=500)
prior = dataclasses.replace(params.model.prior, kind="standard")
model = dataclasses.replace(params.model, prior=prior)
cfg = dataclasses.replace(params.train, epochs=1)
with tempfile.TemporaryDirectory() as checkpoints:
    result = training.train(load_splits(sys.argv[2], data), data, model, cfg, checkpoints,
                            verbose=0)
digest = hashlib.sha256()
for weight in result.model.get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
print("WEIGHTS", digest.hexdigest())
"""


def weights_digest(src: Path, params: Path, data: Path) -> str:
    """Train in a fresh process importing `src`; return the weights' digest."""
    out = subprocess.run([sys.executable, "-c", TRAIN_ONE_EPOCH, str(params), str(data)],
                         env={**os.environ, "PYTHONPATH": str(src), "TF_CPP_MIN_LOG_LEVEL": "2"},
                         capture_output=True, text=True, check=True).stdout
    return next(line.split()[1] for line in out.splitlines() if line.startswith("WEIGHTS "))


def export_tree(rev: str, dest: Path) -> None:
    """src/ and params.yaml of `rev`, written under dest."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src", "params.yaml"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base_rev")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "mnist.npz")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        export_tree(args.base_rev, Path(tmp))
        base = weights_digest(Path(tmp) / "src", Path(tmp) / "params.yaml", args.data)
    here = weights_digest(ROOT / "src", ROOT / "params.yaml", args.data)
    print(f"{args.base_rev}: {base}\nthis tree: {here}")
    print("identical" if base == here else "DIFFERENT: the one-process path changed")
    return 0 if base == here else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
