"""Model tests run in float64 (equivariance to 1e-10); torch's default is restored after."""

import pytest
import torch


@pytest.fixture(autouse=True)
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
