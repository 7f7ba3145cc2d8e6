"""Symmetric chain paths: enumeration, mace's U tensors, independent-basis counts and ranks."""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import math

import numpy as np
import pytest
import torch
from e3nn import o3
from mace.tools.cg import U_matrix_real

from fusion.diagrams.symmetric import (
    KernelLayout,
    SymmetricBasis,
    enumerate_chain_paths,
    independent_columns,
    monomial_values,
    path_tensor,
    random_path_values,
    reflection_signatures,
    single_thread,
    symmetric_coefficients,
)

IRS = "0e+1o+2e+3o"  # one copy of mace's coupling irreps for max_ell 3


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only wait for each other on a busy machine."""
    with single_thread():
        yield


@pytest.fixture(scope="module")
def basis3() -> SymmetricBasis:
    return SymmetricBasis(IRS, "0e+1o+2e", 3)


def test_counts_lmax3_correlation3(basis3):
    """DESIGN.md: 8/12/14 independent order-3 paths against mace's 23/51/65."""
    counts = basis3.counts()
    full = {str(g.ir_out): {} for g in basis3.groups}
    for g in basis3.groups:
        full[str(g.ir_out)][g.nu] = len(g.all_paths)
    print("independent:", counts, "full:", full)
    assert counts == {
        "0e": {1: 1, 2: 4, 3: 8},
        "1o": {1: 1, 2: 3, 3: 12},
        "2e": {1: 1, 2: 5, 3: 14},
    }
    assert full == {
        "0e": {1: 1, 2: 4, 3: 23},
        "1o": {1: 1, 2: 6, 3: 51},
        "2e": {1: 1, 2: 7, 3: 65},
    }


def _rank(x: torch.Tensor) -> int:
    s = torch.linalg.svdvals(x.to(torch.float64))
    return int((s > 1e-9 * s[0]).sum()) if s.numel() and s[0] > 0 else 0


def test_full_set_has_rank_of_independent_subset(basis3):
    """Exact rank (coefficients) = random-evaluation rank = size of the independent subset."""
    irs = basis3.irs
    for g in basis3.groups:
        coef_full = torch.stack([symmetric_coefficients(path_tensor(p, irs)) for p in g.all_paths])
        r_exact = _rank(coef_full.reshape(len(g.all_paths), -1))
        r_random = _rank(random_path_values(coef_full, basis3.D, 300, seed=1))
        r_indep = _rank(g.coefficients.reshape(len(g.paths), -1))
        assert r_exact == r_random == r_indep == len(g.paths) == g.rank, (g.ir_out, g.nu)


@pytest.fixture(scope="module")
def mace_u() -> dict:
    """mace-torch's U matrices (no cuequivariance), ``[2l+1, D, ..., D, Q]``."""
    out = {}
    with single_thread():
        for ir_out in ["0e", "1o", "2e"]:
            for nu in (1, 2, 3):
                U = U_matrix_real(IRS, ir_out, nu, use_cueq_cg=False, dtype=torch.float64)[-1]
                out[ir_out, nu] = U.reshape(o3.Irrep(ir_out).dim, *([16] * nu), U.shape[-1])
    return out


def test_full_paths_are_mace_u_columns(mace_u):
    """Our full path set is mace's U_matrix column by column (order and normalisation)."""
    irs = [ir for _, ir in o3.Irreps(IRS)]
    for (ir_out, nu), U in mace_u.items():
        paths = [p for p in enumerate_chain_paths(irs, nu) if p.ir_out == o3.Irrep(ir_out)]
        ours = torch.stack([path_tensor(p, irs) for p in paths], dim=-1)
        torch.testing.assert_close(ours, U, atol=1e-12, rtol=0)


def test_rank_equals_mace_u_span(basis3, mace_u):
    for g in basis3.groups:
        U = mace_u[str(g.ir_out), g.nu]
        coef = torch.stack([symmetric_coefficients(U[..., q]) for q in range(U.shape[-1])])
        assert _rank(coef.reshape(coef.shape[0], -1)) == len(g.paths)


