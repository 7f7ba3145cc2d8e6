"""Ordered electronic states by construction: E_0 <= E_1 <= ... (issue 20).

A multi-state model with one free energy head per state can predict S1 below S0, which no
adiabatic reference does. :func:`ordered_energies` maps the raw per-state energies
``raw`` [B, S] to

    E_0 = raw_0,    E_k = E_{k-1} + softplus_w(raw_k - raw_{k-1})    (k >= 1)

with ``softplus_w(x) = w * log(1 + exp(x / w))`` (``w`` = ``width_ev``, default 0.05 eV).
Hence E_k - E_{k-1} >= 0 always (> 0 in exact arithmetic; a raw gap below about -1.8 eV
underflows to exactly 0 in float64 at stilbene's total energies), equals the raw gap to
within w * exp(-gap / w) once the gap exceeds a few w (4 eV gap: identical in float64), and
is differentiable everywhere, so forces -dE_k/dx follow by autograd. Near a crossing (raw
gap → 0 or below) the predicted gap tends smoothly to 0 (w·ln 2 = 35 meV at a raw gap of
exactly 0), never below.

Use in a model's forward, before the forces: ``energy = ordered_energies(energy)`` (the
per-state composition energies may stay in ``raw``: a constant per-state offset only shifts
the raw gap).
"""

from __future__ import annotations

import torch

__all__ = ["ordered_energies", "DEFAULT_WIDTH_EV"]

DEFAULT_WIDTH_EV = 0.05


def ordered_energies(raw: torch.Tensor, width_ev: float = DEFAULT_WIDTH_EV) -> torch.Tensor:
    """``raw`` [..., S] (eV) → energies [..., S] with non-decreasing states (see module)."""
    if raw.ndim < 1 or raw.shape[-1] < 1:
        raise ValueError(f"raw energies need a state axis [..., S], got shape {tuple(raw.shape)}")
    if not width_ev > 0:
        raise ValueError(f"width_ev must be > 0 eV, got {width_ev}")
    if raw.shape[-1] == 1:
        return raw
    gaps = torch.nn.functional.softplus(raw.diff(dim=-1), beta=1.0 / width_ev)  # [..., S-1]
    return torch.cat([raw[..., :1], raw[..., :1] + gaps.cumsum(dim=-1)], dim=-1)
