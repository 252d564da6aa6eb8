"""FID, sFID, IS, precision and recall of a sample set, ADM-evaluator style:
`python -m sara_jax.evaluate --samples=RUN/samples_400000/samples.npz
--reference=VIRTUAL_imagenet256_labeled.npz --inception=pt_inception-2015-12-05-6726825d.pth`
prints the metrics and writes them as JSON beside the samples.

Features come from the FID InceptionV3 (`sara_jax.models.inception`, pytorch-fid's 2015-12-05
weights): pool3 for FID and precision/recall, the first 7 channels of mixed_6/conv for sFID, and
pool3 times the logit weights without their bias for IS (as ADM's evaluator reads the graph).
The reference file's stored statistics are used when present; its images (`arr_0`) are
featurised when a statistic is missing and for precision/recall.
"""

from pathlib import Path
from typing import Any

import numpy as np
from absl import app, flags, logging

from sara_jax.evaluation import inception, metrics
from sara_jax.io.files import write_json

PyTree = Any


def evaluate(
    samples: np.ndarray, reference: dict, featurize, split_size: int = 5000
) -> dict[str, float | None]:
    """The metrics of uint8 `samples` (N, H, W, 3) against a `metrics.load_reference` dict."""
    fake = featurize(samples)
    real = featurize(reference["images"]) if "images" in reference else None
    if real is None and not {"fid", "sfid"} <= reference.keys():
        raise ValueError("the reference has neither both statistics nor images")
    ref_fid = reference.get("fid") or metrics.feature_stats(real["pool3"])
    ref_sfid = reference.get("sfid") or metrics.feature_stats(real["spatial"])
    precision = recall = None
    if real is None:
        logging.warning("the reference has no images: precision and recall are not computed")
    else:
        precision, recall = metrics.precision_recall(real["pool3"], fake["pool3"])
    return {
        "num_samples": len(samples),
        "fid": metrics.fid(fake["pool3"], ref_fid),
        "sfid": metrics.sfid(fake["spatial"], ref_sfid),
        "inception_score": metrics.inception_score(fake["logits"], split_size),
        "precision": precision,
        "recall": recall,
    }


def load_samples(path: str) -> np.ndarray:
    """The uint8 images (N, H, W, 3) in `arr_0` of the --samples .npz at `path`; a ValueError
    naming the file and what it holds otherwise (pickled objects, no arr_0, another dtype or
    shape)."""
    name = f"--samples={path}"
    return metrics.check_images(metrics.read_npz(path, name, metrics.IMAGES), name)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from sara_jax.converters.inception import load_inception

    f = flags.FLAGS
    samples_path = Path(f.samples)
    if not samples_path.is_file():
        raise FileNotFoundError(f"--samples={f.samples!r}: no such file")
    # Read first, so a bad input file fails at once rather than after the weights load.
    samples = load_samples(f.samples)
    reference = metrics.load_reference(f.reference)
    model, variables = load_inception(f.inception, "--inception")
    featurize = inception.make_featurizer(model, variables, f.batch_size, f.preprocessing)
    results = evaluate(samples, reference, featurize)
    out = Path(f.out) if f.out else samples_path.with_name("metrics.json")
    write_json(out, {**results, "reference": f.reference, "preprocessing": f.preprocessing})
    for name, value in results.items():
        print(f"{name}: {value}")
    logging.info("wrote %s", out)


if __name__ == "__main__":
    flags.DEFINE_string("samples", None, "A samples .npz (uint8 NHWC arr_0).")
    flags.DEFINE_string("reference", None, "Reference .npz: statistics and/or images.")
    flags.DEFINE_string(
        "inception", "pt_inception-2015-12-05-6726825d.pth", "pytorch-fid Inception weights."
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
    flags.mark_flags_as_required(["samples", "reference"])
    app.run(main)
