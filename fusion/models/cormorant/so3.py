"""SO(3) tools of ``cormorant/*`` in the complex spherical basis (Cormorant's basis).

Features are complex tensors ``[..., C, 2l+1]`` (components ``m = -l..l``). Couplings use the
standard (Condon–Shortley) Clebsch–Gordan coefficients ``<l1 m1 l2 m2 | l m>`` (sympy),
computed once in float64 and cached. Every CG product in the model is channelwise (channel
``c`` with channel ``c``); a product of two stacks of degrees is one matmul of their outer
product with a precomputed matrix (:func:`coupling_matrix`).
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["clebsch_gordan", "coupling_matrix", "couplings", "solid_harmonics", "real_matmul"]


@functools.cache
def clebsch_gordan(l1: int, l2: int, l: int) -> torch.Tensor:
    """``<l1 m1 l2 m2 | l m>`` as a float64 tensor ``[2l1+1, 2l2+1, 2l+1]`` (index ``m + l``)."""
    from sympy.physics.wigner import clebsch_gordan as cg

    out = torch.zeros(2 * l1 + 1, 2 * l2 + 1, 2 * l + 1, dtype=torch.float64)
    if not abs(l1 - l2) <= l <= l1 + l2:
        return out
    for m1 in range(-l1, l1 + 1):
        for m2 in range(-l2, l2 + 1):
            m = m1 + m2
            if -l <= m <= l:
                out[m1 + l1, m2 + l2, m + l] = float(cg(l1, l2, l, m1, m2, m))
    return out


def couplings(degrees1, degrees2, maxl: int) -> dict[int, list[tuple[int, int]]]:
    """``l -> [(l1, l2), ...]``: the admissible pairs of a CG product, ``l1`` outer loop and
    ``l2`` inner (the order of the output channel blocks, as the reference orders them)."""
    out: dict[int, list[tuple[int, int]]] = {}
    for l1 in degrees1:
        for l2 in degrees2:
            for l in range(abs(l1 - l2), min(l1 + l2, maxl) + 1):
                out.setdefault(l, []).append((l1, l2))
    return dict(sorted(out.items()))


def _offsets(degrees) -> dict[int, int]:
    off, pos = {}, 0
    for l in degrees:
        off[l] = pos
        pos += 2 * l + 1
    return off


@functools.cache
def _coupling_matrix64(degrees1: tuple, degrees2: tuple, maxl: int) -> torch.Tensor:
    o1, o2 = _offsets(degrees1), _offsets(degrees2)
    d1 = sum(2 * l + 1 for l in degrees1)
    d2 = sum(2 * l + 1 for l in degrees2)
    cols = []
    for l, pairs in couplings(degrees1, degrees2, maxl).items():
        for l1, l2 in pairs:
            block = torch.zeros(d1, d2, 2 * l + 1, dtype=torch.float64)
            block[o1[l1] : o1[l1] + 2 * l1 + 1, o2[l2] : o2[l2] + 2 * l2 + 1] = clebsch_gordan(
                l1, l2, l
            )
            cols.append(block.reshape(d1 * d2, 2 * l + 1))
    return torch.cat(cols, dim=1)


def coupling_matrix(degrees1, degrees2, maxl: int) -> torch.Tensor:
    """Real matrix ``[D1 * D2, K]`` taking the outer product ``x[m1] y[m2]`` of two stacks of
    degrees (``D = sum(2l+1)``, components of ``degrees1`` outer) to every coupled output: for
    each output degree ``l`` (ascending) and each pair of :func:`couplings` its ``2l+1``
    components."""
    return _coupling_matrix64(tuple(degrees1), tuple(degrees2), int(maxl))


def split_coupled(x: torch.Tensor, degrees1, degrees2, maxl: int) -> dict[int, torch.Tensor]:
    """``x [..., C, K]`` (columns of :func:`coupling_matrix`) -> ``l -> [..., P_l * C, 2l+1]``,
    channel blocks ordered by pair, ``C`` channels each."""
    out, pos = {}, 0
    for l, pairs in couplings(degrees1, degrees2, maxl).items():
        n = len(pairs) * (2 * l + 1)
        block = x[..., pos : pos + n].unflatten(-1, (len(pairs), 2 * l + 1))  # [..., C, P, d]
        out[l] = block.transpose(-2, -3).flatten(-3, -2)  # [..., P*C, d]
        pos += n
    return out


def real_matmul(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Complex ``x [..., K]`` times real ``m [K, J]`` (two real matmuls, not a complex one)."""
    xr = torch.view_as_real(x).transpose(-1, -2).reshape(-1, x.shape[-1])  # [... * 2, K]
    out = torch.mm(xr, m.to(xr.dtype)).view(*x.shape[:-1], 2, m.shape[1])  # one 2-D matmul
    return torch.view_as_complex(out.transpose(-1, -2).contiguous())


def solid_harmonics(vectors: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """Complex-conjugated solid harmonics of *unnormalised* vectors, Racah-normalised:
    ``Y_l^m(r) = |r|^l sqrt(4 pi / (2l+1)) conj(Y_lm(r_hat))`` for ``l = 0..lmax``, each
    ``[..., 2l+1]`` (complex). Polynomials in ``r`` (smooth, 0 at ``r = 0`` for ``l >= 1``).

    Built by the recursion ``Y_l = [Y_(l-1) (x) Y_1]_l / <l-1 0 1 0 | l 0>``.
    """
    x, y, z = vectors.unbind(-1)
    s = 1.0 / math.sqrt(2.0)
    y0 = torch.complex(torch.ones_like(x), torch.zeros_like(x)).unsqueeze(-1)
    y1 = torch.stack(
        [torch.complex(x * s, y * s), torch.complex(z, torch.zeros_like(z)),
         torch.complex(-x * s, y * s)], dim=-1
    )
    out = [y0, y1][: lmax + 1]
    for l in range(2, lmax + 1):
        cg = clebsch_gordan(l - 1, 1, l)
        c = cg.to(vectors.dtype) / float(cg[l - 1, 1, l])
        prod = out[-1].unsqueeze(-1) * y1.unsqueeze(-2)  # [..., 2l-1, 3]
        out.append(real_matmul(prod.flatten(-2), c.reshape(-1, 2 * l + 1)))
    return out
