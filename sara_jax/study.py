"""A small-scale comparison of training recipes: `python -m sara_jax.study
--config=configs/shapes_study.py --workdir=runs/study --methods=none,repa,sara --seeds=0,1,2`.

Each arm (method x seed) is an ordinary run of `--config` with the method's alignment terms
(`config.set_alignment`) and `config.seed` set, in `<workdir>/<method>/seed<k>`, run one after
another in this process. An arm that finished writes `arm.json`; a second invocation skips it
and resumes an unfinished one from its checkpoint, so the study is resumable, and arms can as
well be run elsewhere (a GPU, a pod) as plain `sara_jax.main` runs into the same directories.
Then the logged evaluation curves of every arm are aggregated (`evaluation.study`) into
`<workdir>/summary/`: `<metric>.png`, `study.md` and `study.json`.

A method is a key of `config.METHODS` ("none" is the plain SiT, "repa", "sara") or alignment
terms joined by "+" ("patch+struc", "patch+adv": Table 2's combinations).
"""

import json

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from sara_jax.config import METHODS, set_alignment, validate
from sara_jax.evaluation import study
from sara_jax.io import files
from sara_jax.io.events import read_scalars
from sara_jax.training import loop


def alignment_terms(method: str) -> str:
    """The `set_alignment` terms of a method name: a METHODS key or terms joined by '+'."""
    return METHODS.get(method, method.replace("+", ","))


def arms(methods: list[str], seeds: list[int], extra: list[str]) -> list[tuple[str, int]]:
    """(method, seed) of every arm: the grid, then the extra `method@seed` ones, no repeats."""
    grid = [(m, s) for m in methods for s in seeds]
    for arm in extra:
        method, sep, seed = arm.partition("@")
        if not sep or not seed.isdigit():
            raise app.UsageError(f"--extra_arms entry {arm!r} must be method@seed")
        grid.append((method, int(seed)))
    return list(dict.fromkeys(grid))


def arm_config(
    base: ml_collections.ConfigDict, method: str, seed: int
) -> ml_collections.ConfigDict:
    """`base` with the method's alignment terms at the paper's weights and `seed`."""
    config = base.copy_and_resolve_references()
    set_alignment(config, alignment_terms(method))
    config.seed = seed
    return config


def run_arm(config: ml_collections.ConfigDict, workdir: str, method: str, seed: int) -> bool:
    """Trains one arm unless its `arm.json` says it reached `train.num_steps`; returns whether
    it trained."""
    path = files.resolve(workdir)
    marker = path / "arm.json"
    if marker.exists() and json.loads(marker.read_text())["steps"] >= config.train.num_steps:
        logging.info("arm %s seed %d: finished earlier, skipped", method, seed)
        return False
    logging.info("arm %s seed %d: training in %s", method, seed, path)
    state = loop.train_and_evaluate(config, workdir)
    steps = int(state.step)
    if steps == config.train.num_steps:
        path.mkdir(parents=True, exist_ok=True)
        files.write_json(marker, {"method": method, "seed": seed, "steps": steps})
    return True


def define_flags() -> None:
    """The command's flags; called only when run as a program, so that importing this module
    (tests, other jobs) defines none."""
    config_flags.DEFINE_config_file("config", None, "The run every arm starts from.")
    flags.DEFINE_string("workdir", None, "The study's directory (local or gs://).")
    flags.DEFINE_list("methods", ["none", "repa", "sara"], "Methods, run for every seed.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the --methods arms.")
    flags.DEFINE_list("extra_arms", [], "More arms as method@seed, e.g. patch+struc@0,patch+adv@0.")
    flags.DEFINE_list("metrics", ["fd", "class_acc"], "Logged tags to compare.")
    flags.DEFINE_list("table_steps", [], "Steps of the table (default: all logged).")
    flags.DEFINE_bool("aggregate_only", False, "Run no arm; only aggregate.")
    flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    root = files.resolve(f.workdir)
    chosen = arms(f.methods, [int(s) for s in f.seeds], f.extra_arms)
    for method, seed in chosen:  # Every arm's config is checked before any arm runs.
        validate(arm_config(f.config, method, seed))
    if not f.aggregate_only:
        for method, seed in chosen:
            run_arm(
                arm_config(f.config, method, seed),
                str(root / method / f"seed{seed}"),
                method,
                seed,
            )
    runs: dict[str, dict[int, dict]] = {}
    for method, seed in chosen:
        workdir = root / method / f"seed{seed}"
        if workdir.exists():
            runs.setdefault(method, {})[seed] = read_scalars(str(workdir))
    summary = study.aggregate(runs, f.metrics)
    out = root / "summary"
    written = study.plot(summary, out)
    table_steps = [int(s) for s in f.table_steps]
    files.write_text(out / "study.md", study.markdown(summary, table_steps or None))
    files.write_json(out / "study.json", summary)
    for path in [*written, out / "study.md", out / "study.json"]:
        logging.info("wrote %s", path)


if __name__ == "__main__":
    define_flags()
    app.run(main)
