"""A training clock with a budget, and the validation probes that draw a model's curve.

The clock counts training time only: time spent measuring the validation -ELBO is paused out,
so every model gets the same budget of pure training, and a curve point's `train_s` is the
training time it took to get there. Probes fall at every epoch end and, in between, whenever
the training time since the last probe exceeds max(min_interval_s, growth * elapsed): dense
early, where times-to-target are short, and sparse later, so probing stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class Probe:
    """Budgeted training clock plus the curve of validation -ELBO against training time."""

    def __init__(self, budget_s: float, evaluate: Callable[[Any], float], *,
                 min_interval_s: float = 2.0, growth: float = 0.1,
                 clock: Callable[[], float] = time.perf_counter,
                 cpu_clock: Callable[[], float] = time.process_time):
        self.budget_s = float(budget_s)
        self.evaluate = evaluate
        self.min_interval_s = min_interval_s
        self.growth = growth
        self.clock, self.cpu_clock = clock, cpu_clock
        self.curve: list[dict] = []
        self.images = 0
        self.epochs = 0
        self.eval_s = 0.0
        self._eval_cpu_s = 0.0
        self._start = self._cpu_start = None
        self._last_probe_s = 0.0
        self._stopped_cpu_s: float | None = None
        self.model: Any = None

    def start(self, model: Any) -> None:
        """Start the clock on `model`, probing it untrained first (the curve's first point)."""
        self.model = model
        self._start, self._cpu_start = self.clock(), self.cpu_clock()
        self._probe(epoch_end=False)

    def train_s(self) -> float:
        """Training time so far, probes excluded."""
        return self.clock() - self._start - self.eval_s

    def cpu_s(self) -> float:
        """Process CPU time spent training so far (all threads), probes excluded."""
        return self.cpu_clock() - self._cpu_start - self._eval_cpu_s

    def done(self) -> bool:
        """True once the training budget is spent."""
        return self.train_s() >= self.budget_s

    def step(self, images: int) -> None:
        """One optimiser step on `images` images; probes when one is due."""
        self.images += images
        elapsed = self.train_s()
        if elapsed - self._last_probe_s >= max(self.min_interval_s, self.growth * elapsed):
            self._probe(epoch_end=False)

    def epoch_end(self) -> None:
        """A complete pass over the training set: always probed (targets are per epoch)."""
        self.epochs += 1
        self._probe(epoch_end=True)

    def stop(self) -> None:
        """End training: probe the final state (unless just probed) and stop the clocks, so
        work after training (a prior fit, saving) counts in no training figure."""
        if self._stopped_cpu_s is not None:
            return
        if not self.curve or self.curve[-1]["images"] != self.images:
            self._probe(epoch_end=False)
        self._stopped_cpu_s = self.cpu_s()

    def finish(self) -> dict:
        """Stop (unless stopped at the end of training) and return the training facts."""
        self.stop()
        train_s = self.curve[-1]["train_s"]
        return {
            "train_s": train_s,
            "ended_by": "budget" if train_s >= self.budget_s else "schedule",
            "cpu_s": self._stopped_cpu_s,
            "probe_s": self.eval_s,
            "images": self.images,
            "epochs": self.epochs,
            "images_per_s": self.images / train_s if train_s > 0 else None,
            "curve": self.curve,
        }

    def _probe(self, epoch_end: bool) -> None:
        elapsed = self.train_s()
        began, cpu_began = self.clock(), self.cpu_clock()
        value = float(self.evaluate(self.model))
        self.eval_s += self.clock() - began
        self._eval_cpu_s += self.cpu_clock() - cpu_began
        self._last_probe_s = elapsed
        self.curve.append({"train_s": elapsed, "images": self.images, "epoch": self.epochs,
                           "epoch_end": epoch_end, "val_neg_elbo": value})
