"""The Python side of benchmarks/device_suite.sh: what the shell should not do itself.

    python -m benchmarks.device_suite_report missing WHEEL...      # packages the wheels hold
                                                                   # that are not installed
    python -m benchmarks.device_suite_report device INFO.json PREFIX
    python -m benchmarks.device_suite_report summary WORK OUT PREFIX BUDGET ELAPSED SMOKE WHEELS

`device` writes the device record (kind, platform, count, memory JAX may use, versions, the
file prefix: the device's short name unless PREFIX is given) and prints it in one line.
`summary` reads WORK/status.tsv (one line per step run: name, status, exit code, seconds, time
box, command), WORK/json/STEP.json and WORK/info.json, and writes OUT/PREFIX_suite.txt (printed
too) and OUT/PREFIX_suite.json. Nothing here imports JAX but `device`.
"""

import importlib.metadata as md
import json
import platform
import re
import sys
from pathlib import Path
from typing import Any

VERSIONS = (
    *("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax"),
    *("orbax-checkpoint", "ml-collections", "numpy"),
)
MFU_TARGET = 0.5  # SiT-XL/2 + SARA on one H100-class GPU (docs/performance.md).
SARA_OVER_REPA_TARGET = 0.10


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def missing(wheels: list[str]) -> list[str]:
    """The distribution names of `wheels` (paths of .whl files) that are not installed."""
    names = [Path(w).name.split("-")[0] for w in wheels]
    return [name for name in names if _version(name) is None]


def device(path: Path, prefix: str) -> dict[str, Any]:
    """Writes and returns the record of this process's JAX devices."""
    import jax

    devices = jax.devices()
    kind = devices[0].device_kind
    limit = (devices[0].memory_stats() or {}).get("bytes_limit")
    versions = {name: v for name in VERSIONS if (v := _version(name)) is not None}
    short = kind.lower().removeprefix("nvidia ").split()[0] if kind else "device"
    info = {
        "device_kind": kind,
        "platform": devices[0].platform,
        "num_devices": len(devices),
        "devices": [str(d) for d in devices],
        "memory_limit_gib": None if limit is None else limit / 2**30,
        "python": platform.python_version(),
        "versions": versions,
        "prefix": prefix or re.sub(r"[^a-z0-9]+", "_", short),
    }
    path.write_text(json.dumps(info, indent=2))
    shown = ", ".join(f"{k} {v}" for k, v in versions.items())
    print(f"{kind} x {len(devices)} ({devices[0].platform}), python {info['python']}, {shown}")
    return info


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def read_steps(work: Path, prefix: str) -> list[dict[str, Any]]:
    """Each step run so far: its status line and the JSON it wrote (None if it wrote none)."""
    steps = []
    for line in (work / "status.tsv").read_text().splitlines():
        name, status, rc, seconds, limit, command = line.split("\t")
        wrote = (work / "json" / f"{name}.json").exists()
        steps.append(
            {
                "name": name,
                "status": status,
                "exit_code": None if rc == "" else int(rc),
                "seconds": int(seconds),
                "time_box_s": int(limit),
                "command": command,
                "json": f"{prefix}_{name}.json" if wrote else None,
                "report": _load(work / "json" / f"{name}.json"),
            }
        )
    return steps


def _training_lines(train: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "Training step (MFU: analytic FLOPs over the dense bf16 peak; compile: trace + XLA)",
        f"{'step':<15} {'mode':<18} {'batch':>5} {'img/s':>9} {'step ms':>9} {'MFU':>6} "
        f"{'compile s':>9} {'XLA GiB':>8} {'peak GiB':>8}",
    ]
    for s in train:
        for mode, r in s["report"]["results"].items():
            memory = r.get("memory", {})
            compile_s = r.get("trace_s", 0) + r.get("compile_s", 0)
            lines.append(
                f"{s['name']:<15} {mode:<18} {r.get('global_batch', 0):>5} "
                f"{_fmt(r.get('images_per_sec'), '9.1f')} {_fmt(r.get('step_ms'), '9.1f')} "
                f"{_fmt(r.get('mfu'), '6.1%')} {compile_s:9.1f} "
                f"{_fmt(memory.get('compiled_gib'), '8.2f')} "
                f"{_fmt(memory.get('peak_in_use_gib'), '8.2f')}"
            )
        over = {**s["report"].get("overheads", {}), **s["report"].get("layout_ratios", {})}
        if over:
            shown = ", ".join(f"{k.replace('_', ' ')} {v:+.1%}" for k, v in over.items())
            lines.append(f"{'':<15} step time: {shown}")
    return lines


