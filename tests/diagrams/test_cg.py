"""Real CG tables: normalisation, equivariance, cache, irreps helpers."""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import pytest
import torch
from e3nn import o3

from fusion.diagrams.cg import coupling, wigner_3j
from fusion.diagrams.irreps import (
    channel_irreps,
    component_index,
    from_blocks,
    parse_irreps,
    to_blocks,
)


@pytest.mark.parametrize("ls", [(0, 0, 0), (1, 1, 2), (2, 3, 1), (3, 3, 3), (3, 2, 5)])
def test_coupling_normalisation_and_equivariance(ls):
    l1, l2, l3 = ls
    w = wigner_3j(l1, l2, l3, dtype=torch.float64)
    assert torch.allclose((w**2).sum(), torch.tensor(1.0, dtype=torch.float64))
    c = coupling(l1, l2, l3, dtype=torch.float64)
    # component normalisation: for every m3, sum over m1, m2 of squares is 1
    assert torch.allclose((c**2).sum((0, 1)), torch.ones(2 * l3 + 1, dtype=torch.float64))
    R = o3.rand_matrix(dtype=torch.float64)
    D1, D2, D3 = (o3.Irrep(l, 1).D_from_matrix(R) for l in ls)
    rotated = torch.einsum("ai,bj,ck,ijk->abc", D1, D2, D3, c)
    assert (rotated - c).abs().max() < 1e-12


def test_cache_per_dtype():
    a = coupling(2, 2, 2, dtype=torch.float32)
    assert a.dtype == torch.float32 and coupling(2, 2, 2, dtype=torch.float32) is a
    assert coupling(2, 2, 2, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="triangle"):
        wigner_3j(0, 1, 3)


def test_parse_irreps_forms():
    labels = (o3.Irrep("0e"), o3.Irrep("1o"))
    assert parse_irreps("0e+1o") == (labels, None)
    assert parse_irreps([(0, 1), (1, -1)]) == (labels, None)
    assert parse_irreps(["0e", "1o"]) == (labels, None)
    assert parse_irreps(o3.Irreps("4x0e+4x1o")) == (labels, 4)
    with pytest.raises(ValueError, match="multiplicities differ"):
        parse_irreps("4x0e+2x1o")


def test_layout_converters_roundtrip():
    labels = (o3.Irrep("0e"), o3.Irrep("1o"), o3.Irrep("2e"))
    C, N = 3, 4
    x = torch.randn(N, channel_irreps(labels, C).dim)
    blocks = to_blocks(x, labels, C)
    assert [tuple(b.shape) for b in blocks] == [(N, C, 1), (N, C, 3), (N, C, 5)]
    # e3nn layout is mul-first: block of 1o is [N, C, 3] flattened
    assert torch.equal(blocks[1][:, 2], x[:, C + 2 * 3 : C + 3 * 3])
    assert torch.equal(from_blocks(blocks), x)
    idx = component_index(labels, C)  # component-major [N, D, C]
    comp = x.index_select(1, idx).view(N, 9, C)
    assert torch.equal(comp[:, 1:4].transpose(1, 2), blocks[1])
    assert torch.equal(comp.reshape(N, -1).index_select(1, torch.argsort(idx)), x)
    with pytest.raises(ValueError, match=r"expected a tensor \[N, 27\].*got shape \[4, 5\]"):
        to_blocks(x[:, :5], labels, C)
