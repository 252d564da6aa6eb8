"""Sampling speed of a config: images/s of its sampler on random SiT weights.

    python benchmarks/sample_throughput.py --config=configs/sit_xl.py --batch=256
    python benchmarks/sample_throughput.py --config=configs/sit_xl.py --decode  # + SD-VAE decode
    python benchmarks/sample_throughput.py --config=configs/demo.py --num_steps=2   # CPU smoke

Draws with `sara_jax.sampling.denoiser.make_denoiser`, what preview grids and
`python -m sara_jax.sample` use: `config.sample`'s method (REPA's 250-step Euler-Maruyama SDE by
default), guidance scale and interval, the batch split over all devices. The time of a whole
batch, noise to x0, is averaged over `--repeats` batches after one warm-up; `--decode` adds the
SD-VAE decoder (random weights of the real architecture), which latent configs need to produce
images.
FLOPs and MFU count the SiT's velocity evaluations only (sara_jax.training.flops.sampling).
"""

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

from sara_jax.config import validate
from sara_jax.encoders.registry import encoder_width
from sara_jax.io import cli
from sara_jax.io.files import write_json
from sara_jax.models.dtype import dtype_of
from sara_jax.models.vae import AutoencoderKL
from sara_jax.sampling import denoiser
from sara_jax.training import flops
from sara_jax.training.sharding import AXIS, data_mesh
from sara_jax.training.state import build_models

_CONFIG = cli.define_config()
_BATCH = flags.DEFINE_integer("batch", None, "Samples per batch; default config.sample.batch_size.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", None, "Sampler steps; default sample.num_steps.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Batches timed after one warm-up batch.")
_DECODE = flags.DEFINE_bool("decode", False, "Include the SD-VAE decode (latent configs).")
_OUT = flags.DEFINE_string("out", None, "Write the results as JSON to this file.")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    if _NUM_STEPS.value:
        config.sample.num_steps = _NUM_STEPS.value
    if _DECODE.value and config.data.space != "latent":
        raise app.UsageError("--decode needs a latent-space config (data.space='latent')")
    devices = jax.devices()
    validate(config, num_devices=len(devices))
    batch = _BATCH.value or config.sample.batch_size
    m = config.model
    mesh = data_mesh(devices)
    replicated, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P(AXIS))

    sit = build_models(config, encoder_width(config.encoder)).sit
    x = jnp.zeros((1, m.input_size, m.input_size, m.in_channels))
    params = jax.jit(sit.init, out_shardings=replicated)(
        jax.random.key(0), x, jnp.zeros((1,)), jnp.zeros((1,), jnp.int32)
    )["params"]
    vae = AutoencoderKL(dtype=dtype_of(config.vae.compute_dtype))
    vae_params = {}
    if _DECODE.value:
        size = config.data.image_size
        vae_params = jax.jit(vae.init, out_shardings=replicated)(
            jax.random.key(1), jnp.zeros((1, size, size, 3))
        )["params"]
    denoise = denoiser.make_denoiser(config, sit)

    @jax.jit
    def draw(params, vae_params, noise, labels, key):
        x0 = denoise(params, noise, labels, key)
        if _DECODE.value:
            return vae.apply({"params": vae_params}, x0 / config.data.latent_scale, method="decode")
        return x0

    rng = np.random.default_rng(0)
    noise = jax.device_put(
        rng.standard_normal((batch, m.input_size, m.input_size, m.in_channels), np.float32), rows
    )
    labels = jax.device_put(rng.integers(0, m.num_classes, (batch,), dtype=np.int32), rows)
    args = (params, vae_params, noise, labels, jax.random.key(2))
    start = time.perf_counter()
    compiled = draw.lower(*args).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(_REPEATS.value):
        begin = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - begin)

    seconds = float(np.mean(times))
    kind = devices[0].device_kind
    peak = flops.PEAK_BF16_TFLOPS.get(kind)
    per_image = flops.sampling(config.sample, sit)
    achieved = per_image * batch / seconds / len(devices)
    s = config.sample
    report = {
        "device_kind": kind,
        "num_devices": len(devices),
        "jax_version": jax.__version__,
        "config_file": config_flags.get_config_filename(flags.FLAGS["config"]),
        "config_overrides": config_flags.get_override_values(flags.FLAGS["config"]),
        "method": s.method,
        "num_steps": s.num_steps,
        "cfg_scale": s.cfg_scale,
        "velocity_evaluations": flops.sampler_evaluations(s),
        "batch": batch,
        "decode": _DECODE.value,
        "compute_dtype": m.compute_dtype,
        "compile_s": compile_s,
        "batch_s": seconds,
        "images_per_sec": batch / seconds,
        "flops_per_image": per_image,
        "achieved_tflops_per_device": achieved / 1e12,
        # With --decode the time includes the VAE, whose FLOPs are not counted.
        "mfu": achieved / (peak * 1e12) if peak and not _DECODE.value else None,
    }
    mfu = "n/a" if report["mfu"] is None else f"{report['mfu']:.1%}"
    print(
        f"{kind} x {len(devices)}: {s.method} {s.num_steps} steps, cfg {s.cfg_scale}, batch "
        f"{batch}{' + VAE decode' if _DECODE.value else ''}: {report['images_per_sec']:.2f} "
        f"images/s ({seconds:.2f} s per batch, compile {compile_s:.1f} s, "
        f"{per_image / 1e9:.1f} GFLOP/image, MFU {mfu})"
    )
    if _OUT.value:
        write_json(Path(_OUT.value), report)


if __name__ == "__main__":
    app.run(main)
