"""The dvclive adapter: per-epoch training metrics for DVC plots and `dvc exp show`."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class DvcLiveLogger:
    """Per-epoch metrics to dvclive (DVC plots and `dvc exp show`); files declared in dvc.yaml.

    `dvcyaml=False` keeps dvclive from rewriting dvc.yaml; the directory starts empty because
    a resumed run replays its history from the checkpoint.
    """

    def __init__(self, directory: str | Path):
        from dvclive import Live

        self.live = Live(str(directory), dvcyaml=False, save_dvc_exp=False, resume=False)

    def log_epoch(self, record: dict[str, float]) -> None:
        self.live.step = int(record["epoch"])
        for name, value in record.items():
            if name != "epoch":
                self.live.log_metric(name, value)
        self.live.make_summary()

    def log_summary(self, facts: dict[str, Any], history: list[dict[str, float]]) -> None:
        """The best epoch's validation metrics, alongside the last epoch's, for `dvc exp show`."""
        best = next(r for r in history if r["epoch"] == facts["best_epoch"])
        for key, value in best.items():
            if key.startswith("val/"):
                self.live.log_metric(f"best/{key}", value, plot=False)
        for name in ("best_epoch", "epochs_run"):
            self.live.log_metric(name, facts[name], plot=False)
        self.live.make_summary()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.live.end()
