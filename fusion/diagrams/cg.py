"""Cached real Clebsch–Gordan tensors.

``wigner_3j(l1, l2, l3)`` is e3nn's real Wigner 3j symbol (``e3nn.o3.wigner_3j``): an
equivariant tensor ``[2l1+1, 2l2+1, 2l3+1]`` in e3nn's real basis, **Frobenius-normalised**
(sum of all squared entries = 1).

``coupling(l1, l2, l3) = sqrt(2l3+1) * wigner_3j(l1, l2, l3)`` is the coupling a fusion
vertex uses: for every output component ``m3`` the sum over ``m1, m2`` of its squares is 1,
so two inputs with unit-variance components give an output with unit-variance components
("component" normalisation, as e3nn's ``irrep_normalization="component"``).

Both are computed once in float64 and cached per ``(l1, l2, l3, dtype, device)``; treat the
returned tensors as read-only.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import functools
import math

import torch
from e3nn import o3

__all__ = ["wigner_3j", "coupling", "triangle"]


def triangle(l1: int, l2: int, l3: int) -> bool:
    """|l1 - l2| <= l3 <= l1 + l2."""
    return abs(l1 - l2) <= l3 <= l1 + l2


@functools.cache
def _w3j64(l1: int, l2: int, l3: int) -> torch.Tensor:
    if not triangle(l1, l2, l3):
        raise ValueError(f"wigner_3j({l1}, {l2}, {l3}): violates the triangle rule")
    w = o3.wigner_3j(l1, l2, l3, dtype=torch.float64)
    # e3nn's table is exact up to rounding: clear the ~1e-17 noise so sparsity is exact
    return torch.where(w.abs() < 1e-12, torch.zeros_like(w), w)


@functools.cache
def _cached(kind: str, l1: int, l2: int, l3: int, dtype, device) -> torch.Tensor:
    w = _w3j64(l1, l2, l3)
    if kind == "coupling":
        w = w * math.sqrt(2 * l3 + 1)
    return w.to(dtype=dtype, device=device)


def wigner_3j(l1: int, l2: int, l3: int, dtype=None, device=None) -> torch.Tensor:
    """e3nn's real Wigner 3j ``[2l1+1, 2l2+1, 2l3+1]`` (Frobenius norm 1), cached."""
    dtype = dtype or torch.get_default_dtype()
    return _cached("w3j", l1, l2, l3, dtype, torch.device(device or "cpu"))


def coupling(l1: int, l2: int, l3: int, dtype=None, device=None) -> torch.Tensor:
    """``sqrt(2l3+1) * wigner_3j``: component-normalised real CG ``[2l1+1, 2l2+1, 2l3+1]``."""
    dtype = dtype or torch.get_default_dtype()
    return _cached("coupling", l1, l2, l3, dtype, torch.device(device or "cpu"))
