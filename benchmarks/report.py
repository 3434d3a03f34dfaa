"""Benchmark results (the JSON that `benchmarks.run` writes) -> Markdown tables, and the README's
Benchmark block. Pure functions: python -m benchmarks.report RESULTS.json re-renders a file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

README_BEGIN = "<!-- benchmark:begin (written by `make bench`) -->"
README_END = "<!-- benchmark:end -->"


def fmt(value: Any, digits: int = 1, suffix: str = "") -> str:
    """A number for a table cell; missing values are an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value:,.{digits}f}{suffix}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cpu_label(m: dict) -> str:
    """The CPU model and its vector units: one model name covers CPUs that train apart."""
    features = m.get("cpu_features")  # None: unknown, or a report older than the field
    if features is None:
        return m.get("cpu", "?")
    return f"{m.get('cpu', '?')} ({', '.join(features) or 'no AVX2'})"


def machine_line(results: dict) -> str:
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
    return (f"{cpu_label(m)}, {m.get('usable_cores', '?')} usable cores of "
            f"{m.get('logical_cores', '?')}, {fmt(m.get('memory_gib'), 0)} GiB; {versions}")


def load_line(results: dict) -> str:
    """The 1-minute load average around each model: a busy machine shows here."""
    parts = [f"`{n}` {fmt(r['load_before'], 1)} → {fmt(r['load_after'], 1)}"
             for n, r in results["models"].items() if "load_before" in r and "load_after" in r]
    return ", ".join(parts) or "—"


def settings_line(results: dict) -> str:
    s = results["settings"]
    data = results.get("data_sizes", {})
    limits = ", ".join(f"{k}={v}" for k, v in {**s.get("data", {}),
                                                **s.get("evaluate", {})}.items())
    return (f"{fmt(s['budget_s'], 0)} s of training per model (validation probes excluded); "
            f"split {fmt(data.get('train'))} train / {fmt(data.get('val'))} validation / "
            f"{fmt(data.get('test'))} test images" + (f"; overrides: {limits}" if limits else ""))


def _ok(results: dict) -> dict[str, dict]:
    return {n: r for n, r in results["models"].items() if r.get("status") == "ok"}


def models_table(results: dict) -> str:
    n_train = results.get("data_sizes", {}).get("train")
    rows = []
    for name, r in results["models"].items():
        if r.get("status") != "ok":
            rows.append([f"`{name}`", r.get("status", "?") + ": " + r.get("note", "")]
                        + [""] * 9)
            continue
        t, f, target = r["train"], r["final"], r.get("target") or {}
        tenth = fmt(target.get("val_neg_elbo"))
        if target and not target.get("complete"):
            tenth += f" (epoch {target['epoch']})"
        if r.get("reference_10_epoch") is not None:
            tenth += f" [quoted: {fmt(r['reference_10_epoch'])}]"
        trained = fmt(t["train_s"], 0) + (" (own end)" if t.get("ended_by") == "schedule" else "")
        rows.append([
            f"`{name}`", fmt(r.get("n_params")), trained, fmt(t["images_per_s"], 0),
            fmt(t["images"] / n_train, 1) if n_train else fmt(t["epochs"]),
            tenth, fmt(f.get("test_neg_elbo")), fmt(f.get("iwae_nll")),
            fmt(f.get("recognisable"), 3), fmt(f.get("class_entropy"), 3),
            fmt(f.get("frechet")),
        ])
    return table(["model", "parameters", "training s", "images/s", "epochs",
                  "val −ELBO at epoch 10", "test −ELBO", "IWAE NLL", "recognisable",
                  "class entropy", "Fréchet"], rows) + (
        "\n\n*own end*: the model's own epoch count or early stopping ended its training "
        "before the budget.")


def prior_lines(results: dict) -> list[str]:
    """Which models' final numbers use a prior fitted after the budget, and what it cost."""
    lines = []
    for name, r in _ok(results).items():
        prior = r.get("prior") or {}
        if prior.get("kind") == "mixture":
            lines.append(
                f"`{name}`: after its budget, a {prior['components']}-component Gaussian mixture "
                f"prior was fitted to {prior['codes']:,} training codes in {fmt(prior['seconds'])} "
                "s (not in its training s); its test −ELBO, IWAE and samples use that prior, "
                "its validation curve (the time-to-target reading) N(0, I).")
    return [*lines, ""] if lines else []


