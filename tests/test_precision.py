"""Resolving train.precision: native bf16, the timed verdict of `auto`, kept per machine."""

import json

import pytest

from mnist_vae import precision

SETTINGS = {"model": {"latent_dim": 2}, "batch_size": 16}


def _cpuinfo(tmp_path, flags: str, model: str = "Some CPU 9000"):
    path = tmp_path / "cpuinfo"
    block = f"processor\t: 0\nmodel name\t: {model}\nflags\t\t: fpu sse2 avx2 {flags}\n\n"
    path.write_text(block * 2)
    return path


def _timings(f32: float, bf16: float):
    calls = []

    def measure(compute):
        calls.append(compute)
        return {"float32": f32, "mixed_bfloat16": bf16}[compute]
    return measure, calls


def _never(compute):
    raise AssertionError(f"measured {compute}, but nothing should have been timed")


def test_cpu_facts_read_the_model_name_and_the_native_bf16_flags(tmp_path):
    facts = precision.cpu_facts(_cpuinfo(tmp_path, "avx512f avx512_bf16 amx_tile amx_bf16"))
    assert facts == {"model": "Some CPU 9000", "bf16_flags": ["amx_bf16", "avx512_bf16"]}
    assert precision.cpu_facts(_cpuinfo(tmp_path, "avx512f"))["bf16_flags"] == []
    assert precision.cpu_facts(tmp_path / "absent")["bf16_flags"] == []


def test_auto_picks_float32_without_timing_on_a_cpu_without_native_bf16(tmp_path):
    chosen = precision.resolve("auto", tmp_path, SETTINGS, _never,
                               _cpuinfo(tmp_path, "avx512f"))
    assert chosen["used"] == "float32" and "no native bf16" in chosen["reason"]


@pytest.mark.parametrize(("bf16_seconds", "used"), [
    (0.5, "mixed_bfloat16"),  # 2x: what AMX promises
    (0.85, "float32"),  # 1.18x: about what this AMD EPYC measured, within timing noise
    (0.95, "float32"), (1.3, "float32")])
def test_auto_picks_bf16_only_when_it_measured_clearly_faster(tmp_path, bf16_seconds, used):
    measure, calls = _timings(1.0, bf16_seconds)
    chosen = precision.resolve("auto", tmp_path, SETTINGS, measure,
                               _cpuinfo(tmp_path, "avx512_bf16"))
    assert chosen["used"] == used and chosen["source"] == "measured now"
    assert chosen["speedup"] == pytest.approx(1.0 / bf16_seconds, rel=1e-3)
    assert calls == ["float32", "mixed_bfloat16"] * precision.MEASURE_ROUNDS  # interleaved


def test_the_verdict_is_kept_so_later_runs_on_the_machine_agree_without_timing(tmp_path):
    cpuinfo = _cpuinfo(tmp_path, "amx_bf16")
    measure, _ = _timings(1.0, 0.5)
    first = precision.resolve("auto", tmp_path / "ckpt", SETTINGS, measure, cpuinfo)
    again = precision.resolve("auto", tmp_path / "ckpt", SETTINGS, _never, cpuinfo)
    assert again["used"] == first["used"] == "mixed_bfloat16"
    assert "measured earlier" in again["source"]
    stored = json.loads((tmp_path / "ckpt" / precision.VERDICT_FILE).read_text())
    assert [v["used"] for v in stored.values()] == ["mixed_bfloat16"]
    # another model (or batch size, CPU, TensorFlow) is timed afresh and kept beside it
    measure, calls = _timings(1.0, 1.0)
    other = precision.resolve("auto", tmp_path / "ckpt", {**SETTINGS, "batch_size": 64},
                              measure, cpuinfo)
    assert other["used"] == "float32" and calls
    assert len(json.loads((tmp_path / "ckpt" / precision.VERDICT_FILE).read_text())) == 2


@pytest.mark.parametrize("asked", ["float32", "mixed_bfloat16"])
def test_an_explicit_precision_is_used_as_written_and_never_timed(tmp_path, asked):
    chosen = precision.resolve(asked, tmp_path, SETTINGS, _never, _cpuinfo(tmp_path, ""))
    assert chosen["used"] == asked and not (tmp_path / precision.VERDICT_FILE).exists()
