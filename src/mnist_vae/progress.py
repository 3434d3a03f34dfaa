"""Progress of the long loops, with an ETA: a bar on a terminal, a line now and then in a log.

Every slow step (likelihood passes, the prior's EM, decoding and scoring samples, rendering)
wraps its loop in `progress(...)`, a tqdm bar on stderr. When stderr is not a terminal (CI, a
log file, `dvc repro > log`), a step that lasts longer than `LOG_INTERVAL_S` seconds prints one
plain line every `LOG_INTERVAL_S` seconds and a last one; shorter steps print nothing.
`TQDM_DISABLE=1` silences every bar; the numbers never depend on it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import IO, Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")

LOG_INTERVAL_S = 10.0  # seconds between two lines (and before the first) in a log
LOG_FORMAT = ("{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} {unit} "
              "[{elapsed} elapsed, {remaining} left]")


class _Lines:
    """A stream tqdm writes to that turns each carriage-return redraw into its own line."""

    def __init__(self, stream: IO[str]):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line and line != self.last:  # tqdm redraws the finished bar once more on close
            self.stream.write(line + "\n")
            self.last = line

    def flush(self) -> None:
        self.stream.flush()


def _interactive(stream: IO[str]) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def _width(stream: IO[str]) -> int:
    """The terminal's columns; 0 when unknown (a pseudo-terminal nobody sized, as in CI)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def progress(iterable: Iterable[T] | None = None, *, desc: str, total: int | None = None,
             unit: str = "it", stream: IO[str] | None = None) -> tqdm:
    """A tqdm bar over `iterable` (or updated by hand up to `total`): on `stream` (stderr)."""
    stream = stream or sys.stderr
    options: dict[str, Any] = {"desc": desc, "total": total, "unit": unit}
    if _interactive(stream):
        if _width(stream) == 0:  # tqdm would draw nothing at all
            return tqdm(iterable, file=stream, ncols=80, nrows=24, **options)
        return tqdm(iterable, file=stream, dynamic_ncols=True, **options)
    # maxinterval: tqdm's monitor thread would otherwise force lines at its own pace
    return tqdm(iterable, file=_Lines(stream), delay=LOG_INTERVAL_S, mininterval=LOG_INTERVAL_S,
                maxinterval=LOG_INTERVAL_S, bar_format=LOG_FORMAT, **options)


def keras_verbose(stream: IO[str] | None = None) -> int:
    """Keras `fit(verbose=...)`: its progress bar on a terminal, one line per epoch in a log."""
    return 1 if _interactive(stream or sys.stdout) else 2