def test_coefficients_evaluate_like_dense_tensors():
    irs = [ir for _, ir in o3.Irreps(IRS)]
    x = torch.randn(5, 16, dtype=torch.float64)
    for p in enumerate_chain_paths(irs, 3)[::9]:
        T = path_tensor(p, irs)
        dense = torch.einsum("mijk,si,sj,sk->sm", T, x, x, x)
        via_mono = monomial_values(x, 3) @ symmetric_coefficients(T).T
        torch.testing.assert_close(dense, via_mono, atol=1e-12, rtol=1e-12)


def _o3_multiplicity(irs, ir_out, nu: int, symmetric: bool) -> int:
    """dim Hom_O(3)(V^{(x)nu} or Sym^nu V, ir_out) from characters (independent of paths)."""
    n = 4000  # midpoint rule: never hits a zero of sin(k theta / 2) for k = 1..3
    theta = (np.arange(n) + 0.5) * np.pi / n

    def chi_l(l, t):
        return np.sin((2 * l + 1) * t / 2) / np.sin(t / 2)

    def chi_v(k, improper):  # character of V at g^k, g = rotation(theta) [x inversion]
        return sum((ir.p**k if improper else 1) * chi_l(ir.l, k * theta) for ir in irs)

    total = 0.0
    for improper in (False, True):
        if symmetric:  # cycle index of S_nu
            parts = _partitions(nu)
            chi = sum(
                _class_size(lam, nu) * np.prod([chi_v(k, improper) for k in lam], axis=0)
                for lam in parts
            ) / math.factorial(nu)
        else:
            chi = chi_v(1, improper) ** nu
        chi_out = (ir_out.p if improper else 1) * chi_l(ir_out.l, theta)
        total += np.sum(chi * chi_out * (1 - np.cos(theta))) / n
    return round(total / 2)


def _partitions(n, m=None):
    m = n if m is None else m
    if n == 0:
        return [[]]
    return [[k] + rest for k in range(min(n, m), 0, -1) for rest in _partitions(n - k, k)]


def _class_size(lam, n):
    size = math.factorial(n)
    for k in set(lam):
        c = lam.count(k)
        size //= k**c * math.factorial(c)
    return size


def test_counts_are_group_theoretic_multiplicities(basis3):
    """full paths = multiplicity in V^(x)nu, independent paths = multiplicity in Sym^nu V."""
    for g in basis3.groups:
        assert len(g.all_paths) == _o3_multiplicity(basis3.irs, g.ir_out, g.nu, False)
        assert len(g.paths) == _o3_multiplicity(basis3.irs, g.ir_out, g.nu, True)


COUNT_GRID = [
    ("0e+1o+2e+3o", "0e+0o+1e+1o+2e+2o+3o", 3),
    ("0e+1o+2e", "0e+0o+1e+1o", 3),
    ("0e+0o+1e+1o", "0e+0o+1e+1o+2e+2o", 4),
    ("0e+1o", "0e+0o+1e+1o+2e+3o", 4),
    ("1o+2o", "0e+1e+3e", 2),
]


@pytest.mark.parametrize("inputs,outputs,corr", COUNT_GRID)
def test_counts_are_multiplicities_for_every_output_and_order(inputs, outputs, corr):
    """Property: for every output irrep and order, the chain paths number the multiplicity in
    V^(x)nu and the independent ones the multiplicity in Sym^nu V (O(3) characters), zero
    included: outputs no symmetric product reaches keep no path and are reported."""
    sb = SymmetricBasis(inputs, outputs, corr)
    for g in sb.groups:
        assert len(g.all_paths) == _o3_multiplicity(sb.irs, g.ir_out, g.nu, False), g
        assert len(g.paths) == g.rank == _o3_multiplicity(sb.irs, g.ir_out, g.nu, True), g
    reached = {
        str(ir) for ir in sb.irreps_out if _o3_multiplicity_any(sb.irs, ir, corr) > 0
    }
    assert {str(ir) for ir in sb.irreps_out} - reached == {str(ir) for ir in sb.unreachable}


