"""Print the pipeline files git carries, one per line: `dvc.lock` and every `cache: false` output.

Everything else a build writes is cached by DVC (and ignored by git through the `.gitignore`
entries DVC keeps): `dvc pull` restores it. `make retrain COMMIT=1` commits exactly these.
"""

import sys
from pathlib import Path


def committed_outputs(root: Path) -> list[str]:
    """dvc.lock, then the uncached outputs of every stage in dvc.yaml, relative to `root`."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        uncached = sorted({Path(out.fs_path).relative_to(Path(repo.root_dir)).as_posix()
                           for out in repo.index.outs if not out.use_cache})
    return ["dvc.lock", *uncached]


if __name__ == "__main__":
    print("\n".join(committed_outputs(Path.cwd())))
    sys.exit(0)
