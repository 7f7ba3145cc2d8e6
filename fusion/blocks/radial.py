"""Radial functions of edge lengths: Bessel basis x polynomial cutoff, then an MLP.

Same formulas as mace-torch (``mace.modules.radial``), so a FusionBlock sees the edges as
MACE's interaction blocks do:

- Bessel basis ``sqrt(2/r_max) sin(n pi r / r_max) / r``, ``n = 1..num_bessel``;
- polynomial envelope of degree ``p`` going smoothly from 1 at ``r = 0`` to 0 at ``r_max``
  (and exactly 0 beyond).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import torch
from e3nn.nn import FullyConnectedNet
from torch import nn

__all__ = ["BesselBasis", "PolynomialCutoff", "RadialEmbedding", "RadialMLP"]


class BesselBasis(nn.Module):
    """``r [E, 1] -> [E, num_basis]``."""

    def __init__(self, r_max: float, num_basis: int = 8):
        super().__init__()
        # float64 until used (forward casts), so .double() is exact
        freq = math.pi / r_max * torch.arange(1, num_basis + 1, dtype=torch.float64)
        self.register_buffer("freq", freq)
        self.prefactor = math.sqrt(2.0 / r_max)
        self.r_max = r_max
        self.num_basis = num_basis

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.prefactor * torch.sin(self.freq.to(r.dtype) * r) / r  # [E, num_basis]


class PolynomialCutoff(nn.Module):
    """``r [E, 1] -> [E, 1]``: 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)."""

    def __init__(self, r_max: float, p: int = 5):
        super().__init__()
        self.r_max = r_max
        self.p = float(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = r / self.r_max
        env = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * torch.pow(x, p)
            + p * (p + 2.0) * torch.pow(x, p + 1.0)
            - p * (p + 1.0) / 2.0 * torch.pow(x, p + 2.0)
        )
        return env * (x < 1.0)


class RadialEmbedding(nn.Module):
    """Edge lengths ``[E, 1]`` -> Bessel basis times cutoff ``[E, num_bessel]``."""

    def __init__(self, r_max: float, num_bessel: int = 8, num_polynomial_cutoff: int = 5):
        super().__init__()
        self.bessel = BesselBasis(r_max, num_bessel)
        self.cutoff = PolynomialCutoff(r_max, num_polynomial_cutoff)
        self.out_dim = num_bessel

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        return self.bessel(r) * self.cutoff(r)


class RadialMLP(nn.Module):
    """SiLU MLP ``[E, dims[0]] -> [E, dims[-1]]``: e3nn's ``FullyConnectedNet`` as in MACE.

    No biases (zero in, zero out: messages vanish at the cutoff) and second-moment
    normalised activations, so outputs are of order one at initialisation.
    """

    def __init__(self, dims: Sequence[int]):
        super().__init__()
        self.net = FullyConnectedNet(list(dims), torch.nn.functional.silu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
