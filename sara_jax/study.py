"""A small-scale comparison of training recipes: `python -m sara_jax.study
--config=configs/shapes_study.py --workdir=runs/study --methods=none,repa,sara --seeds=0,1,2`.

Each arm (method x seed) is an ordinary run of `--config` with the method's alignment terms
and fields (`config.METHODS`, `config.set_alignment`) and `config.seed` set, in
`<workdir>/<method>/seed<k>`, run one after another in this process. An arm that finished
writes `arm.json`; a second invocation skips it and resumes an unfinished one from its
checkpoint, so the study is resumable, and arms can as well be run elsewhere (a GPU, a pod) as
plain `sara_jax.main` runs into the same directories.
Then the logged evaluation curves of every arm are aggregated (`evaluation.study`) into
`<workdir>/summary/`: `<metric>.png`, `study.md` and `study.json`.

A method is a key of `config.METHODS` ("none" is the plain SiT, "repa", "sara", "irepa": REPA
with iREPA's conv projector and z-scored targets, "sara_irepa": SARA with them) or alignment
terms joined by "+" ("patch+struc", "patch+adv": Table 2's combinations). A "+"-joined part
`field=value` overrides that config field in the arm, for probes that change one thing:
`sara+loss.struc_reduction=sum@0` is SARA with the sum reduction, in `<workdir>/<method>/seed0`.
"""

import ast
import json
from typing import Any

import ml_collections
from absl import app, flags, logging

from sara_jax.config import METHODS, set_alignment, validate
from sara_jax.evaluation import study
from sara_jax.io import cli, files, preemption
from sara_jax.io.events import read_scalars
from sara_jax.training import loop


def parse_method(method: str) -> tuple[str, dict[str, Any]]:
    """A method name's `set_alignment` terms and config overrides.

    Args:
      method: parts joined by "+": METHODS keys, alignment terms, and `field=value` overrides
        (the value read as a Python literal, else kept as a string).
    Returns: (terms joined by ",", {dotted field: value}): the fields of the METHODS parts
      (iREPA's projector and target normalisation), then the `field=value` parts, so that
      `irepa+projector.kernel_size=1` changes iREPA's kernel.
    """
    terms, fields, overrides = [], {}, {}
    for part in method.split("+"):
        field, sep, value = part.partition("=")
        if sep:
            try:
                overrides[field] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                overrides[field] = value
        elif part in METHODS:
            terms.append(METHODS[part].terms)
            fields.update(METHODS[part].fields)
        else:
            terms.append(part)
    if not terms:
        raise app.UsageError(f"method {method!r} names no alignment terms (e.g. sara+{method})")
    return ",".join(terms), {**fields, **overrides}


def alignment_terms(method: str) -> str:
    """The `set_alignment` terms of a method name (see `parse_method`)."""
    return parse_method(method)[0]


def arms(methods: list[str], seeds: list[int], extra: list[str]) -> list[tuple[str, int]]:
    """(method, seed) of every arm: the grid, then the extra `method@seed` ones, no repeats."""
    grid = [(m, s) for m in methods for s in seeds]
    for arm in extra:
        method, sep, seed = arm.partition("@")
        if not sep or not seed.isdigit():
            raise app.UsageError(f"--extra_arms entry {arm!r} must be method@seed")
        grid.append((method, int(seed)))
    return list(dict.fromkeys(grid))


def thresholds(entries: list[str]) -> list[tuple[str, float]]:
    """(metric, value) of each `--thresholds` entry "metric:value"."""
    parsed = []
    for entry in entries:
        metric, _, value = entry.rpartition(":")
        try:
            number = float(value)
        except ValueError:
            number = None
        if not metric or number is None:
            raise app.UsageError(f"--thresholds entry {entry!r} must be metric:value")
        higher, words = study.sense(metric)
        if higher is None:
            raise app.UsageError(
                f"--thresholds entry {entry!r}: {metric} has no better direction ({words}); "
                "its curves are in the tables without one"
            )
        parsed.append((metric, number))
    return parsed


