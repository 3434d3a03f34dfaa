"""Pure arithmetic over training curves and final numbers: targets, times to reach them, ratios.

A curve is a list of points {"train_s", "images", "epoch", "val_neg_elbo"} in training-time
order; `epoch` is the number of completed epochs at that point, and `epoch_end` marks the points
taken exactly at the end of an epoch.
"""

from __future__ import annotations

import math
from typing import Any

TARGET_EPOCHS = 10  # each baseline's target is its own validation -ELBO after this many epochs
SMALL_FRACTION = 0.25  # "a small fraction of their time", made a number

# The bars our default must pass, at the reference budget on the full data.
REFERENCE_BUDGET_S = 600.0
MAX_TEST_NEG_ELBO = 95.0
MAX_FRECHET = 40.0
MIN_RECOGNISABLE = 0.8
MIN_CLASS_ENTROPY = 0.98
MAX_TIME_RATIO_VS_MLP = 2.0


def target_from_curve(curve: list[dict], epochs: int = TARGET_EPOCHS) -> dict | None:
    """The validation -ELBO at the end of epoch `epochs` (or the last completed epoch, flagged).

    None when the curve has no completed epoch at all.
    """
    ends = [p for p in curve if p.get("epoch_end")]
    if not ends:
        return None
    exact = [p for p in ends if p["epoch"] == epochs]
    point = exact[0] if exact else max((p for p in ends if p["epoch"] <= epochs),
                                       key=lambda p: p["epoch"])
    return {"epoch": point["epoch"], "val_neg_elbo": point["val_neg_elbo"],
            "train_s": point["train_s"], "complete": point["epoch"] == epochs}


def time_to_target(curve: list[dict], target: float) -> float | None:
    """First training time at which the validation -ELBO is <= target, interpolated linearly
    between the last point above it and the first point at or below it; None if never reached.
    """
    previous = None
    for point in curve:
        value = point["val_neg_elbo"]
        if math.isfinite(value) and value <= target:
            if previous is None or previous["val_neg_elbo"] == value:
                return float(point["train_s"])
            t0, v0 = previous["train_s"], previous["val_neg_elbo"]
            t1, v1 = point["train_s"], value
            return float(t0 + (t1 - t0) * (v0 - target) / (v0 - v1))
        if math.isfinite(value):
            previous = point
    return None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator) / float(denominator)


def times_to_targets(models: dict[str, dict], baselines: list[str]) -> dict[str, dict]:
    """For every measured model, the training seconds it took to reach each baseline's target."""
    out: dict[str, dict] = {}
    for name, result in models.items():
        if result.get("status") != "ok":
            continue
        out[name] = {}
        for base in baselines:
            target = models.get(base, {}).get("target")
            if models.get(base, {}).get("status") != "ok" or target is None:
                continue
            out[name][base] = time_to_target(result["train"]["curve"], target["val_neg_elbo"])
    return out


def ratios_against(models: dict[str, dict], subject: str, baselines: list[str]) -> dict:
    """How `subject` compares with each baseline measured in the same run.

    time_to_target: subject's time to the baseline's 10-epoch -ELBO / the baseline's own time
    to it (< 1 = faster); images_per_s: subject / baseline (> 1 = more throughput); the rest
    are differences or ratios of the final numbers.
    """
    mine = models.get(subject, {})
    if mine.get("status") != "ok":
        return {}
    out = {}
    for base in baselines:
        theirs = models.get(base, {})
        if theirs.get("status") != "ok" or base == subject:
            continue
        target = theirs.get("target")
        entry: dict[str, Any] = {
            "images_per_s": ratio(mine["train"]["images_per_s"], theirs["train"]["images_per_s"])
        }
        if target is not None:
            own = time_to_target(theirs["train"]["curve"], target["val_neg_elbo"])
            reached = time_to_target(mine["train"]["curve"], target["val_neg_elbo"])
            entry.update(target_val_neg_elbo=target["val_neg_elbo"], baseline_time_s=own,
                         subject_time_s=reached, reached=reached is not None,
                         time_to_target=ratio(reached, own))
        ours, their = mine.get("final", {}), theirs.get("final", {})
        if "test_neg_elbo" in ours and "test_neg_elbo" in their:
            entry["test_neg_elbo_delta"] = ours["test_neg_elbo"] - their["test_neg_elbo"]
        if "frechet" in ours and "frechet" in their:
            entry["frechet"] = ratio(ours["frechet"], their["frechet"])
        out[base] = entry
    return out


def _bar(name: str, value: float | None, op: str, limit: float, stretch: bool = False,
         failed_without_value: bool = False) -> dict:
    """One bar; a missing value is unmeasured (passed None), or a failure when it is missing
    because the target was never reached."""
    checks = {"<": lambda v: v < limit, "<=": lambda v: v <= limit, ">=": lambda v: v >= limit}
    passed = bool(checks[op](value)) if value is not None else None
    if value is None and failed_without_value:
        passed = False
    return {"bar": name, "value": value, "op": op, "limit": limit, "passed": passed,
            "stretch": stretch}


def _time_bar(rel: dict, base: str, limit: float, stretch: bool = False, who: str = "") -> dict:
    entry = rel.get(base, {})
    return _bar(f"{who}time to {base}'s 10-epoch -ELBO / its time", entry.get("time_to_target"),
                "<=" if not stretch else "<", limit, stretch,
                failed_without_value=entry.get("reached") is False)


def bars(models: dict[str, dict], subject: str, mlp: str, slow_baselines: list[str],
         fast_subject: str | None = None) -> list:
    """The pass/fail bars for `subject`, and the stretch bar for `fast_subject` (our lighter
    config) when given; a bar whose input is missing has passed None."""
    final = models.get(subject, {}).get("final", {})
    rel = ratios_against(models, subject, [mlp, *slow_baselines])
    out = [
        _bar("test -ELBO (nats)", final.get("test_neg_elbo"), "<", MAX_TEST_NEG_ELBO),
        _bar("Frechet distance", final.get("frechet"), "<", MAX_FRECHET),
        _bar("recognisable fraction", final.get("recognisable"), ">=", MIN_RECOGNISABLE),
        _bar("class entropy", final.get("class_entropy"), ">=", MIN_CLASS_ENTROPY),
        _time_bar(rel, mlp, MAX_TIME_RATIO_VS_MLP),
        _time_bar(rel, mlp, 1.0, stretch=True),
    ]
    out += [_time_bar(rel, base, SMALL_FRACTION) for base in slow_baselines]
    if fast_subject is not None:
        fast = ratios_against(models, fast_subject, [mlp])
        out.append(_time_bar(fast, mlp, 1.0, stretch=True, who=f"{fast_subject}: "))
    return out
