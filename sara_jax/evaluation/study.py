"""Comparing training recipes by their logged evaluation curves: mean and spread over seeds,
a table at fixed steps, and how many steps each method takes to reach a threshold.

The speed-up is the paper's "2x faster" read off curves: for a pair (baseline, method) and a
threshold, the ratio is the steps the baseline needed to reach it over the steps the method
needed (> 1: the method is faster). Steps to reach are interpolated linearly between evaluated
steps, so that curves evaluated every few hundred steps still resolve differences smaller than
the spacing. The thresholds are the baseline's final mean value (where a threshold on a plateau
says little) and any chosen ones: a value mid-way up the curves is where methods differ.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from scipy import stats

from sara_jax.io.events import Scalars

# Whether a metric improves upwards; a score not listed here improves downwards.
HIGHER_IS_BETTER = {"class_acc", "is", "precision", "recall"}
LABELS = {
    "none": "SiT",
    "repa": "REPA",
    "sara": "SARA",
    "irepa": "iREPA",
    "sara_irepa": "SARA+iREPA",
}


def sense(metric: str) -> tuple[bool | None, str]:
    """Which way `metric` improves (True: upwards, False: downwards, None: it describes the
    representations and improves in no fixed direction) and how tables and plots say so.

    The spatial metrics (`spatial/<tokens>/<lds|cds|srss|rmsc>`) describe: whether more local
    structure than the encoder's is better is the question the study asks of them, so they get
    curves and tables but no thresholds or speed-ups. `struc_gap/*` is L_struc's measure of the
    distance to the encoder's structure, a target: lower is closer.
    """
    if metric.startswith("spatial/"):
        if metric.endswith("/rmsc"):
            return None, "token spread; no better direction"
        return None, "higher = more spatial structure; no better direction"
    if metric.startswith("struc_gap/"):
        return False, "lower = closer to the encoder's structure"
    higher = metric in HIGHER_IS_BETTER
    return higher, f"{'higher' if higher else 'lower'} is better"


def label(method: str) -> str:
    """The name a method goes by in tables and legends ("none" is the plain SiT; a probe
    "sara+loss.struc_weight=0.1" is "SARA+loss.struc_weight=0.1")."""
    return "+".join(LABELS.get(part, part) for part in method.split("+"))


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
) -> float | None:
    """The step at which a curve first reaches `threshold` (at least as good), interpolated
    linearly between the logged steps around the crossing; None if it never does.

    Args:
      steps: logged steps, increasing. values: the metric at those steps.
    """
    sign = 1.0 if higher_is_better else -1.0
    previous = None
    for step, value in zip(steps, values, strict=True):
        if sign * (value - threshold) >= 0:
            if previous is None or value == previous[1]:
                return float(step)
            (s0, v0), (s1, v1) = previous, (step, value)
            return s0 + (threshold - v0) / (v1 - v0) * (s1 - s0)
        previous = (step, value)
    return None


# The comparisons the study answers, (baseline, method): each alignment against the one it
# extends, and iREPA's two changes against the same method without them.
PAIRS = (
    ("none", "repa"),
    ("repa", "sara"),
    ("repa", "irepa"),
    ("sara", "sara_irepa"),
    ("irepa", "sara_irepa"),
)


def default_pairs(methods: Sequence[str]) -> list[tuple[str, str]]:
    """The (baseline, method) pairs of PAIRS whose two methods are both present."""
    return [(a, b) for a, b in PAIRS if a in methods and b in methods]


def mean_difference(a: Sequence[float | None], b: Sequence[float | None]) -> dict[str, Any] | None:
    """Whether two sets of per-seed values differ by more than their seed spread: the difference
    of the means, mean(a) - mean(b), its standard error sqrt(s_a^2 / n_a + s_b^2 / n_b) (ddof 1),
    and `exceeds_spread`, |difference| > 2 standard errors. None unless every value is there
    and each side has 2 or more."""
    if len(a) < 2 or len(b) < 2 or None in a or None in b:
        return None
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    difference = float(x.mean() - y.mean())
    se = float(np.sqrt(x.var(ddof=1) / len(x) + y.var(ddof=1) / len(y)))
    return {"difference": difference, "se": se, "exceeds_spread": abs(difference) > 2 * se}


def seed_difference(
    baseline: Sequence[float | None], method: Sequence[float | None]
) -> dict[str, Any] | None:
    """`mean_difference` of two methods' per-seed steps to a threshold, as
    {"steps": baseline - method (> 0: the method is faster), "se", "exceeds_spread"}; None
    unless every seed of both reached it and each has 2 or more."""
    d = mean_difference(baseline, method)
    if d is None:
        return None
    return {"steps": d["difference"], "se": d["se"], "exceeds_spread": d["exceeds_spread"]}


def _scored_pairs(
    curves: dict[str, dict[str, dict[str, Any]]], pairs: Sequence[tuple[str, str]]
) -> Iterator[tuple[str, bool, str, str, dict[str, Any], dict[str, Any]]]:
    """(metric, higher_is_better, baseline, method, baseline's curve, method's curve) for each
    metric with a better direction and each pair with both methods' `seed_curves`."""
    for metric, by_method in curves.items():
        higher, _ = sense(metric)
        if higher is None:
            continue
        for baseline, method in pairs:
            if baseline in by_method and method in by_method:
                yield metric, higher, baseline, method, by_method[baseline], by_method[method]


