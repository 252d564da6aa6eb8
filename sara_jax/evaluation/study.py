"""Comparing training recipes by their logged evaluation curves: mean and spread over seeds,
a table at fixed steps, and how many steps each method takes to reach a baseline's final value.

The speed-up is the paper's "2x faster" read off curves: for a pair (baseline, method), the
threshold is the baseline's final mean value of a metric; the ratio is the steps the baseline
needed to reach it over the steps the method needed (> 1: the method is faster).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sara_jax.io.events import Scalars

# Whether a metric improves downwards; metrics not listed are taken as lower-is-better.
HIGHER_IS_BETTER = {"class_acc", "is", "precision", "recall"}
LABELS = {"none": "SiT", "repa": "REPA", "sara": "SARA"}


def label(method: str) -> str:
    """The name a method goes by in tables and legends ("none" is the plain SiT)."""
    return LABELS.get(method, method)


def seed_curves(runs: dict[int, Scalars], metric: str) -> dict[str, Any] | None:
    """Mean and spread over seeds of `metric` at the steps every seed logged it.

    Args:
      runs: seed -> that run's scalars.
    Returns: {"steps", "mean", "std" (ddof 1; 0 for one seed), "per_seed" (seeds, steps),
      "seeds"} as lists, or None when no seed logged the metric.
    """
    logged = {seed: s[metric] for seed, s in runs.items() if metric in s}
    if not logged:
        return None
    steps = sorted(set.intersection(*(set(steps.tolist()) for steps, _ in logged.values())))
    by_step = [dict(zip(st.tolist(), v.tolist(), strict=True)) for st, v in logged.values()]
    per_seed = np.array([[values[k] for k in steps] for values in by_step])
    std = per_seed.std(axis=0, ddof=1) if len(per_seed) > 1 else np.zeros(len(steps))
    return {
        "steps": steps,
        "mean": per_seed.mean(axis=0).tolist(),
        "std": std.tolist(),
        "per_seed": per_seed.tolist(),
        "seeds": sorted(logged),
    }


def steps_to_reach(
    steps: Sequence[int], values: Sequence[float], threshold: float, higher_is_better: bool
) -> int | None:
    """The first logged step whose value is at least as good as `threshold`, or None."""
    for step, value in zip(steps, values, strict=True):
        if (value >= threshold) if higher_is_better else (value <= threshold):
            return int(step)
    return None


def default_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """(baseline, method) pairs of the paper's comparisons present: SiT -> REPA -> SARA."""
    order = [m for m in ("none", "repa", "sara") if m in methods]
    return list(zip(order[:-1], order[1:], strict=True))


def aggregate(
    runs: dict[str, dict[int, Scalars]],
    metrics: Sequence[str],
    pairs: Sequence[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The study's summary, JSON-ready.

    Args:
      runs: method -> seed -> scalars of that arm.
      metrics: the evaluation tags to compare (e.g. "fd", "class_acc" or "fid").
      pairs: (baseline, method) pairs for speed-ups; default `default_pairs`.
    Returns: {"curves": metric -> method -> `seed_curves`, "speedups": a row per pair and
      metric: threshold, the baseline's and the method's steps to it (on mean curves and per
      seed) and their ratio}.
    """
    pairs = default_pairs(list(runs)) if pairs is None else pairs
    curves = {
        metric: {m: c for m in runs if (c := seed_curves(runs[m], metric)) is not None}
        for metric in metrics
    }
    speedups = []
    for metric, by_method in curves.items():
        higher = metric in HIGHER_IS_BETTER
        for baseline, method in pairs:
            if baseline not in by_method or method not in by_method:
                continue
            base, other = by_method[baseline], by_method[method]
            threshold = base["mean"][-1]
            base_steps = steps_to_reach(base["steps"], base["mean"], threshold, higher)
            method_steps = steps_to_reach(other["steps"], other["mean"], threshold, higher)
            speedups.append(
                {
                    "metric": metric,
                    "baseline": baseline,
                    "method": method,
                    "threshold": threshold,
                    "baseline_steps": base_steps,
                    "method_steps": method_steps,
                    "method_steps_per_seed": [
                        steps_to_reach(other["steps"], values, threshold, higher)
                        for values in other["per_seed"]
                    ],
                    "ratio": base_steps / method_steps if method_steps else None,
                }
            )
    return {"curves": curves, "speedups": speedups}


def markdown(summary: dict[str, Any], table_steps: Sequence[int] | None = None) -> str:
    """Tables of mean +- std (n seeds) at `table_steps` (default: every logged step) and the
    speed-ups, as markdown."""
    lines = []
    for metric, by_method in summary["curves"].items():
        if not by_method:
            continue
        logged = sorted({s for c in by_method.values() for s in c["steps"]})
        steps = [s for s in (table_steps or logged) if s in logged]
        better = "higher" if metric in HIGHER_IS_BETTER else "lower"
        lines += [f"### {metric} ({better} is better; mean +- std over seeds)", ""]
        lines.append("| method | seeds | " + " | ".join(f"step {s}" for s in steps) + " |")
        lines.append("| --- | --- |" + " --- |" * len(steps))
        for method, c in by_method.items():
            at = dict(zip(c["steps"], zip(c["mean"], c["std"], strict=True), strict=True))
            cells = [f"{at[s][0]:.4g} +- {at[s][1]:.2g}" if s in at else "-" for s in steps]
            lines.append(f"| {label(method)} | {len(c['seeds'])} | " + " | ".join(cells) + " |")
        lines.append("")
    if summary["speedups"]:
        lines += [
            "### Steps to reach the baseline's final value (mean curves)",
            "",
            "| metric | baseline | method | threshold | baseline steps | method steps "
            "| per seed | speed-up |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in summary["speedups"]:
            ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "not reached"
            lines.append(
                f"| {r['metric']} | {label(r['baseline'])} | {label(r['method'])} "
                f"| {r['threshold']:.4g} | {r['baseline_steps']} | {r['method_steps'] or '-'} "
                f"| {r['method_steps_per_seed']} | {ratio} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    """`<metric>.png` per metric: each method's mean curve with a +-1 std band over seeds."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for metric, by_method in summary["curves"].items():
        if not by_method:
            continue
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        for i, (method, c) in enumerate(by_method.items()):
            steps, mean, std = (np.asarray(c[k]) for k in ("steps", "mean", "std"))
            ax.plot(
                steps,
                mean,
                marker="o",
                color=f"C{i}",
                label=f"{label(method)} (n={len(c['seeds'])})",
            )
            ax.fill_between(steps, mean - std, mean + std, color=f"C{i}", alpha=0.2)
        better = "higher" if metric in HIGHER_IS_BETTER else "lower"
        ax.set_title(f"{metric} ({better} is better)")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend()
        written.append(out / f"{metric}.png")
        fig.savefig(written[-1], dpi=120)
    return written
