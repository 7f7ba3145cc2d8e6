"""Layers of ``cormorant/*`` (see :mod:`fusion.models.cormorant` for the architecture).

All pairwise quantities live on a padded dense layout ``[B, A, A, ...]`` (``B`` molecules,
``A`` = most atoms in the batch, pair ``(i, j)`` with ``r_ij = r_i - r_j``), every atom pair
of a molecule including ``i = j``, as the reference evaluates them. Complex features are
torch complex tensors; complex weights are parameters ``[out, in, 2]`` (real, imaginary),
i.e. pairs of real numbers, so parameter counts equal the reference's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fusion.models.cormorant.so3 import coupling_matrix, couplings, real_matmul, split_coupled

__all__ = ["RadialBasis", "InputMPNN", "EdgeLevel", "AtomLevel", "OutputPMLP", "mlp",
           "complex_mix", "soft_mask"]

EPS = 1e-3  # floor of a learnable cutoff radius or width (Å), as the reference


def mlp(n_in: int, n_out: int, hidden: int = 256) -> nn.Sequential:
    """One hidden layer, LeakyReLU (slope 0.01)."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.LeakyReLU(), nn.Linear(hidden, n_out))


def complex_mix(weight: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Mix the channel axis ``dim`` of complex ``x`` with ``weight [out, in, 2]``."""
    w = torch.view_as_complex(weight.to(x.real.dtype).contiguous())  # [out, in]
    x = x.movedim(dim, -1)
    return torch.matmul(x, w.transpose(0, 1)).movedim(-1, dim)


def soft_mask(r: torch.Tensor, radius: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """``sigmoid((max(eps, |radius|) - r) / max(eps, |width|))`` per channel: ``[..., C]``."""
    eps = torch.tensor(EPS, dtype=r.dtype, device=r.device)
    rad = torch.maximum(eps, radius.abs())
    wid = torch.maximum(eps, width.abs())
    return torch.sigmoid((rad - r.unsqueeze(-1)) / wid)


class RadialBasis(nn.Module):
    """``sin(2 pi f_t r + phi_t) * r^-p`` for ``t < 2 (num_trig + 1)``, ``p <= num_pow``:
    ``[..., 2 (num_trig+1) (num_pow+1)]`` (index ``t (num_pow+1) + p``), 0 on masked pairs.
    ``f_t`` start at ``0..num_trig`` twice, ``phi_t`` at 0 (sines) and pi/2 (cosines); the
    first sine (identically 0) starts as a cosine. Both learnable."""

    def __init__(self, num_trig: int = 3, num_pow: int = 3):
        super().__init__()
        n = num_trig + 1
        self.num_pow = num_pow
        scales = torch.cat([torch.arange(n), torch.arange(n)])
        self.scales = nn.Parameter(scales.to(torch.get_default_dtype()))
        phases = torch.cat([torch.zeros(n), torch.full((n,), math.pi / 2)])
        phases[0] = math.pi / 2
        self.phases = nn.Parameter(phases)
        self.num_out = 2 * n * (num_pow + 1)

    def forward(self, r: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        r_safe = torch.where(mask, r, torch.ones_like(r)).unsqueeze(-1)  # [..., 1]
        trig = torch.sin(2 * math.pi * self.scales * r_safe + self.phases)  # [..., T]
        powers = torch.cat([r_safe.pow(-p) for p in range(self.num_pow + 1)], dim=-1)
        out = (trig.unsqueeze(-1) * powers.unsqueeze(-2)).flatten(-2)
        return out * mask.unsqueeze(-1).to(out.dtype)


class InputMPNN(nn.Module):
    """One message-passing step on the input scalars ``x [B, A, n_in]``:
    ``m_i = sum_j mask_ij R(r_ij) * x_j`` (``R``: a radial basis mixed to ``n_in`` channels,
    ``mask``: hard cutoff ``r < hard_cut`` (if set) times a fixed sigmoid soft cutoff), then
    ``MLP([m_i, x_i]) -> 2C`` reals = ``C`` complex scalars ``[B, A, C, 1]``."""

    def __init__(self, n_in: int, channels: int, hard_cut: float | None, soft_cut: float,
                 soft_width: float, num_trig: int, num_pow: int):
        super().__init__()
        self.channels, self.hard_cut = channels, hard_cut
        self.soft_cut, self.soft_width = soft_cut, soft_width
        self.radial = RadialBasis(num_trig, num_pow)
        self.radial_linear = nn.Linear(self.radial.num_out, n_in)
        self.mlp = mlp(2 * n_in, 2 * channels)

    def forward(self, x, r, pair_mask, nonself, atom_mask):
        rad = self.radial_linear(self.radial(r, nonself))  # [B, A, A, n_in]
        mask = pair_mask
        if self.hard_cut is not None:
            mask = mask & (r < self.hard_cut)
        soft = torch.sigmoid((max(EPS, self.soft_cut) - r) / max(EPS, self.soft_width))
        edge = rad * (mask.to(r.dtype) * soft).unsqueeze(-1)
        messages = torch.einsum("bijc,bjc->bic", edge, x)
        h = self.mlp(torch.cat([messages, x], dim=-1)) * atom_mask.unsqueeze(-1).to(x.dtype)
        return torch.view_as_complex(h.unflatten(-1, (self.channels, 2)).contiguous()).unsqueeze(-1)


class EdgeLevel(nn.Module):
    """Scalar edge features ``g_ij,l' [B, A, A, C]`` for ``l' = 0..max_sh``: per degree a
    complex mix (no bias) of the previous level's ``g_ij,l'``, the dot products
    ``sum_m F_i,m (-1)^m F_j,-m`` of every atom channel (for ``l'`` up to the atom features'
    top degree) and the radial basis read as complex numbers; times the learnable soft cutoff
    (radius and width per channel) on every pair of the molecule."""

    def __init__(self, n_prev: int, n_dot: int, n_dot_degrees: int, n_radial: int,
                 max_sh: int, channels: int, soft_cut: float, soft_width: float):
        super().__init__()
        self.max_sh, self.n_dot_degrees = max_sh, n_dot_degrees
        self.weights = nn.ParameterList()
        for l in range(max_sh + 1):
            n_in = n_prev + (n_dot if l < n_dot_degrees else 0) + n_radial
            self.weights.append(nn.Parameter(torch.randn(channels, n_in, 2) / max(channels, n_in)))
        self.soft_cut_rad = nn.Parameter(torch.full((channels,), float(soft_cut)))
        self.soft_cut_width = nn.Parameter(torch.full((channels,), float(soft_width)))

    def forward(self, prev, dots, radial, r, pair_mask):
        mask = soft_mask(r, self.soft_cut_rad, self.soft_cut_width)
        mask = mask * pair_mask.unsqueeze(-1).to(r.dtype)
        shared = torch.cat([dots, radial], dim=-1)  # the inputs every degree sees
        n_prev = prev[0].shape[-1] if prev is not None else 0
        out = []
        for l, weight in enumerate(self.weights):
            w = torch.view_as_complex(weight.to(r.dtype).contiguous())  # [C, n_in]
            x = shared if l < self.n_dot_degrees else radial
            g = torch.matmul(x, w[:, n_prev:].transpose(0, 1))
            if prev is not None:  # (the concatenation [prev, dots, radial], mixed)
                g = g + torch.matmul(prev[l], w[:, :n_prev].transpose(0, 1))
            out.append(g * mask)
        return out


def dot_products(feats: dict[int, torch.Tensor]) -> torch.Tensor:
    """``sum_m F_i,c,m (-1)^m F_j,c,-m`` for every degree and channel: ``[B, A, A, sum C_l]``
    (degrees ascending)."""
    out = []
    for l, f in feats.items():
        sign = torch.tensor([(-1.0) ** m for m in range(-l, l + 1)], dtype=f.real.dtype,
                            device=f.device)
        g = f.flip(-1) * sign  # [B, A, C, 2l+1]
        out.append(torch.einsum("bicm,bjcm->bijc", f, g))
    return torch.cat(out, dim=-1)


def stack(feats: dict[int, torch.Tensor]) -> torch.Tensor:
    """``l -> [..., C, 2l+1]`` -> ``[..., C, sum(2l+1)]`` (degrees ascending)."""
    return torch.cat([feats[l] for l in sorted(feats)], dim=-1)


class AtomLevel(nn.Module):
    """``F_i^out,l = W_l [ sum_j CG(e_ij (x) F_j)_l  (+)  F_i,l  (+)  CG(F_i (x) F_i)_l
    (+) extra_l ]``: channelwise CG products over every ordered pair of degrees, outputs
    ``l <= maxl``, concatenated along channels and mixed by one complex matrix per degree
    (no bias). ``e_ij,l' = g_ij,l' Y_l'(r_ij)``. ``extra``: optional channels per degree (the
    fusion term)."""

    def __init__(self, atom_degrees, edge_degrees, channels: int, maxl: int, gain: float,
                 extra: dict[int, int] | None = None, init: str = "rand"):
        super().__init__()
        self.atom_degrees, self.edge_degrees = tuple(atom_degrees), tuple(edge_degrees)
        self.maxl = maxl

        ag = couplings(self.edge_degrees, self.atom_degrees, maxl)
        sq = couplings(self.atom_degrees, self.atom_degrees, maxl)
        extra = extra or {}
        own = {l for l in self.atom_degrees if l <= maxl}
        self.out_degrees = tuple(sorted(set(ag) | set(sq) | own))
        self.register_buffer("m_ag", coupling_matrix(self.edge_degrees, self.atom_degrees, maxl)
                             .to(torch.get_default_dtype()), False)
        self.register_buffer("m_sq", coupling_matrix(self.atom_degrees, self.atom_degrees, maxl)
                             .to(torch.get_default_dtype()), False)
        self.weights = nn.ParameterList()
        for l in self.out_degrees:
            blocks = len(ag.get(l, ())) + (l in self.atom_degrees) + len(sq.get(l, ()))
            n_in = channels * blocks + extra.get(l, 0)
            if init == "rand":
                w = torch.rand(channels, n_in, 2) * 2 - 1
            else:
                w = torch.randn(channels, n_in, 2)
            self.weights.append(nn.Parameter(w * gain / max(channels, n_in)))

    def forward(self, feats: dict[int, torch.Tensor], edges: dict[int, torch.Tensor],
                extra: dict[int, torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
        f = stack(feats)  # [B, A, C, Df]
        e = stack(edges)  # [B, A, A, C, De]
        B, A, C, Df = f.shape
        De = e.shape[-1]
        # sum_j e_ij[m1] F_j[m2] per channel: one batched matmul over (molecule, channel)
        lhs = e.permute(0, 3, 1, 4, 2).reshape(B * C, A * De, A)
        rhs = f.permute(0, 2, 1, 3).reshape(B * C, A, Df)
        outer = torch.bmm(lhs, rhs).view(B, C, A, De * Df).transpose(1, 2)  # [B, A, C, De*Df]
        ag = split_coupled(real_matmul(outer, self.m_ag), self.edge_degrees, self.atom_degrees,
                           self.maxl)
        sq_outer = (f.unsqueeze(-1) * f.unsqueeze(-2)).flatten(-2)
        sq = split_coupled(real_matmul(sq_outer, self.m_sq), self.atom_degrees, self.atom_degrees,
                           self.maxl)
        out = {}
        for l, w in zip(self.out_degrees, self.weights):
            parts = [p[l] for p in (ag, feats, sq) if l in p]
            if extra is not None and l in extra:
                parts.append(extra[l])
            out[l] = complex_mix(w, torch.cat(parts, dim=-2), -2)
        return out


def invariants(levels: list[dict[int, torch.Tensor]]) -> torch.Tensor:
    """The reference's scalars of the CG levels' features: the ``l = 0`` parts (real,
    imaginary) of every level, then per degree ``l`` and channel (levels concatenated)
    ``Re sum_m (-1)^m F_m F_-m`` and ``sum_m |F_m|^2``. ``[B, A, 2 * num_scalars]``."""
    degrees = sorted({l for lev in levels for l in lev})
    cat = {l: torch.cat([lev[l] for lev in levels if l in lev], dim=-2) for l in degrees}
    parts = [torch.view_as_real(cat[0][..., 0]).flatten(-2)]
    for l in degrees:
        f = cat[l]
        sign = torch.tensor([(-1.0) ** m for m in range(-l, l + 1)], dtype=f.real.dtype,
                            device=f.device)
        tr = (f * f.flip(-1) * sign).sum(-1).real
        mag = (f.real**2 + f.imag**2).sum(-1)
        parts.append(torch.stack([tr, mag], dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)


class OutputPMLP(nn.Module):
    """Per-atom MLP (``2 num_scalars -> 256 -> 64``), sum over atoms, molecule MLP
    (``64 -> 256 -> 1``)."""

    def __init__(self, num_scalars: int, num_mixed: int = 64):
        super().__init__()
        self.mlp1 = mlp(2 * num_scalars, num_mixed)
        self.mlp2 = mlp(num_mixed, 1)

    def forward(self, scalars: torch.Tensor, atom_mask: torch.Tensor) -> torch.Tensor:
        x = self.mlp1(scalars) * atom_mask.unsqueeze(-1).to(scalars.dtype)
        return self.mlp2(x.sum(1)).squeeze(-1)
