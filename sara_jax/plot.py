"""Training curves as PNGs, several runs on one figure.

    python -m sara_jax.plot --workdirs=runs/sit,runs/repa,runs/sara --out=plots

reads the TensorBoard event files that training writes in each workdir (a local path or gs://)
and draws, for every metric that some run logged, one PNG with a curve per run, plus
`curves.png` with all of them side by side. Runs are labelled by their directory name, or by
`--labels`.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import flags, logging
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sara_jax.io import cli
from sara_jax.io.errors import InputError
from sara_jax.io.events import Scalars, read_scalars

# The metrics drawn by default, with the titles they get (the paper's names).
TITLES = {
    "loss": "total loss (Eq. 11)",
    "velocity": "L_velocity",
    "mse": "L_simple (DiT)",
    "vlb": "L_vlb (DiT)",
    "patch": "L_patch (minus mean cosine)",
    "struc": "L_struc",
    "adv": "L_adv",
    "disc_loss": "L_D",
    "fid": "FID (lower is better)",
    "fd": "fd, shapes evaluator (lower is better)",
    "class_acc": "class_acc, shapes evaluator (higher is better)",
    # The aligned tokens' spatial structure (iREPA's LDS: higher is more local structure) and
    # how far the SiT's is from the encoder's (L_struc's measure), for every method.
    "spatial/z_enc/lds": "LDS of z_enc (encoder tokens)",
    "spatial/z_den/lds": "LDS of z_den (SiT hidden state)",
    "spatial/h_den/lds": "LDS of h_den (projected)",
    "struc_gap/z_den": "structural gap ||A(z_enc) - A(z_den)||^2",
    "struc_gap/h_den": "structural gap ||A(z_enc) - A(h_den)||^2",
}


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased for its start."""
    out, average = np.empty(len(values)), 0.0
    for i, v in enumerate(values):
        average = weight * average + (1 - weight) * v
        out[i] = average / (1 - weight ** (i + 1))
    return out


def _draw(ax, runs: dict[str, Scalars], metric: str, smoothing: float) -> None:
    for i, (label, scalars) in enumerate(runs.items()):
        if metric not in scalars:
            continue
        steps, values = scalars[metric]
        color = f"C{i}"
        marker = "o" if len(steps) < 20 else None  # Sparse curves (FID) read better as points.
        if smoothing > 0 and len(steps) > 1:
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=1)
            values = smooth(values, smoothing)
        ax.plot(steps, values, color=color, marker=marker, label=label)
    ax.set_title(TITLES.get(metric, metric))
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()


def plot_runs(
    runs: dict[str, Scalars], metrics: Sequence[str], out: Path, smoothing: float = 0.0
) -> list[Path]:
    """Writes `<metric>.png` for each metric that some run has, and `curves.png` with all.

    Args:
      runs: label -> that run's scalars (`read_scalars`).
      metrics: tags to draw, in order; those no run logged are skipped.
      out: output directory (created).
      smoothing: TensorBoard-style smoothing weight in [0, 1); 0 draws the raw values.

    Returns:
      The paths written, `curves.png` last.

    Raises:
      InputError: when no run logged any of `metrics`.
    """
    if not 0 <= smoothing < 1:
        raise InputError(f"smoothing must be in [0, 1), got {smoothing}")
    present = [m for m in metrics if any(m in scalars for scalars in runs.values())]
    if not present:
        found = sorted({tag for scalars in runs.values() for tag in scalars})
        raise InputError(f"none of the metrics {list(metrics)} was logged; found {found}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for metric in present:
        fig = Figure(figsize=(6, 4), layout="constrained")
        _draw(fig.add_subplot(), runs, metric, smoothing)
        written.append(out / f"{metric.replace('/', '_')}.png")  # spatial/h_den/lds
        fig.savefig(written[-1], dpi=120)
    cols = min(3, len(present))
    rows = -(-len(present) // cols)
    fig = Figure(figsize=(5 * cols, 3.6 * rows), layout="constrained")
    for i, metric in enumerate(present):
        _draw(fig.add_subplot(rows, cols, i + 1), runs, metric, smoothing)
    written.append(out / "curves.png")
    fig.savefig(written[-1], dpi=100)
    return written


def run_labels(workdirs: Sequence[str], labels: Sequence[str]) -> list[str]:
    """`labels` if given (one per workdir), else each workdir's last path component; distinct."""
    if labels and len(labels) != len(workdirs):
        raise InputError(f"--labels has {len(labels)} names for {len(workdirs)} --workdirs")
    names = list(labels) or [w.rstrip("/").rsplit("/", 1)[-1] for w in workdirs]
    if len(set(names)) != len(names):
        raise InputError(f"runs need distinct labels, got {names}: pass --labels")
    return names


def main(argv: list[str]) -> None:
    cli.begin(argv)
    f = flags.FLAGS
    labels = run_labels(f.workdirs, f.labels)
    runs = {label: read_scalars(w) for label, w in zip(labels, f.workdirs, strict=True)}
    for path in plot_runs(runs, f.metrics, Path(f.out), f.smoothing):
        logging.info("wrote %s", path)


if __name__ == "__main__":
    flags.DEFINE_list("workdirs", None, "Training workdirs (local or gs://), comma-separated.")
    flags.DEFINE_list("labels", [], "A name per workdir (default: the directory names).")
    flags.DEFINE_string("out", None, "Directory for the PNGs.")
    flags.DEFINE_list("metrics", list(TITLES), "Scalar tags to draw, in order.")
    flags.DEFINE_float("smoothing", 0.0, "TensorBoard-style smoothing weight in [0, 1).")
    flags.mark_flags_as_required(["workdirs", "out"])
    cli.run(main)