def _sampling_lines(samples: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "Sampling (noise to x0; MFU counts the SiT's velocity evaluations)",
        f"{'step':<24} {'method':<6} {'steps':>5} {'cfg':>5} {'evals':>5} {'batch':>5} "
        f"{'img/s':>8} {'s/batch':>8} {'MFU':>6} {'compile s':>9}",
    ]
    for s in samples:
        r = s["report"]
        lines.append(
            f"{s['name']:<24} {r['method']:<6} {r['num_steps']:>5} {r['cfg_scale']:>5} "
            f"{r['velocity_evaluations']:>5} {r['batch']:>5} {r['images_per_sec']:>8.2f} "
            f"{r['batch_s']:>8.2f} {_fmt(r.get('mfu'), '6.1%')} {r['compile_s']:>9.1f}"
        )
    return lines


def _profile_lines(steps: list[dict[str, Any]]) -> list[str]:
    lines = []
    for s in steps:
        for mode, r in ((s["report"] or {}).get("results") or {}).items():
            if r.get("profile"):
                lines += ["", f"Profile, {s['name']} {mode} (share of the executable's op time):"]
                for group, shares in r["profile"].items():
                    items = shares.items() if isinstance(shares, dict) else shares
                    lines.append(f"  {group}: " + ", ".join(f"{n} {f:.1%}" for n, f in items))
            elif "profile" in r:
                lines.append(f"Profile, {s['name']} {mode}: the trace named no op (open the trace)")
    return lines


def target_checks(train: list[dict[str, Any]]) -> list[str]:
    """The performance targets, met or missed, for the XL/2 steps that ran."""
    xl = {s["name"]: s["report"]["results"] for s in train if s["name"].startswith("sit_xl")}
    checks = []
    for name in ("sit_xl", "sit_xl_accum2"):
        sara, repa = xl.get(name, {}).get("sara", {}), xl.get(name, {}).get("repa", {})
        if sara.get("mfu") is not None:
            met = "met" if sara["mfu"] >= MFU_TARGET else "MISSED"
            checks.append(f"{name} SARA MFU {sara['mfu']:.1%} (>= {MFU_TARGET:.0%}: {met})")
        if "step_ms" in sara and "step_ms" in repa:
            over = sara["step_ms"] / repa["step_ms"] - 1
            met = "met" if over <= SARA_OVER_REPA_TARGET else "MISSED"
            checks.append(
                f"{name} SARA over REPA {over:+.1%} (<= {SARA_OVER_REPA_TARGET:.0%}: {met})"
            )
    return checks


def summary(
    work: Path, out: Path, prefix: str, budget: int, elapsed: int, smoke: bool, wheels: str
) -> str:
    """Writes PREFIX_suite.txt and PREFIX_suite.json into `out`; returns the text."""
    info = _load(work / "info.json") or {}
    smi = work / "nvidia_smi.txt"
    steps = read_steps(work, prefix)
    record = {
        "suite": "benchmarks/device_suite.sh",
        "smoke": smoke,
        "prefix": prefix,
        "budget_s": budget,
        "elapsed_s": elapsed,
        "wheels": wheels,
        "device": info,
        "nvidia_smi": smi.read_text() if smi.exists() else None,
        "steps": steps,
    }
    versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
    lines = [
        f"Device suite{' (SMOKE: tiny demo configs on CPU)' if smoke else ''}: "
        f"{info.get('device_kind', 'unknown device')} x {info.get('num_devices', '?')}, "
        f"{_fmt(info.get('memory_limit_gib'), '.1f')} GiB for JAX; {versions}",
        f"{elapsed} s of a {budget} s budget; files in {out}, prefix {prefix}_",
        "",
        f"{'step':<24} {'status':<40} {'s':>5} {'box':>5}",
    ]
    for s in steps:
        lines.append(f"{s['name']:<24} {s['status']:<40} {s['seconds']:>5} {s['time_box_s']:>5}")
    train = [s for s in steps if s["report"] and "results" in s["report"]]
    samples = [s for s in steps if s["report"] and "batch_s" in s["report"]]
    if train:
        lines += _training_lines(train)
    if samples:
        lines += _sampling_lines(samples)
    lines += _profile_lines(steps)
    if checks := target_checks(train):
        lines += ["", "Targets: " + "; ".join(checks)]
    if unfinished := [s["name"] for s in steps if s["status"] != "ok"]:
        lines += [
            "",
            f"Not done: {', '.join(unfinished)}. Rerun them (after a fix, or with what time is "
            f"left): bash benchmarks/device_suite.sh --only {','.join(unfinished)}",
        ]
    text = "\n".join(lines) + "\n"
    (out / f"{prefix}_suite.txt").write_text(text)
    tmp = out / f"{prefix}_suite.json.tmp"
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(out / f"{prefix}_suite.json")
    return text


def main(argv: list[str]) -> None:
    match argv:
        case ["missing", *wheels]:
            print(" ".join(missing(wheels)))
        case ["device", path, prefix]:
            device(Path(path), prefix)
        case ["summary", work, out, prefix, budget, elapsed, smoke, wheels]:
            text = summary(
                Path(work), Path(out), prefix, int(budget), int(elapsed), smoke == "true", wheels
            )
            print(text, end="")
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
