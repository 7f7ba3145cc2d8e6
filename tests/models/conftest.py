"""Model tests run in float64 (equivariance to 1e-10); torch's default is restored after."""

import pytest


@pytest.fixture(autouse=True)
def _models_in_float64(float64_default):
    yield
