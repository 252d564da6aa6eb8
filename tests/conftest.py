"""Test setup: 8 host CPU devices, so data-parallel code runs as on an 8-device mesh."""

import os

# Must happen before jax is imported by any test module; .ci/run sets the same.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
