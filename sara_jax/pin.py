"""Ships a config's instruments: `python -m sara_jax.pin --config=configs/shapes_study.py`.

Builds (or reads from the cache) the demo encoder the config aligns to and the shapes evaluator
that scores it, then copies their files into `sara_jax/instruments/` with a manifest entry:
sha256, this command, the machine (`io.environment`). From then on every machine reads those
files instead of training its own (`io.instruments`). A shipped file that differs is never
replaced: a study's results were read with it.
"""

import sys

from absl import logging

from sara_jax.data.pipeline import make_source
from sara_jax.encoders import pretrain, registry
from sara_jax.evaluation import shapes
from sara_jax.io import cli, instruments
from sara_jax.io.environment import environment
from sara_jax.io.errors import InputError


def main(argv: list[str]) -> None:
    config = cli.start(argv)
    command = " ".join(["python -m sara_jax.pin", *sys.argv[1:]])
    info = {"environment": environment()}
    pinned = []
    if registry.encoder_spec(config.encoder.name).family == "demo_vit":
        pretrain.pretrained_demo_vit(config, make_source(config.data))
        pinned.append((pretrain.cache_path(config), "demo encoder", info))
    if config.data.source == "shapes":
        evaluator = shapes.load_evaluator(config.eval.shapes, config.data)
        accuracy = {**info, "held_out_accuracy": evaluator.accuracy}
        pinned.append(
            (shapes.cache_path(config.eval.shapes, config.data), "shapes evaluator", accuracy)
        )
    if not pinned:
        raise InputError("the config uses neither the demo encoder nor the shapes evaluator")
    for path, what, details in pinned:
        shipped = instruments.FOLDER / path.name
        if shipped.exists():  # It was read, not built: nothing to copy.
            logging.info("%s: already shipped as %s", what, shipped)
            continue
        logging.info("%s: shipped as %s", what, instruments.pin(path, what, command, details))


if __name__ == "__main__":
    cli.define_flags()
    cli.run(main)
