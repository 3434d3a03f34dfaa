"""Which float precision training computes in: `train.precision` resolved on the machine at hand.

`float32` and `mixed_bfloat16` are taken as written. `auto` picks mixed_bfloat16 only where the
CPU has native bf16 (AMX or AVX512-BF16 in /proc/cpuinfo) *and* a short timed comparison of
both precisions on this model found bf16 at least `SPEEDUP_NEEDED` times faster. That verdict
is written to a file (`paths.checkpoints/precision.json`, keyed by CPU, TensorFlow version and
the settings that change speed) and reused by every later run on the machine, so `auto` gives
the same precision, hence the same result, on a given machine; delete the file to measure again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_vae.files import atomic_path

NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
# bf16 must beat float32 by this much: below it the verdict could flip with timing noise (this
# AMD EPYC measured 1.07x-1.15x), and bf16's cost in nats at equal epochs is not bought back
SPEEDUP_NEEDED = 1.25
VERDICT_FILE = "precision.json"
MEASURE_ROUNDS = 5  # interleaved rounds of each precision, so load hits both; medians compared
MEASURE_STEPS = 40  # timed training steps per round, after a warm-up


def cpu_facts(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The CPU model name and which native bf16 flags it reports (none off Linux)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {"model": platform.processor() or "unknown", "bf16_flags": []}
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"model": model, "bf16_flags": [f for f in NATIVE_BF16_FLAGS if f in flags]}


def verdict_key(cpu: dict[str, Any], settings: dict[str, Any]) -> str:
    """Names one verdict: the CPU, TensorFlow's version and the settings that change speed."""
    import tensorflow as tf

    blob = json.dumps({"cpu": cpu, "tensorflow": tf.__version__, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


Measure = Callable[[str], float]  # precision -> seconds per image of one timed round


def decide(cpu: dict[str, Any], measure: Measure) -> dict[str, Any]:
    """The `auto` verdict: float32 without native bf16; else time both, bf16 if clearly faster."""
    if not cpu["bf16_flags"]:
        return {"used": "float32", "reason": "no native bf16 on this CPU (amx_bf16, avx512_bf16)"}
    rounds: dict[str, list[float]] = {"float32": [], "mixed_bfloat16": []}
    for _ in range(MEASURE_ROUNDS):
        for precision, times in rounds.items():
            times.append(measure(precision))
    f32, bf16 = (statistics.median(rounds[p]) for p in ("float32", "mixed_bfloat16"))
    speedup = f32 / bf16
    faster = speedup >= SPEEDUP_NEEDED
    return {
        "used": "mixed_bfloat16" if faster else "float32",
        "reason": (f"bf16 measured {speedup:.2f}x float32's training speed (CPU time per "
                   f"image); "
                   f"{'at least' if faster else 'below'} the {SPEEDUP_NEEDED}x needed"),
        "speedup": round(speedup, 3),
        "cpu_ms_per_image": {p: [round(1000 * t, 4) for t in ts] for p, ts in rounds.items()},
    }


def resolve(asked: str, cache_dir: str | Path, settings: dict[str, Any],
            measure: Measure, cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The precision to train in and why: `asked` unless it is `auto`, else the machine's
    verdict, read from `cache_dir/precision.json` or measured once and written there."""
    cpu = cpu_facts(cpuinfo)
    if asked != "auto":
        return {"asked": asked, "used": asked, "reason": "as set in train.precision", "cpu": cpu}
    key = verdict_key(cpu, settings)
    path = Path(cache_dir) / VERDICT_FILE
    verdicts = _read(path)
    if key in verdicts:
        return {"asked": asked, **verdicts[key], "source": f"{path} (measured earlier)",
                "cpu": cpu}
    verdict = {**decide(cpu, measure), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime())}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({**verdicts, key: verdict}, indent=2, sort_keys=True) + "\n",
                       encoding="utf-8")
    print(f"train.precision auto: {verdict['used']} ({verdict['reason']}); kept in {path}")
    return {"asked": asked, **verdict, "source": "measured now", "cpu": cpu}


def _read(path: Path) -> dict[str, Any]:
    try:
        verdicts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return verdicts if isinstance(verdicts, dict) else {}


def speed_settings(model_cfg: Any, train_cfg: Any) -> dict[str, Any]:
    """What changes the two precisions' speed ratio: model, batch size, XLA, determinism."""
    return {"model": dataclasses.asdict(model_cfg), "batch_size": train_cfg.batch_size,
            "jit_compile": train_cfg.jit_compile, "deterministic": train_cfg.deterministic}
