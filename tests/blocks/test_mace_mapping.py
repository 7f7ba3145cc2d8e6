"""mace-torch weights mapped onto FusionProduct reproduce mace's outputs (float64)."""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import warnings

import numpy as np
import pytest
import torch
from e3nn import o3
from mace import modules
from mace.modules.blocks import EquivariantProductBasisBlock

from fusion.blocks.mace_compat import fusion_from_mace, map_mace_weights, replace_products
from fusion.blocks.product import FusionProduct
from fusion.diagrams.symmetric import single_thread

F64 = torch.float64
IRS = "0e+1o+2e+3o"


@pytest.fixture(autouse=True)
def _float64_one_thread():
    """mace builds its U matrices in the default dtype; tiny tensors: one thread."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    with single_thread():
        yield
    torch.set_default_dtype(old)


def _irreps(C: int, irs: str) -> o3.Irreps:
    return o3.Irreps("+".join(f"{C}x{ir}" for ir in irs.split("+")))


def _inputs(N, C, E, out_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, C, 16, generator=g, dtype=F64)
    attrs = torch.nn.functional.one_hot(torch.randint(0, E, (N,), generator=g), E).to(F64)
    sc = torch.randn(N, out_dim, generator=g, dtype=F64)
    return x, sc, attrs


@pytest.mark.parametrize("basis", ["full", "independent"])
@pytest.mark.parametrize(
    "corr,outs,use_sc", [(1, "0e+1o", True), (2, "0e+1o+2e", False), (3, "0e+1o+2e+3o", True)]
)
def test_block_mapping_reproduces_mace(basis, corr, outs, use_sc):
    torch.manual_seed(corr)
    C, E = 4, 3
    block = EquivariantProductBasisBlock(
        _irreps(C, IRS), _irreps(C, outs), correlation=corr, num_elements=E, use_sc=use_sc
    )
    fp = fusion_from_mace(block, basis=basis)
    x, sc, attrs = _inputs(30, C, E, fp.irreps_out.dim)
    ref = block(x, sc, attrs)
    out = fp(x, sc, attrs)
    assert (out - ref).abs().max() < 1e-12 * max(1.0, ref.abs().max().item())
    if basis == "full":  # same paths in the same order: weights are copied
        sc_m = block.symmetric_contractions.contractions[0]
        p0, p1 = fp.group_slices[corr - 1]  # (first output irrep, nu = corr)
        torch.testing.assert_close(fp.weight[:, p0:p1], sc_m.weights_max, atol=0, rtol=0)


# (coupling irreps, output irreps, correlations): both parities in the features, outputs
# with no order-1 path (1e, 0o+2o, 0e+1e: issue 18's reproductions), outputs no symmetric
# product reaches (1e from 0e+1o, 0o at nu=3), correlation 1-4.
DROP_IN_GRID = [
    ("0e+1o", "0e+1o", (1, 2, 3, 4)),
    ("0e+1o", "1e", (2,)),
    ("0e+1o", "0o+1e+2e", (3, 4)),
    ("0e+0o+1e+1o", "0e+0o+1e+1o", (2, 3)),
    ("0e+0o+1e+1o", "0o+1e+2o", (4,)),
    ("0e+1o+2e", "0o+2o", (2, 3)),
    ("0e+1o+2e+3o", "0e+1e", (3,)),
]


@pytest.mark.parametrize("reduced", [False, True], ids=["mace-full", "mace-reduced"])
@pytest.mark.parametrize(
    "inputs,outputs,corr",
    [(i, o, c) for i, o, cs in DROP_IN_GRID for c in cs],
    ids=[f"{i}->{o}-nu{c}" for i, o, cs in DROP_IN_GRID for c in cs],
)
def test_drop_in_for_every_irreps_choice(inputs, outputs, corr, reduced):
    """Property: wherever mace-torch's SymmetricContraction builds (full basis, or reduced
    with use_reduced_cg=True), FusionProduct builds too, mace's weights map onto its
    independent basis and both give the same outputs; weights = rank of mace's span."""
    from mace.modules.symmetric_contraction import SymmetricContraction

    torch.manual_seed(corr)
    C, E, N = 2, 2, 9
    mace_sc = SymmetricContraction(
        _irreps(C, inputs), _irreps(C, outputs), correlation=corr, num_elements=E,
        use_reduced_cg=reduced,
    )
    with warnings.catch_warnings(record=True) as caught:  # unreachable: reported, not errors
        warnings.simplefilter("always")
        fp = FusionProduct(_irreps(C, inputs), _irreps(C, outputs), corr, num_elements=E)
    ours = [str(w.message) for w in caught if "FusionProduct" in str(w.message)]
    assert bool(ours) == bool(fp.unreachable_outputs)
    assert all(f" {ir}" in ours[0] for ir in fp.unreachable_outputs)
    map_mace_weights(fp, mace_sc)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, C, o3.Irreps(inputs).dim, generator=g, dtype=F64)
    attrs = torch.nn.functional.one_hot(torch.randint(0, E, (N,), generator=g), E).to(F64)
    ref = mace_sc(x, attrs)
    out = fp.product_basis(x, attrs)
    torch.testing.assert_close(out, ref, atol=1e-11, rtol=1e-11)
    # an unreachable output is zero in mace too; elsewhere our paths are independent
    for (_, ir), sl in zip(fp.irreps_out, fp.irreps_out.slices()):
        assert (str(ir) in fp.unreachable_outputs) == (ref[:, sl].abs().max() < 1e-12)