def targets_table(results: dict) -> str:
    ok = _ok(results)
    bases = [b for b in results.get("baselines", []) if b in ok and ok[b].get("target")]
    times = results.get("time_to_targets", {})
    header = ["model"] + [f"`{b}` (≤ {fmt(ok[b]['target']['val_neg_elbo'])})" for b in bases]
    rows = []
    for name in ok:
        row = [f"`{name}`"]
        for base in bases:
            t = times.get(name, {}).get(base)
            own = times.get(base, {}).get(base)
            if t is None:
                row.append("not reached")
            else:
                rel = f" ({t / own:.2f}×)" if own else ""
                row.append(f"{t:.1f} s{rel}")
        rows.append(row)
    return table(header, rows)


def ratios_table(results: dict) -> str:
    subject = results.get("subject", "ours")
    rows = []
    for name, ratios in ((subject, results.get("ratios", {})),
                         (results.get("fast_subject"), results.get("fast_ratios", {}))):
        for base, r in ratios.items():
            time = ("not reached" if r.get("reached") is False
                    else fmt(r.get("time_to_target"), 2, "×"))
            rows.append([f"`{name}`", f"`{base}`", fmt(r.get("images_per_s"), 2, "×"), time,
                         fmt(r.get("test_neg_elbo_delta"), 1), fmt(r.get("frechet"), 2, "×")])
    return ("Ours against each baseline, same run (time: < 1× is faster; "
            "throughput: > 1× is more images/s):\n\n"
            + table(["model", "baseline", "throughput", "time to its 10-epoch −ELBO",
                     "test −ELBO difference (nats)", "Fréchet distance"], rows))


def bars_table(results: dict) -> str:
    rows = []
    for b in results.get("bars", []):
        verdict = {True: "pass", False: "**fail**", None: "not measured"}[b["passed"]]
        label = b["bar"] + (" (stretch)" if b["stretch"] else "")
        digits = 3 if b["limit"] < 5 else 1
        value = "not reached" if b["value"] is None and b["passed"] is False else fmt(
            b["value"], digits)
        rows.append([label, value, f"{b['op']} {b['limit']}", verdict])
    return table(["bar", "value", "needed", "verdict"], rows)


def overhead_table(results: dict) -> str:
    o = results.get("overhead") or {}
    if o.get("status") != "ok":
        return f"Not measured: {o.get('note', 'skipped')}."
    def ran(stages):
        return ", ".join(stages) or "none"
    return table(["`dvc repro`", "seconds", "stages run"], [
        ["nothing changed", fmt(o["noop_repro_s"], 2), ran(o["noop_stages_run"])],
        [f"after `{o['render_param']}`", fmt(o["render_repro_s"], 2),
         ran(o["render_stages_run"])],
    ])


def samples_lines(results: dict, picture_dir: str) -> list[str]:
    picture = results.get("samples_picture")
    if not picture:
        return []
    return [f"Prior samples, one row per model: ![prior samples]({picture_dir}{picture})", ""]


def render(results: dict, heading: str = "##", picture_dir: str = "") -> str:
    """The whole report as Markdown; `heading` is the level of its section titles and
    `picture_dir` the path from the Markdown file to the results directory."""
    warning = ""
    if not results.get("reference_run"):
        warning = ("\n> **Not a reference run** (" + results.get("why_not_reference", "") +
                   "): the bars apply to 600 s per model on the full data only.\n")
    sub = heading + "#"
    return "\n".join([
        f"{heading} Benchmark of {results['date']}" + (f" ({results['label']})"
                                                       if results.get("label") else ""),
        warning,
        f"Machine: {machine_line(results)}.  ",
        f"Budget: {settings_line(results)}.  ",
        f"Load average before → after each model: {load_line(results)}.  ",
        "Every model trains on the same split in the same run; −ELBO and NLL are nats per test "
        "image (Bernoulli likelihood on grey pixels), IWAE with "
        f"k = {results.get('iwae_k', '?')}; the sample metrics judge prior samples with the "
        "digit classifier.",
        "",
        f"{sub} After the budget",
        "",
        models_table(results),
        "",
        *prior_lines(results),
        *samples_lines(results, picture_dir),
        f"{sub} Time to reach each baseline's 10-epoch validation −ELBO",
        "",
        "Training seconds; in brackets, against the baseline's own time to it.",
        "",
        targets_table(results),
        "",
        ratios_table(results),
        "",
        f"{sub} Bars",
        "",
        bars_table(results),
        "",
        f"{sub} Pipeline overhead",
        "",
        overhead_table(results),
        "",
    ])


def update_readme(text: str, block: str) -> str:
    """README text with the Benchmark block between the markers replaced by `block`."""
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"README: markers {README_BEGIN!r} and {README_END!r} not found; add "
                         "them where the benchmark table belongs")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    return f"{head}{README_BEGIN}\n{block.strip()}\n{README_END}{tail}"


def main(argv: list[str]) -> int:
    results = json.loads(Path(argv[0]).read_text())
    sys.stdout.write(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
