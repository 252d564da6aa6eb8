"""The samplers' float64 time grids against torch.linspace, the function REPA builds them with:
equal to the bit, so that the guidance interval selects the same steps."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sara_jax.sampling import samplers  # noqa: E402


@pytest.mark.parametrize("num_steps", [1, 2, 7, 25, 50, 100, 200, 250, 1000])
def test_time_grids_equal_torch_linspace_in_float64(num_steps):
    ode = torch.linspace(1, 0, num_steps + 1, dtype=torch.float64).numpy()
    np.testing.assert_array_equal(samplers.time_grid("euler", num_steps), ode)
    sde = torch.cat(
        [torch.linspace(1.0, 0.04, num_steps, dtype=torch.float64), torch.zeros(1).double()]
    )
    np.testing.assert_array_equal(samplers.time_grid("sde", num_steps), sde.numpy())
