"""The in-training FID: every `eval.every` steps, a small-budget FID of the model's samples
(e.g. 2k samples, a few sampler steps) so a run shows its convergence without stopping.

Samples are drawn exactly as `python -m sara_jax.sample` draws them (sample i is a function of
`sample.seed` and i), only fewer and with `eval.num_steps`: the same checkpoint gives the same
in-training and offline samples. Every process draws its share of the set and the pool3
features are gathered, so the figure does not depend on the number of hosts.
"""

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from sara_jax.evaluation import metrics
from sara_jax.sampling.sample_set import make_chunk_sampler

PyTree = Any
Featurize = Callable[[np.ndarray], dict[str, np.ndarray]]


def inception_featurizer(eval_config: ml_collections.ConfigDict) -> Featurize:
    """pool3 (and the other ADM features) of uint8 images with `eval.inception`'s weights.

    eval_config: `config.eval`.
    """
    from sara_jax.converters.inception import load_inception
    from sara_jax.evaluation.inception import make_featurizer

    model, variables = load_inception(eval_config.inception, "config.eval.inception")
    return make_featurizer(model, variables, eval_config.batch_size)


def reference_stats(
    eval_config: ml_collections.ConfigDict, featurize: Featurize
) -> metrics.FeatureStats:
    """pool3 statistics of `eval.reference` (`eval_config` is `config.eval`): stored ones (ADM's
    batches), or of its images."""
    reference = metrics.load_reference(eval_config.reference)
    if "fid" in reference:
        return reference["fid"]
    logging.info("featurising the %d reference images once", len(reference["images"]))
    return metrics.feature_stats(featurize(reference["images"])["pool3"])


def process_indices(num_samples: int, chunk: int, index: int, count: int) -> np.ndarray:
    """Sample indices of process `index` of `count`: (chunks, chunk) rows, the same number on
    every process (the set is padded by wrapping around), so the gather has one shape.

    Row r of process p holds samples (r * count + p) * chunk + j; laying the gathered
    (count, chunks, chunk) out as (chunks, count, chunk) restores 0, 1, 2, ...
    """
    per_round = chunk * count
    padded = np.resize(np.arange(num_samples), -(-num_samples // per_round) * per_round)
    return padded.reshape(-1, count, chunk)[:, index]


def make_fid_monitor(
    config: ml_collections.ConfigDict, featurize: Featurize, reference: metrics.FeatureStats
) -> Callable[[PyTree], float]:
    """`sit_params -> FID` of `eval.num_samples` samples with `eval.num_steps` sampler steps.

    Args:
      featurize: uint8 images (N, H, W, 3) -> {"pool3": (N, 2048), ...} (`inception_featurizer`).
      reference: the pool3 statistics compared against (`reference_stats`).
    """
    e = config.eval
    sampler = make_chunk_sampler(config, num_steps=e.num_steps)
    chunk = config.sample.batch_size
    rows = process_indices(e.num_samples, chunk, jax.process_index(), jax.process_count())

    def fid(sit_params: PyTree) -> float:
        params = sampler.place(sit_params)
        features = np.stack([featurize(sampler.draw(params, r)[0])["pool3"] for r in rows])
        gathered = np.asarray(multihost_utils.process_allgather(features))
        pool3 = gathered.reshape(jax.process_count(), *features.shape).swapaxes(0, 1)
        return metrics.fid(pool3.reshape(-1, pool3.shape[-1])[: e.num_samples], reference)

    return fid
