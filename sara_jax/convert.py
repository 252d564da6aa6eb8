"""Converts published PyTorch weights once, in one of two modes.

The config's encoder, saved with orbax:
`python -m sara_jax.convert --config=configs/sit_xl.py --out=gs://bucket/dinov2_vitb14`.
Training then reads them with `--config.encoder.checkpoint=gs://bucket/dinov2_vitb14`: no torch,
no hub access and no conversion on the training hosts.

A published denoiser, as an ordinary step checkpoint of a new run:
`python -m sara_jax.convert --config=configs/sit_xl.py --denoiser=last.pt --denoiser_format=repa
--workdir=RUN`. `python -m sara_jax.main`, `sample` and the evaluation then take RUN like any
run's workdir; main continues training from the file's step. `--denoiser_format` says what the
file is (`repa`, `irepa`, `sit` or `dit`: `training/converted.py`), since the SiT and DiT
releases hold the same keys and shapes.
"""

import ml_collections
from absl import app, flags, logging

from sara_jax.config import validate
from sara_jax.converters import sit
from sara_jax.converters.checkpoint import resolve
from sara_jax.converters.saved import save_converted
from sara_jax.encoders.load import convert_encoder, converted_info
from sara_jax.io import cli
from sara_jax.training.converted import convert_denoiser


def convert_encoder_weights(config: ml_collections.ConfigDict, out: str) -> None:
    """Converts the config's encoder weights and saves them under the new directory `out`."""
    encoder = config.encoder
    if encoder.name == "demo_vit":
        raise app.UsageError(
            "config.encoder.name='demo_vit' is pretrained in-project, not converted"
        )
    field = "config.encoder.checkpoint"
    logging.info("converting %s from %s", encoder.name, resolve(encoder.checkpoint, field))
    params = convert_encoder(encoder, field)
    info = {**converted_info(encoder), "source": encoder.checkpoint}
    save_converted(out, params, info)
    logging.info("saved %s params to %s", encoder.name, out)


def main(argv: list[str]) -> None:
    cli.begin(argv)
    f = flags.FLAGS
    config = f.config
    validate(config)
    denoiser = (f.denoiser, f.denoiser_format, f.workdir)
    if f.out is not None and not any(denoiser):
        convert_encoder_weights(config, f.out)
    elif f.out is None and all(denoiser):
        convert_denoiser(config, *denoiser)
    else:
        raise app.UsageError(
            "give either --out (the config's encoder) or --denoiser, --denoiser_format and "
            "--workdir (a published denoiser)"
        )


def define_flags() -> None:
    """The command's flags; defined only when it runs as a program, so that importing this
    module defines none."""
    cli.define_config()
    flags.DEFINE_string("out", None, "Encoder mode: new directory for the converted params.")
    flags.DEFINE_string("denoiser", None, "Denoiser mode: the PyTorch checkpoint file.")
    flags.DEFINE_enum("denoiser_format", None, sit.FORMATS, "What --denoiser is (see above).")
    flags.DEFINE_string("workdir", None, "Denoiser mode: the new run's workdir.")
    flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
    define_flags()
    cli.run(main)