def step_differences(
    curves: dict[str, dict[str, dict[str, Any]]], pairs: Sequence[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Each pair's gap at every step both methods logged, for the metrics with a better
    direction: which method is ahead at step K, beyond the seed spread, whatever threshold.

    Args:
      curves: metric -> method -> `seed_curves`.
      pairs: (baseline, method) pairs.
    Returns: a row per metric, pair and step where both have 2 or more seeds: {"metric",
      "baseline", "method", "step", "difference" (the method's mean minus the baseline's),
      "se", "exceeds_spread" (`mean_difference`), "ahead" (the better method when beyond 2
      s.e., else None)}.
    """
    rows = []
    for metric, higher, baseline, method, base, other in _scored_pairs(curves, pairs):
        for step in base["steps"]:
            if step not in other["steps"]:
                continue
            at = [[v[c["steps"].index(step)] for v in c["per_seed"]] for c in (other, base)]
            d = mean_difference(*at)
            if d is None:
                continue
            ahead = None
            if d["exceeds_spread"]:
                ahead = method if (d["difference"] > 0) == higher else baseline
            rows.append(
                {
                    "metric": metric,
                    "baseline": baseline,
                    "method": method,
                    "step": step,
                    **d,
                    "ahead": ahead,
                }
            )
    return rows


def reach(curve: dict[str, Any], threshold: float, higher_is_better: bool) -> dict[str, Any]:
    """Steps a `seed_curves` entry takes to reach `threshold`: on its mean curve and per seed."""
    return {
        "steps": steps_to_reach(curve["steps"], curve["mean"], threshold, higher_is_better),
        "per_seed": [
            steps_to_reach(curve["steps"], values, threshold, higher_is_better)
            for values in curve["per_seed"]
        ],
    }


def aggregate(
    runs: dict[str, dict[int, Scalars]],
    metrics: Sequence[str],
    pairs: Sequence[tuple[str, str]] | None = None,
    thresholds: Sequence[tuple[str, float]] = (),
) -> dict[str, Any]:
    """The study's summary, JSON-ready.

    Args:
      runs: method -> seed -> scalars of that arm.
      metrics: the evaluation tags to compare (e.g. "fd", "class_acc" or "fid").
      pairs: (baseline, method) pairs for speed-ups; default `default_pairs`.
      thresholds: chosen (metric, value) thresholds, besides each baseline's final value.
    Returns: {"curves": metric -> method -> `seed_curves`,
      "reach": a row per chosen threshold and method: its steps to reach it (`reach`),
      "speedups": a row per pair, metric and threshold (the baseline's final mean value, then
      the chosen ones): the baseline's and the method's steps to it, their ratio and whether
      the per-seed steps differ by more than the seed spread (`seed_difference`),
      "differences": the pairs' gaps at each step (`step_differences`)}.
    """
    pairs = default_pairs(list(runs)) if pairs is None else pairs
    curves = {
        metric: {m: c for m in runs if (c := seed_curves(runs[m], metric)) is not None}
        for metric in metrics
    }
    rows, speedups = [], []
    for metric, value in thresholds:
        higher, words = sense(metric)
        if higher is None:
            raise ValueError(f"threshold on {metric}: it has no better direction ({words})")
        for method, c in curves.get(metric, {}).items():
            rows.append(
                {"metric": metric, "threshold": value, "method": method, **reach(c, value, higher)}
            )
    for metric, higher, baseline, method, base, other in _scored_pairs(curves, pairs):
        chosen = [(v, "chosen") for m, v in thresholds if m == metric]
        for threshold, source in [(base["mean"][-1], "baseline final"), *chosen]:
            base_reach = reach(base, threshold, higher)
            base_steps = base_reach["steps"]
            method_reach = reach(other, threshold, higher)
            speedups.append(
                {
                    "metric": metric,
                    "baseline": baseline,
                    "method": method,
                    "threshold": threshold,
                    "threshold_from": source,
                    "baseline_steps": base_steps,
                    "method_steps": method_reach["steps"],
                    "method_steps_per_seed": method_reach["per_seed"],
                    "baseline_steps_per_seed": base_reach["per_seed"],
                    "difference": seed_difference(base_reach["per_seed"], method_reach["per_seed"]),
                    "ratio": base_steps / method_reach["steps"]
                    if base_steps and method_reach["steps"]
                    else None,
                }
            )
    return {
        "curves": curves,
        "reach": rows,
        "speedups": speedups,
        "differences": step_differences(curves, pairs),
    }


def predictors(summary: dict[str, Any], at_steps: Sequence[int]) -> list[dict[str, Any]]:
    """Whether a metric early in training tells which arms reach a threshold first: the
    Spearman rank correlation, over every arm (method, seed) that logged both, between the
    metric's value at a step of `at_steps` and the arm's steps to each chosen threshold of
    `summary["reach"]` (an arm that never reached it ranks last).

    Returns: a row per metric, step and threshold with at least 3 arms and neither side
      constant across them: {"metric", "step",
      "reach_metric", "threshold", "arms", "rho", "p"} (rho < 0: a higher value goes with
      fewer steps; p: scipy's two-sided p-value for rho = 0, which assumes independent arms).
    """
    reached: dict[tuple[str, float], dict[tuple[str, int], float]] = {}
    for r in summary["reach"]:
        seeds = summary["curves"][r["metric"]][r["method"]]["seeds"]
        arms = reached.setdefault((r["metric"], r["threshold"]), {})
        for seed, steps in zip(seeds, r["per_seed"], strict=True):
            arms[r["method"], seed] = np.inf if steps is None else steps
    rows = []
    for metric, by_method in summary["curves"].items():
        for step in at_steps:
            values = {
                (method, seed): c["per_seed"][i][c["steps"].index(step)]
                for method, c in by_method.items()
                if step in c["steps"]
                for i, seed in enumerate(c["seeds"])
            }
            for (reach_metric, threshold), arms in reached.items():
                common = sorted(values.keys() & arms.keys())
                x, y = [values[a] for a in common], [arms[a] for a in common]
                if len(common) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
                    continue  # A constant (the encoder's own tokens) ranks nothing.
                rho, p = stats.spearmanr(x, y)
                rows.append(
                    {
                        "metric": metric,
                        "step": step,
                        "reach_metric": reach_metric,
                        "threshold": threshold,
                        "arms": len(common),
                        "rho": float(rho),
                        "p": float(p),
                    }
                )
    return rows


def _steps(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _columns(logged: set[int], table_steps: Sequence[int] | None) -> list[int]:
    """A table's steps: `table_steps` (default: every logged one) that were logged."""
    return [s for s in (table_steps or sorted(logged)) if s in logged]


def _differences_table(rows: list[dict[str, Any]], table_steps: Sequence[int] | None) -> list[str]:
    steps = _columns({r["step"] for r in rows}, table_steps)
    cells: dict[tuple[str, str, str], dict[int, str]] = {}
    for r in rows:
        ahead = f" ({label(r['ahead'])})" if r["ahead"] else ""
        cell = f"{r['difference']:+.4g} +- {r['se']:.2g}{ahead}"
        cells.setdefault((r["metric"], r["baseline"], r["method"]), {})[r["step"]] = cell
    lines = [
        "### Gaps at each step: the method's mean minus the baseline's, +- s.e. over seeds "
        "(in brackets: the one ahead, when beyond 2 s.e.)",
        "",
        "| metric | baseline | method | " + " | ".join(f"step {s}" for s in steps) + " |",
        "| --- | --- | --- |" + " --- |" * len(steps),
    ]
    for (metric, baseline, method), at in cells.items():
        row = " | ".join(at.get(s, "-") for s in steps)
        lines.append(f"| {metric} | {label(baseline)} | {label(method)} | {row} |")
    return [*lines, ""]


def markdown(summary: dict[str, Any], table_steps: Sequence[int] | None = None) -> str:
    """Tables of mean +- std (n seeds) at `table_steps` (default: every logged step), the
    speed-ups and the gaps at each step, as markdown."""
    lines = []
    for metric, by_method in summary["curves"].items():
        if not by_method:
            continue
        steps = _columns({s for c in by_method.values() for s in c["steps"]}, table_steps)
        lines += [f"### {metric} ({sense(metric)[1]}; mean +- std over seeds)", ""]
        lines.append("| method | seeds | " + " | ".join(f"step {s}" for s in steps) + " |")
        lines.append("| --- | --- |" + " --- |" * len(steps))
        for method, c in by_method.items():
            at = dict(zip(c["steps"], zip(c["mean"], c["std"], strict=True), strict=True))
            cells = [f"{at[s][0]:.4g} +- {at[s][1]:.2g}" if s in at else "-" for s in steps]
            lines.append(f"| {label(method)} | {len(c['seeds'])} | " + " | ".join(cells) + " |")
        lines.append("")
    if summary["reach"]:
        lines += [
            "### Steps to reach a threshold (interpolated between evaluated steps)",
            "",
            "| metric | threshold | method | seeds | mean curve | per seed |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in summary["reach"]:
            seeds = len(r["per_seed"])
            per_seed = ", ".join(_steps(v) for v in r["per_seed"])
            lines.append(
                f"| {r['metric']} | {r['threshold']:.4g} | {label(r['method'])} | {seeds} "
                f"| {_steps(r['steps'])} | {per_seed} |"
            )
        lines.append("")
    if summary["speedups"]:
        lines += [
            "### Speed-ups: steps the baseline needs over steps the method needs (mean curves)",
            "",
            "| metric | threshold | baseline | method | baseline steps | method steps "
            "| method per seed | speed-up | difference +- s.e. (seeds) | beyond 2 s.e. |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in summary["speedups"]:
            ratio = f"{r['ratio']:.2f}x" if r["ratio"] else "not reached"
            threshold = f"{r['threshold']:.4g} ({r['threshold_from']})"
            per_seed = ", ".join(_steps(v) for v in r["method_steps_per_seed"])
            d = r.get("difference")
            spread = f"{d['steps']:.0f} +- {d['se']:.0f}" if d else "-"
            beyond = ("yes" if d["exceeds_spread"] else "no") if d else "-"
            lines.append(
                f"| {r['metric']} | {threshold} | {label(r['baseline'])} | {label(r['method'])} "
                f"| {_steps(r['baseline_steps'])} | {_steps(r['method_steps'])} "
                f"| {per_seed} | {ratio} | {spread} | {beyond} |"
            )
        lines.append("")
    if summary.get("differences"):
        lines += _differences_table(summary["differences"], table_steps)
    if summary.get("predictors"):
        lines += [
            "### Early values as predictors: Spearman rank correlation over arms between a "
            "metric at an early step and the steps to a threshold (rho < 0: higher value, "
            "fewer steps; unreached ranks last)",
            "",
            "| metric | at step | steps to reach | arms | rho | p |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for r in summary["predictors"]:
            lines.append(
                f"| {r['metric']} | {r['step']} | {r['reach_metric']} {r['threshold']:.4g} "
                f"| {r['arms']} | {r['rho']:+.2f} | {r['p']:.2g} |"
            )
        lines.append("")
    if summary.get("environments"):
        lines += ["### Where the arms ran (training/loop.py's environment.json)", ""]
        lines += [f"- {machine}: {', '.join(arms)}" for machine, arms in machines(summary).items()]
        lines.append("")
    return "\n".join(lines)


def machines(summary: dict[str, Any]) -> dict[str, list[str]]:
    """Each machine the arms ran on (CPU model and vector extensions, devices, jax and jaxlib
    versions: what changes float32 results) -> the arms ("method/seedK") that ran there."""
    out: dict[str, list[str]] = {}
    for arm, starts in summary["environments"].items():
        for e in starts:
            jax_versions = f"jax {e['packages']['jax']}, jaxlib {e['packages']['jaxlib']}"
            flags = " ".join(f for f in e["cpu_flags"] if f.startswith("amx")) or "no AMX"
            avx = "AVX-512" if any(f.startswith("avx512") for f in e["cpu_flags"]) else "no AVX-512"
            machine = (
                f"{e['cpu']} ({avx}, {flags}), {e['devices']} {e['platform']} device(s), "
                f"{jax_versions}"
            )
            out.setdefault(machine, []).append(f"{arm} from step {e['from_step']}")
    return out


def plot(summary: dict[str, Any], out: Path) -> list[Path]:
    """`<metric>.png` per metric: each method's mean curve with a +-1 std band over seeds."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for metric, by_method in summary["curves"].items():
        if not by_method:
            continue
        # Below the axes, so that a study with probes keeps its curves visible; long probe
        # names take a column of their own.
        columns = 2 if max(len(label(m)) for m in by_method) <= 28 else 1
        rows = -(-len(by_method) // columns)
        fig = Figure(figsize=(6, 4 + 0.25 * rows), layout="constrained")
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
        title = f"{metric} ({sense(metric)[1]})"
        ax.set_title(title if len(title) <= 50 else title.replace(" (", "\n(", 1))
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        fig.legend(loc="outside lower center", ncols=columns, fontsize="small")
        written.append(out / f"{metric.replace('/', '_')}.png")  # spatial/h_den/lds
        fig.savefig(written[-1], dpi=120)
    return written