def test_contraction_only_mapping():
    """Mapping from a bare SymmetricContraction (no linear): compare before the linear."""
    torch.manual_seed(0)
    C, E = 3, 2
    block = EquivariantProductBasisBlock(_irreps(C, IRS), _irreps(C, "0e+1o"), 3, num_elements=E)
    fp = FusionProduct(_irreps(C, IRS), _irreps(C, "0e+1o"), 3, num_elements=E)
    map_mace_weights(fp, block.symmetric_contractions)
    fp.linear.load_state_dict(block.linear.state_dict())
    x, sc, attrs = _inputs(12, C, E, fp.irreps_out.dim, seed=1)
    torch.testing.assert_close(fp(x, sc, attrs), block(x, sc, attrs), atol=1e-12, rtol=1e-12)


def test_vertex_weights_refuse_mapping():
    C = 2
    block = EquivariantProductBasisBlock(_irreps(C, IRS), _irreps(C, "0e"), 2, num_elements=1)
    fp = FusionProduct(_irreps(C, IRS), _irreps(C, "0e"), 2, num_elements=1, weights="vertex")
    with pytest.raises(ValueError, match="weights='path'"):
        map_mace_weights(fp, block)


def _tiny_mace(num_channels=4, correlation=3, hidden=None, max_ell=3):
    hidden = hidden or f"{num_channels}x0e+{num_channels}x1o"
    return modules.ScaleShiftMACE(
        r_max=4.0,
        num_bessel=4,
        num_polynomial_cutoff=5,
        max_ell=max_ell,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=2,
        num_elements=3,
        hidden_irreps=o3.Irreps(hidden),
        MLP_irreps=o3.Irreps("4x0e"),
        atomic_energies=np.array([-1.0, -2.0, -3.0]),
        avg_num_neighbors=3.0,
        atomic_numbers=[1, 6, 8],
        correlation=correlation,
        gate=torch.nn.functional.silu,
        radial_MLP=[8, 8],
        use_reduced_cg=False,
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )


def _batch(seed=0):
    """Two small molecules in mace-torch's batch layout (all pairs within r_max)."""
    g = torch.Generator().manual_seed(seed)
    n_atoms = [4, 3]
    pos = torch.randn(sum(n_atoms), 3, generator=g, dtype=F64) * 1.2
    species = torch.randint(0, 3, (sum(n_atoms),), generator=g)
    batch = torch.repeat_interleave(torch.arange(2), torch.tensor(n_atoms))
    snd, rcv = [], []
    start = 0
    for n in n_atoms:
        for i in range(start, start + n):
            for j in range(start, start + n):
                if i != j:
                    snd.append(i)
                    rcv.append(j)
        start += n
    E_ = len(snd)
    return {
        "positions": pos,
        "node_attrs": torch.nn.functional.one_hot(species, 3).to(F64),
        "edge_index": torch.tensor([snd, rcv]),
        "shifts": torch.zeros(E_, 3, dtype=F64),
        "unit_shifts": torch.zeros(E_, 3, dtype=F64),
        "cell": torch.zeros(6, 3, dtype=F64),
        "batch": batch,
        "ptr": torch.tensor([0, n_atoms[0], sum(n_atoms)]),
        "head": torch.zeros(2, dtype=torch.long),
    }


def test_replace_products_whole_model():
    torch.manual_seed(0)
    model = _tiny_mace()
    data = _batch()
    ref = model(dict(data), training=False, compute_force=True)
    n_before = sum(p.numel() for p in model.parameters())
    replace_products(model, map_weights=True, basis="independent")
    assert all(isinstance(p, FusionProduct) for p in model.products)
    out = model(dict(data), training=False, compute_force=True)
    torch.testing.assert_close(out["energy"], ref["energy"], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out["forces"], ref["forces"], atol=1e-10, rtol=1e-10)
    n_after = sum(p.numel() for p in model.parameters())
    print(f"\ntiny MACE parameters: mace products {n_before}, fusion products {n_after}")
    assert n_after < n_before
    # training-style call (create_graph for forces) runs and backpropagates to the weights
    out = model(dict(data), training=True, compute_force=True)
    (out["energy"].sum() + out["forces"].pow(2).sum()).backward()
    assert model.products[0].weight.grad is not None


@pytest.mark.parametrize(
    "hidden,max_ell",
    [("3x0e+3x1o+3x1e", 2), ("3x0e+3x0o+3x1o", 1)],
    ids=["hidden-1e", "hidden-0o"],
)
def test_replace_products_other_hidden_irreps(hidden, max_ell):
    """Hidden irreps with 1e or 0o (outputs without order-1 paths; with 0o mace couples
    both parities): replace_products with mapped weights gives mace's energies and forces."""
    torch.manual_seed(0)
    model = _tiny_mace(hidden=hidden, max_ell=max_ell)
    data = _batch(2)
    ref = model(dict(data), training=False, compute_force=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0o: unreachable at some orders, reported
        replace_products(model, map_weights=True)
    out = model(dict(data), training=False, compute_force=True)
    assert ref["forces"].abs().max() > 1e-6
    torch.testing.assert_close(out["energy"], ref["energy"], atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(out["forces"], ref["forces"], atol=1e-10, rtol=1e-10)


def test_replace_products_fresh_vertex():
    torch.manual_seed(0)
    model = replace_products(_tiny_mace(correlation=2), weights="vertex")
    assert all(p.weights_kind == "vertex" for p in model.products)
    out = model(_batch(1), training=False, compute_force=True)
    assert torch.isfinite(out["energy"]).all() and torch.isfinite(out["forces"]).all()