def arm_config(
    base: ml_collections.ConfigDict, method: str, seed: int
) -> ml_collections.ConfigDict:
    """`base` with the method's alignment terms at the paper's weights, then its fields and
    overrides (`parse_method`), and `seed`."""
    config = base.copy_and_resolve_references()
    terms, overrides = parse_method(method)
    set_alignment(config, terms)
    for field, value in overrides.items():
        *parents, name = field.split(".")
        node = config
        for key in parents:
            node = node.get(key) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            raise app.UsageError(f"method {method!r}: no config field {field!r} to override")
        try:
            setattr(node, name, value)
        except TypeError as e:
            raise app.UsageError(f"method {method!r}: {field}={value!r}: {e}") from None
    config.seed = seed
    return config


def run_arm(config: ml_collections.ConfigDict, workdir: str, method: str, seed: int) -> None:
    """Trains one arm unless its `arm.json` says it reached `train.num_steps`, and writes that
    marker once it has. A preempted arm raises `preemption.Preempted` (after saving its
    checkpoint): the study stops, since the next arm would not get the time either."""
    path = files.resolve(workdir)
    marker = path / "arm.json"
    if marker.exists() and json.loads(marker.read_text())["steps"] >= config.train.num_steps:
        logging.info("arm %s seed %d: finished earlier, skipped", method, seed)
        return
    logging.info("arm %s seed %d: training in %s", method, seed, path)
    state = loop.train_and_evaluate(config, workdir)
    files.write_json(marker, {"method": method, "seed": seed, "steps": int(state.step)})


def define_flags() -> None:
    """The command's flags; called only when run as a program, so that importing this module
    (tests, other jobs) defines none."""
    cli.define_config("The run every arm starts from.")
    flags.DEFINE_string("workdir", None, "The study's directory (local or gs://).")
    flags.DEFINE_list("methods", ["none", "repa", "sara"], "Methods, run for every seed.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the --methods arms.")
    flags.DEFINE_list("extra_arms", [], "More arms as method@seed, e.g. patch+struc@0,patch+adv@0.")
    flags.DEFINE_list("metrics", ["fd", "class_acc"], "Logged tags to compare.")
    flags.DEFINE_list("table_steps", [], "Steps of the table (default: all logged).")
    flags.DEFINE_list(
        "thresholds", [], "metric:value thresholds to time every method to, e.g. class_acc:0.4."
    )
    flags.DEFINE_list(
        "predict_steps",
        [],
        "Early steps at which each metric's value is rank-correlated over arms with the steps "
        "to each --thresholds value (does it predict the faster arms?), e.g. 100,200.",
    )
    flags.DEFINE_bool("aggregate_only", False, "Run no arm; only aggregate.")
    flags.DEFINE_string("out", None, "Where the summary goes (default <workdir>/summary).")
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    cli.begin(argv)
    f = flags.FLAGS
    root = files.resolve(f.workdir)
    chosen = arms(f.methods, [int(s) for s in f.seeds], f.extra_arms)
    chosen_thresholds = thresholds(f.thresholds)
    for method, seed in chosen:  # Every arm's config is checked before any arm runs.
        validate(arm_config(f.config, method, seed))
    if not f.aggregate_only:
        with preemption.exits_cleanly("study"):
            for method, seed in chosen:
                workdir = str(root / method / f"seed{seed}")
                run_arm(arm_config(f.config, method, seed), workdir, method, seed)
    runs: dict[str, dict[int, dict]] = {}
    for method, seed in chosen:
        workdir = root / method / f"seed{seed}"
        if workdir.exists():
            runs.setdefault(method, {})[seed] = read_scalars(str(workdir))
    summary = study.aggregate(runs, f.metrics, thresholds=chosen_thresholds)
    summary["predictors"] = study.predictors(summary, [int(s) for s in f.predict_steps])
    summary["environments"] = {
        f"{method}/seed{seed}": json.loads(path.read_text())
        for method, seed in chosen
        if (path := root / method / f"seed{seed}" / "environment.json").exists()
    }
    out = files.resolve(f.out) if f.out else root / "summary"
    written = study.plot(summary, out)
    table_steps = [int(s) for s in f.table_steps]
    files.write_text(out / "study.md", study.markdown(summary, table_steps or None))
    files.write_json(out / "study.json", summary)
    for path in [*written, out / "study.md", out / "study.json"]:
        logging.info("wrote %s", path)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
