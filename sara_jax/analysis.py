"""The paper's representation analyses (Fig. 2): patch-correlation heatmaps and SVD energy.

`python -m sara_jax.analysis --config=... --workdir=RUN --out=DIR` compares the frozen encoder's
patch tokens z_enc with a trained SiT's hidden state on the first --num_images training records:
  DIR/fig2a.png   one row per image; columns: the encoder's and the model's (h_den) correlation
                  map of the centre patch with every patch (Fig. 2a).
  DIR/fig2b.json  the energy share of the top-k singular values of the stacked z_enc, raw hidden
                  state z_den and projected hidden state h_den (Fig. 2b; k = 50 in the paper).
  DIR/spatial.json  iREPA's spatial-structure metrics (LDS, CDS, RMSC; SRSS where the data marks
                  objects) of each, and the structural gap of z_den and h_den to z_enc: what
                  the in-training evaluation logs (`evaluation.representations`).
"""

import os
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import flags, logging

from sara_jax.data.pipeline import make_source
from sara_jax.encoders.load import load_encoder
from sara_jax.evaluation.representations import alignment_metrics, make_probe
from sara_jax.io import cli, files
from sara_jax.io.errors import InputError
from sara_jax.objective import losses
from sara_jax.training.state import build_models, restore_params

PyTree = Any

# A diverging colormap (the end points and centre of matplotlib's "coolwarm"): -1, 0, +1.
NEGATIVE = np.array([59, 76, 192], np.float32)
NEUTRAL = np.array([221, 221, 221], np.float32)
POSITIVE = np.array([180, 4, 38], np.float32)


def patch_correlation_map(tokens: jax.Array, patch: int) -> np.ndarray:
    """Row `patch` of the autocorrelation A(tokens) on the token grid (Fig. 2a).

    Args:
      tokens: (N, D), N = g * g tokens in row-major grid order.
      patch: index of the reference token.
    Returns: (g, g) float32, cell (r, c) = cos(tokens[patch], tokens[r * g + c]).
    """
    n = tokens.shape[0]
    side = int(round(np.sqrt(n)))
    if side * side != n:
        raise ValueError(f"tokens must form a square grid, got N={n}")
    if not 0 <= patch < n:
        raise ValueError(f"patch must be in [0, {n}), got {patch}")
    return np.asarray(losses.autocorrelation(tokens[None])[0, patch]).reshape(side, side)


def top_singular_energy(tokens: np.ndarray, k: int = 50) -> float:
    """sum_{i<k} s_i^2 / sum_i s_i^2 for the singular values s of the stacked tokens (Fig. 2b).

    The stack is decomposed as given, neither centred nor normalised: SARA.md specifies an SVD of
    the stacked representations and nothing more. k is clipped to min(M, D).
    Args: tokens: (M, D), e.g. (B * N, D) patch tokens of B files.
    """
    s = np.linalg.svd(np.asarray(tokens, np.float64), compute_uv=False)
    energy = s * s
    total = energy.sum()
    if not total > 0:
        raise ValueError("top_singular_energy needs a non-zero, finite stack of tokens")
    return float(energy[:k].sum() / total)


