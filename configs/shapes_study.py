"""The small-scale study of SiT vs REPA vs SARA on the generated shapes (docs/results/):
the demo's run, evaluated along the way by the shapes data's own classifier.

    python -m sara_jax.study --config=configs/shapes_study.py --workdir=runs/shapes_study \
        --methods=none,repa,sara --seeds=0,1,2 --extra_arms=patch+struc@0,patch+adv@0

The study command sets each arm's alignment terms (at the paper's weights) and seed; this file
fixes what every arm shares. `:method` (a key of sara_jax.config.METHODS, default sara) gives
one arm's config, for the jobs run on an arm afterwards:

    python -m sara_jax.sample --config=configs/shapes_study.py:repa \
        --workdir=runs/shapes_study/repa/seed0 --step=300

`fd` and `class_acc` are logged every `eval.every` steps on
`eval.num_samples` samples of `eval.num_steps` sampler steps (fewer than the demo's preview
grid: the curves compare methods, and the same budget holds for every arm).
"""

from configs import demo
from sara_jax.config import METHODS, known_method, set_alignment

VARIANTS = tuple(METHODS)


def get_config(method: str = "sara"):
    c = demo.get_config()
    set_alignment(c, known_method(method))
    # The study's own schedule, pinned: at the demo's learning rate (1e-3) every method reaches
    # class_acc ~1 by step 500 and the curves have nothing left to separate; at 5e-4 they are
    # still rising through the 500 steps the 2-core budget allows per arm.
    c.optim.lr = 5e-4
    c.train.num_steps = 500
    c.train.checkpoint_every = 500
    c.eval.every = 100
    c.eval.num_samples = 500
    c.eval.num_steps = 10
    return c
