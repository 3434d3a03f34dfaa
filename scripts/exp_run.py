"""Run `dvc exp run` with a config overlay applied: python scripts/exp_run.py CONFIG [DVC ARGS].

configs/*.yaml hold only the params that differ from params.yaml; this expands one into
`-S key=value` arguments (validated against the schema first) and hands over to DVC.
"""

import os
import sys

from mnist_vae.config import ConfigError
from mnist_vae.overlays import load_overlay, overlay_to_set_args, params_with_overlay


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    try:
        overlay = load_overlay(argv[0])
        params_with_overlay(argv[0])  # the merged params must validate before DVC runs
    except ConfigError as err:
        print(f"exp_run: {err}", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "dvc", "exp", "run", *overlay_to_set_args(overlay), *argv[1:]]
    print("+ dvc " + " ".join(command[3:]), flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
