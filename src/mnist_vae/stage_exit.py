"""How a stage process ends: a documented failure as one line on stderr and exit code 1.

Every `stages/*.py` ends with `sys.exit(run_stage(main, "<stage>", *errors))`. The failures a
user can cause and fix (bad params, a corrupt or missing input, a full or read-only disk, and
the `errors` a stage names, such as a tracking server that does not answer) print
"<stage>: <what happened>; <what to do>" and exit 1 (a download that failed everywhere lists
its sources, a line each). Ctrl-C or SIGTERM print one line and exit 128 + the signal number.
Any other exception is a bug: it propagates with its traceback.
"""

from __future__ import annotations

import errno
import signal
import sys
from collections.abc import Callable

from mnist_vae.config import ConfigError
from mnist_vae.files import DiskFullError

# What an OSError's errno means for the user, and what to do about the file it names.
_OS_FAILURES = {
    errno.ENOSPC: "the disk is full; free space on the device holding it and rerun",
    errno.EDQUOT: "the disk quota is used up; free space (or raise the quota) and rerun",
    errno.EACCES: "permission denied; give this user access to it and its directory, and rerun",
    errno.EPERM: "operation not permitted; give this user access to it and its directory, "
                 "and rerun",
    errno.EROFS: "the file system is read-only; point the output (params.yaml `paths`) at a "
                 "writable place, or remount it read-write, and rerun",
}


class Stopped(BaseException):
    """A signal (SIGTERM) asked the process to stop; raised where the stage can clean up."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_stage(main: Callable[[], int | None], stage: str,
              *errors: type[BaseException]) -> int:
    """Run a stage's `main`; return its exit code, turning documented failures into one line."""
    try:
        return main() or 0
    except (KeyboardInterrupt, Stopped) as err:  # Ctrl-C, or a signal made an exception
        signum = getattr(err, "signum", signal.SIGINT)
        print(f"{stage}: stopped by {signal.Signals(signum).name}; outputs are written whole "
              "or not at all: rerun the stage to finish it", file=sys.stderr)
        return 128 + signum
    except Exception as err:
        line = failure_line(err, stage, errors)
        if line is None:
            raise
        print(line, file=sys.stderr)
        return 1


def failure_line(err: Exception, stage: str,
                 errors: tuple[type[BaseException], ...] = ()) -> str | None:
    """The one line that reports `err` in `stage`, or None when it is not a documented failure."""
    if isinstance(err, (ConfigError, DiskFullError, *errors)):
        return f"{stage}: {err}"  # one line, but for a list of what was tried (download)
    if isinstance(err, FileNotFoundError):
        if err.filename is None:  # raised by this package, with a message saying what to do
            return f"{stage}: {err}"
        return (f"{stage}: {err.filename}: no such file; run the stages that make it first "
                f"(`dvc repro {stage}` runs them)")
    if isinstance(err, OSError) and err.errno in _OS_FAILURES:
        where = err.filename if err.filename is not None else "an output"
        return f"{stage}: {where}: {_OS_FAILURES[err.errno]}"
    return None