def _o3_multiplicity_any(irs, ir_out, corr):
    return sum(_o3_multiplicity(irs, ir_out, nu, True) for nu in range(1, corr + 1))


def test_zero_groups_keep_no_noise():
    """Issue 18: a threshold relative to the group's own largest column kept rounding noise
    (9 paths for 0o at nu=3, 3 for 1e at nu=2; 2/7/14 per order instead of 2/5/11)."""
    sb = SymmetricBasis(IRS, "0o+1e", 3)
    assert sb.counts() == {"0o": {1: 0, 2: 0, 3: 0}, "1e": {1: 0, 2: 0, 3: 4}}
    assert [str(ir) for ir in sb.unreachable] == ["0o"]
    small = SymmetricBasis("0e+1o+2e", "0e+0o+1e+1o", 3)
    per_order = [sum(len(g.paths) for g in small.groups if g.nu == nu) for nu in (1, 2, 3)]
    assert per_order == [2, 5, 11]
    # the threshold is the input scale: rescaled inputs give the same basis
    zero_group = sb.groups[2]  # 0o, nu = 3: 11 chain paths, all vanish on x (x) x (x) x
    coef = [symmetric_coefficients(path_tensor(p, sb.irs)) for p in zero_group.all_paths]
    vals = random_path_values(torch.stack(coef), 16, 40)
    assert len(coef) == 11 and vals.abs().max() < 1e-12
    assert independent_columns(vals) == []
    # the old threshold (relative to the group's own largest column) kept the noise
    assert len(independent_columns(vals, scale=vals.norm(dim=0).max().item())) > 0
    assert independent_columns(vals * 1e6, scale=1e6 * vals.shape[0] ** 0.5) == []


def test_mace_filter_only_for_the_full_basis():
    """mace's correlation-4 filter (natural parity on every vertex) drops rank with
    unnatural-parity inputs; the independent basis does not use it (it spans mace's reduced
    basis, which has no filter), the full basis does (mace's U columns one to one)."""
    ind = SymmetricBasis("0e+0o+1e+1o", "0e+1e", 4)
    full = SymmetricBasis("0e+0o+1e+1o", "0e+1e", 4, basis="full")
    assert ind.counts()["0e"][4] == 12 and full.group(0, 4).rank == 9
    assert ind.counts()["1e"][4] == 12 and len(full.group(1, 4).all_paths) == 0


def test_internal_cap_keeps_a_subset():
    capped = SymmetricBasis(IRS, "0e+1o", 3, lmax_internal=2)
    free = SymmetricBasis(IRS, "0e+1o", 3)
    for gc, gf in zip(capped.groups, free.groups):
        assert len(gc.all_paths) <= len(gf.all_paths) and len(gc.paths) <= len(gf.paths)
        assert all(lab.l <= 2 for p in gc.all_paths for lab in p.labels[1:-1])


def test_kernel_layout_is_block_diagonal(basis3):
    """Reflection classes make the folded kernel block diagonal: ~5x fewer multiply-adds."""
    lay = KernelLayout(basis3)
    assert reflection_signatures(basis3.irs) == [0, 1, 2, 4, 5, 3, 0, 6, 0, 1, 7, 1, 2, 4, 2, 4]
    bd, dense = lay.dense_flops()
    print(f"\nkernel multiply-adds per (node, channel): {bd} block-diagonal vs {dense} dense")
    assert bd * 4 < dense
    assert len(lay.rows) <= 1 + 16 + 136  # monomials of degree <= 2 (unused ones dropped)
    U = lay.fold()
    # every path lands inside its class blocks, and the blocks tile [0, Q)
    assert (
        lay.classes[-1][4]
        + (lay.classes[-1][1] - lay.classes[-1][0]) * (lay.classes[-1][3] - lay.classes[-1][2])
        == lay.Q
        == U.shape[1]
    )
    assert (U.abs().sum(1) > 0).all()
