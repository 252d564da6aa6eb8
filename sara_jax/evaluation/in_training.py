"""In-training evaluation: every `eval.every` steps, a small-budget FID of the model's samples
(e.g. 2k samples, a few sampler steps) so a run shows its convergence without stopping; on the
generated shapes data, the shapes classifier's `fd` and `class_acc` (`evaluation.shapes`).
Beside them, on `eval.spatial_images` training records, the spatial structure of the aligned
tokens and their structural gap (`make_structure_monitor`), for every method alike.

Samples are drawn exactly as `python -m sara_jax.sample` draws them (sample i is a function of
`sample.seed` and i), only fewer and with `eval.num_steps`: the same checkpoint gives the same
in-training and offline samples. Every process draws its share of the set and the features
are gathered, so the figure does not depend on the number of hosts.

An evaluation can be abandoned: after SIGTERM it raises `preemption.Preempted(ABANDONED)`
before each chunk (every process draws as many chunks, so these are lock-step safe points),
and with one process also while a chunk is drawn. Nothing of it is logged; the caller decides
what to save.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from sara_jax.encoders.load import Encoder
from sara_jax.evaluation import metrics, shapes
from sara_jax.evaluation.representations import alignment_metrics, make_probe
from sara_jax.io import preemption
from sara_jax.models.trained import Models
from sara_jax.sampling.sample_set import make_chunk_sampler

PyTree = Any
Featurize = Callable[[np.ndarray], dict[str, np.ndarray]]

ABANDONED = "the in-training evaluation was abandoned unfinished, none of it logged"


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


def make_monitor(
    config: ml_collections.ConfigDict,
    featurize: Featurize,
    score: Callable[[dict[str, np.ndarray], np.ndarray], dict[str, float]],
) -> Callable[[PyTree], dict[str, float]]:
    """`sit_params -> {metric: value}` of `eval.num_samples` samples, `eval.num_steps` steps.

    The returned function raises `preemption.Preempted(ABANDONED)` once SIGTERM has arrived
    (`preemption.requested`): with one process within the chunk being drawn, with several
    before the next chunk.

    Args:
      featurize: uint8 images (N, H, W, 3) -> {name: (N, ...) features}.
      score: (every sample's features, their labels (N,)) -> the metrics to log.
    """
    e = config.eval
    sampler = make_chunk_sampler(config, num_steps=e.num_steps)
    chunk = config.sample.batch_size
    rows = process_indices(e.num_samples, chunk, jax.process_index(), jax.process_count())

    def gather(local: np.ndarray) -> np.ndarray:
        # (rows, chunk, ...) of each process -> (num_samples, ...) in sample order.
        gathered = np.asarray(multihost_utils.process_allgather(local))
        ordered = gathered.reshape(jax.process_count(), *local.shape).swapaxes(0, 1)
        return ordered.reshape(-1, *local.shape[2:])[: e.num_samples]

    def evaluate(sit_params: PyTree) -> dict[str, float]:
        params = sampler.place(sit_params)
        features, labels = [], []
        for r in rows:
            preemption.check(ABANDONED)  # Before, not after: a finished evaluation is kept.
            images, chunk_labels = sampler.draw(params, r, saved=ABANDONED)
            features.append(featurize(images))
            labels.append(chunk_labels)
        stacked = {k: gather(np.stack([f[k] for f in features])) for k in features[0]}
        return score(stacked, gather(np.stack(labels)))

    return evaluate


def make_fid_monitor(
    config: ml_collections.ConfigDict, featurize: Featurize, reference: metrics.FeatureStats
) -> Callable[[PyTree], dict[str, float]]:
    """`sit_params -> {"fid": FID}` against `reference`, the pool3 statistics compared against
    (`reference_stats`); `featurize` is `inception_featurizer`'s."""
    return make_monitor(config, featurize, lambda f, _: {"fid": metrics.fid(f["pool3"], reference)})


def make_shapes_monitor(config: ml_collections.ConfigDict) -> Callable[[PyTree], dict[str, float]]:
    """`sit_params -> {"fd", "class_acc"}` with the shapes data's own classifier: the Frechet
    distance of its features to those of `eval.num_samples` training images, and the fraction
    of samples it assigns the class they were drawn for."""
    evaluator = shapes.load_evaluator(config.eval.shapes, config.data)
    real = shapes.reference_images(config.data, config.eval.num_samples)
    reference = metrics.feature_stats(evaluator.featurize(real)["features"])
    logging.info("shapes evaluator: held-out accuracy %.4f", evaluator.accuracy)
    score = lambda features, labels: shapes.scores(features, labels, reference)  # noqa: E731
    return make_monitor(config, evaluator.featurize, score)


def make_structure_monitor(
    config: ml_collections.ConfigDict, models: Models, encoder: Encoder, source: Sequence[dict]
) -> Callable[[PyTree], dict[str, float]]:
    """`params -> {"spatial/<tokens>/<metric>", "struc_gap/<tokens>"}` of the first
    `eval.spatial_images` records, or all if fewer (`evaluation.representations`): how
    spatially structured z_enc, z_den and h_den are and how far z_den and h_den are from
    z_enc's structure.

    params: {"sit", "projector"}, whole on every device; `encoder.params` likewise.
    """
    e = config.eval
    count = min(e.spatial_images, len(source))
    probe, foreground = make_probe(config, models, encoder, source, count, e.spatial_t)

    def measure(params: PyTree) -> dict[str, float]:
        return alignment_metrics(probe(params), foreground, config.loss.struc_reduction)

    return measure


def make_config_monitor(config: ml_collections.ConfigDict) -> Callable[[PyTree], dict[str, float]]:
    """The monitor `eval.featurizer` names: the FID's ("inception") or the shapes data's."""
    if config.eval.featurizer == "shapes":
        return make_shapes_monitor(config)
    featurize = inception_featurizer(config.eval)
    return make_fid_monitor(config, featurize, reference_stats(config.eval, featurize))
