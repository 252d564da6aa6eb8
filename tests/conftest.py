"""Test setup: 8 host CPU devices, so data-parallel code runs as on an 8-device mesh; one XLA
compilation cache for the whole run; each test marked with its tier, the folder it is in; the
shared tiny run config."""

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

# Must happen before jax is imported by any test module; .ci/run sets the same.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

# The e2e tests run the same tiny programs in many subprocesses (they inherit os.environ), and
# compiling them was most of each run's time: JAX's persistent cache, however short the compile,
# in a folder of this session's own, removed at exit. A cached program is the one compiled.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="sara_jax_xla_cache_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

HERE = Path(__file__).parent
TIERS = ("unit", "parity", "e2e")  # pytest.ini describes each marker.


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test in tests/<tier>/ gets the marker <tier>: `pytest -m "not e2e"` selects by tier."""
    for item in items:
        folder = item.path.relative_to(HERE).parts[0] if item.path.is_relative_to(HERE) else ""
        if folder in TIERS:
            item.add_marker(folder)


@pytest.fixture
def tiny_config():
    """The shared tiny run config, as a function of overrides: `tiny_config(**{"disc.every":
    3})` is configs/demo.py with helpers.TINY and disc.every = 3, validated (helpers.py)."""
    from helpers import tiny_config  # Here, after XLA_FLAGS is set above.

    return tiny_config
