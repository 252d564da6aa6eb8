"""The modules a run trains, as one value the objective and the step pass around."""

from typing import NamedTuple

from sara_jax.models.discriminator import Discriminator
from sara_jax.models.projector import ConvProjector, Projector
from sara_jax.models.sit import SiT


class Models(NamedTuple):
    """The trained modules; the frozen encoder lives outside the state (see encoders/load.py)."""

    sit: SiT
    projector: Projector | ConvProjector
    disc: Discriminator
