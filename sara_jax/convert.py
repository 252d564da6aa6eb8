"""Converts the config's encoder weights once and saves them with orbax:
`python -m sara_jax.convert --config=configs/sit_xl.py --out=gs://bucket/dinov2_vitb14`.

Training then reads them with `--config.encoder.checkpoint=gs://bucket/dinov2_vitb14`: no torch,
no hub access and no conversion on the training hosts.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from sara_jax.config import validate
from sara_jax.converters.checkpoint import resolve
from sara_jax.converters.saved import save_converted
from sara_jax.encoders.load import convert_encoder, converted_info

_CONFIG = config_flags.DEFINE_config_file("config", None, "A configs/*.py file.")
_OUT = flags.DEFINE_string("out", None, "New directory for the converted params.")
flags.mark_flags_as_required(["config", "out"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    validate(config)
    encoder = config.encoder
    if encoder.name == "demo_vit":
        raise app.UsageError(
            "config.encoder.name='demo_vit' is pretrained in-project, not converted"
        )
    field = "config.encoder.checkpoint"
    logging.info("converting %s from %s", encoder.name, resolve(encoder.checkpoint, field))
    params = convert_encoder(encoder, field)
    info = {**converted_info(encoder), "source": encoder.checkpoint}
    save_converted(_OUT.value, params, info)
    logging.info("saved %s params to %s", encoder.name, _OUT.value)


if __name__ == "__main__":
    app.run(main)