def colorize(x: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] -> uint8 RGB (..., 3): blue at -1, grey at 0, red at +1 (linear)."""
    x = np.clip(np.asarray(x, np.float32), -1.0, 1.0)[..., None]
    rgb = np.where(x < 0, NEUTRAL + (NEUTRAL - NEGATIVE) * x, NEUTRAL + (POSITIVE - NEUTRAL) * x)
    return np.round(rgb).astype(np.uint8)


def heatmap_png(maps: np.ndarray, path: str | os.PathLike, cell: int = 64) -> None:
    """Renders a grid of heatmaps (R, C, h, w) to a PNG, written atomically.

    Each map is divided by its largest |value| (so it spans at most [-1, 1]), coloured with the
    fixed map of `colorize`, and nearest-upsampled to cell x cell pixels; cells are tiled as
    `files.save_grid` does (2 white pixels between and around them).
    """
    maps = np.asarray(maps, np.float32)
    rows, cols, h, w = maps.shape
    scale = np.max(np.abs(maps), axis=(2, 3), keepdims=True)
    maps = maps / np.where(scale > 0, scale, 1.0)
    # Nearest upsampling: output pixel i shows map row (or column) i * h // cell.
    maps = maps[:, :, np.arange(cell) * h // cell][:, :, :, np.arange(cell) * w // cell]
    files.save_grid(colorize(maps), path)


def representations(
    config: ml_collections.ConfigDict, workdir: str, num_images: int, t: float
) -> tuple[dict[str, np.ndarray], np.ndarray | None, int]:
    """z_enc, z_den and h_den (each (B, N, D or hidden)) of the first num_images records (see
    `evaluation.representations`), their foreground token masks (B, N) where the data has them,
    and the checkpoint's step."""
    params, step = restore_params(config, workdir, ema=True)
    source = make_source(config.data)
    if not 1 <= num_images <= len(source):
        raise InputError(f"--num_images must be in [1, {len(source)}], got {num_images}")
    encoder = load_encoder(config, source)
    models = build_models(config, encoder.z_dim)
    probe, foreground = make_probe(config, models, encoder, source, num_images, t)
    out = probe(params)
    return {name: np.asarray(x, np.float32) for name, x in out.items()}, foreground, step


def write_figures(reps: dict[str, np.ndarray], out: Path, top_k: int, info: dict) -> None:
    """fig2a.png (centre-patch maps of z_enc and h_den) and fig2b.json (top-k energies)."""
    out.mkdir(parents=True, exist_ok=True)
    num_images, num_tokens, _ = reps["z_enc"].shape
    side = int(round(np.sqrt(num_tokens)))
    centre = (side // 2) * side + side // 2
    maps = [
        [patch_correlation_map(reps[name][b], centre) for name in ("z_enc", "h_den")]
        for b in range(num_images)
    ]
    heatmap_png(np.array(maps), out / "fig2a.png")

    result = {**info, "centre_patch": centre, "top_k": top_k}
    for name, x in reps.items():
        stack = x.reshape(-1, x.shape[-1])
        k = min(top_k, *stack.shape)
        result[name] = {"energy": top_singular_energy(stack, k), "k": k, "shape": stack.shape}
        logging.info("%s %s: top-%d energy %.4f", name, stack.shape, k, result[name]["energy"])
    files.write_json(out / "fig2b.json", result)


def main(argv: list[str]) -> None:
    config = cli.start(argv)
    f = flags.FLAGS
    reps, foreground, step = representations(config, f.workdir, f.num_images, f.t)
    info = {"workdir": str(f.workdir), "step": step, "num_images": f.num_images, "t": f.t}
    out = Path(f.out)
    write_figures(reps, out, f.top_k, info)
    structure = alignment_metrics(reps, foreground, config.loss.struc_reduction)
    files.write_json(out / "spatial.json", {**info, **structure})
    for name, value in structure.items():
        logging.info("%s: %.4f", name, value)
    written = ", ".join(str(out / name) for name in ("fig2a.png", "fig2b.json", "spatial.json"))
    logging.info("wrote %s", written)


if __name__ == "__main__":
    cli.define_flags()
    flags.DEFINE_string("workdir", None, "The training run's workdir (its checkpoints/).")
    flags.DEFINE_string("out", None, "Directory for fig2a.png, fig2b.json and spatial.json.")
    flags.DEFINE_integer("num_images", 8, "The first this many records of config.data.")
    flags.DEFINE_float(
        "t", 0.5, "Diffusion time of the input x_t (0 = data, 1 = noise; a DiT's step t (T - 1))."
    )
    flags.DEFINE_integer("top_k", 50, "Singular values counted in the energy (50 in the paper).")
    flags.mark_flags_as_required(["workdir", "out"])
    cli.run(main)
