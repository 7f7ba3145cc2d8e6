"""The mace/fusion* variants: symmetry, forces, widths and parameter counts, baseline match.

Small float64 models; each is built once per module (building is the slow part: e3nn
code generation), so the tests below only run forwards.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3

import fusion._mace_first  # noqa: F401  (mace before e3nn)
from fusion.blocks.fusion_block import FusionBlock
from fusion.blocks.mace_compat import map_mace_weights
from fusion.models import mace_fusion as mf
from fusion.models.mace import MaceEnergyModel
from fusion.models.registry import ModelStats, build_model, count_parameters, model_names

STATS = ModelStats(elements=(1, 6, 8), atomic_energies=np.zeros(3), avg_num_neighbors=3.0)
# max_L 1 (the paper's hidden irreps 0e+1o, shrunk) and max_L 0 (the CPU demo's, shrunk)
SMALL = {
    "num_channels": 8,
    "max_L": 1,
    "max_ell": 2,
    "correlation": 3,
    "num_interactions": 2,
    "radial_MLP": [8],
}
SCALAR = {**SMALL, "max_L": 0}
THREE_BODY = {"fusion_radial_MLP": [8]}
VARIANTS = tuple(mf.VARIANTS)


def _hp(variant: str, base: dict) -> dict:
    return {**base, **(THREE_BODY if variant == "fusion-3body" else {})}


@pytest.fixture(scope="module")
def models() -> dict:
    """(config, variant) -> model, float64, auto width (built once)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        out = {}
        for name, base, variants in (
            ("SMALL", SMALL, ("baseline", *VARIANTS)),
            ("SCALAR", SCALAR, ("baseline", "fusion-vertex", "fusion-3body")),
        ):
            for v in variants:
                out[name, v] = build_model("mace", v, _hp(v, base), STATS).eval()
        return out
    finally:
        torch.set_default_dtype(old)


# A methanol-like molecule (C, O, 3 H on C... shortened to 5 atoms) and a water.
MOLECULES = [
    ([6, 8, 1, 1, 1], [[0.0, 0, 0], [1.42, 0.05, 0], [-0.36, 1.03, 0.1], [-0.4, -0.5, 0.9],
                       [1.7, -0.8, -0.3]]),
    ([8, 1, 1], [[0.0, 0, 0], [0.96, 0.0, 0.1], [-0.24, 0.93, 0.0]]),
]  # fmt: skip


def make_batch(molecules=MOLECULES, r_max: float = 5.0) -> dict:
    """mace-torch's batch layout for ``[(Z list, positions), ...]`` (all pairs within r_max)."""
    zs, pos, graph, edges, ptr = [], [], [], [], [0]
    for b, (z, p) in enumerate(molecules):
        n0, p = ptr[-1], torch.tensor(p, dtype=torch.float64)
        d = torch.cdist(p, p)
        i, j = torch.nonzero((d < r_max) & (d > 0), as_tuple=True)
        edges.append(torch.stack([i, j]) + n0)
        zs += z
        pos.append(p)
        graph += [b] * len(z)
        ptr.append(n0 + len(z))
    elements = list(STATS.elements)
    onehot = torch.zeros(len(zs), len(elements))
    onehot[torch.arange(len(zs)), torch.tensor([elements.index(z) for z in zs])] = 1.0
    edge_index = torch.cat(edges, dim=1)
    n_e = edge_index.shape[1]
    return {
        "positions": torch.cat(pos),
        "node_attrs": onehot,
        "edge_index": edge_index,
        "shifts": torch.zeros(n_e, 3),
        "unit_shifts": torch.zeros(n_e, 3),
        "cell": torch.zeros(3 * len(molecules), 3),
        "batch": torch.tensor(graph),
        "ptr": torch.tensor(ptr),
        "head": torch.zeros(len(molecules), dtype=torch.long),
    }


def run(model, batch, forces=True):
    batch = {k: v.clone() for k, v in batch.items()}
    out = model(batch, compute_forces=forces)
    return out["energy"].detach(), (out["forces"].detach() if forces else None)


ALL = [("SMALL", v) for v in ("baseline", *VARIANTS)] + [
    ("SCALAR", v) for v in ("baseline", "fusion-vertex", "fusion-3body")
]


def test_variants_are_registered():
    assert set(VARIANTS) <= set(model_names()["mace"])
    assert VARIANTS == ("fusion", "fusion-vertex", "fusion-3body")


@pytest.mark.parametrize("key", ALL, ids=["-".join(k) for k in ALL])
def test_energy_invariant_forces_equivariant_under_o3_and_permutation(models, key):
    model = models[key]
    batch = make_batch()
    energy, forces = run(model, batch)
    assert energy.shape == (2,) and forces.shape == (8, 3)
    assert forces.abs().max() > 1e-3  # not trivially zero
    torch.manual_seed(1)
    for R in (o3.rand_matrix(), -o3.rand_matrix()):  # rotation; rotation times inversion
        moved = dict(batch, positions=batch["positions"] @ R.T + torch.tensor([0.4, -1.0, 2.0]))
        e2, f2 = run(model, moved)
        assert (e2 - energy).abs().max() < 1e-10
        assert (f2 - forces @ R.T).abs().max() < 1e-10
    # permute atoms within each molecule and shuffle the edge list
    perm = torch.tensor([3, 0, 4, 2, 1, 7, 5, 6])  # new atom k is old atom perm[k]
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(8)
    shuffle = torch.randperm(batch["edge_index"].shape[1])
    permuted = dict(
        batch,
        positions=batch["positions"][perm],
        node_attrs=batch["node_attrs"][perm],
        batch=batch["batch"][perm],
        edge_index=inv[batch["edge_index"]][:, shuffle],
    )
    e3, f3 = run(model, permuted)
    assert (e3 - energy).abs().max() < 1e-10
    assert (f3 - forces[perm]).abs().max() < 1e-10


@pytest.mark.parametrize("variant", VARIANTS)
def test_forces_are_central_differences_of_the_energy(models, variant):
    model = models["SMALL", variant]
    batch = make_batch(MOLECULES[:1])
    _, forces = run(model, batch)
    h = 1e-5
    fd = torch.zeros_like(forces)
    for a in range(forces.shape[0]):
        for k in range(3):
            plus, minus = dict(batch), dict(batch)
            plus["positions"] = batch["positions"].clone()
            minus["positions"] = batch["positions"].clone()
            plus["positions"][a, k] += h
            minus["positions"][a, k] -= h
            e_plus, _ = run(model, plus, forces=False)
            e_minus, _ = run(model, minus, forces=False)
            fd[a, k] = -(e_plus - e_minus).sum() / (2 * h)
    assert (fd - forces).abs().max() < 1e-7 * max(1.0, float(forces.abs().max()))


@pytest.mark.parametrize("key", ALL, ids=["-".join(k) for k in ALL])
def test_parameter_counts_are_predicted_and_within_the_baseline(models, key):
    config, variant = key
    base = SMALL if config == "SMALL" else SCALAR
    model = models[key]
    n = count_parameters(model)
    if variant == "baseline":
        assert mf.param_count("baseline", base, STATS, base["num_channels"]) == n
        return
    hp = _hp(variant, base)
    info = model.fusion_info
    C, n_pred, n_base = mf.choose_width(variant, hp, STATS)
    assert info["num_channels"] == C and info["n_params"] == n == n_pred
    assert info["n_params_baseline"] == n_base == count_parameters(models[config, "baseline"])
    assert info["width"] == "auto" and info["num_channels_baseline"] == base["num_channels"]
    assert n <= n_base < mf.param_count(variant, hp, STATS, C + 1)  # the largest that fits


def test_widths_move_the_right_way():
    # fusion saves product weights (wider or equal); the 3-body block costs width
    for base in (SMALL, SCALAR):
        C0 = base["num_channels"]
        assert mf.choose_width("fusion", base, STATS)[0] >= C0
        assert mf.choose_width("fusion-vertex", base, STATS)[0] >= C0
        assert mf.choose_width("fusion-3body", _hp("fusion-3body", base), STATS)[0] < C0


def test_fusion_at_baseline_width_reproduces_the_baseline(models):
    baseline = models["SMALL", "baseline"]
    torch.manual_seed(2)
    model = build_model("mace", "fusion", {**SMALL, "fusion_num_channels": 8}, STATS).eval()
    assert model.fusion_info["width"] == "fixed" and model.fusion_info["num_channels"] == 8
    assert model.fusion_info["n_params"] == count_parameters(model) < count_parameters(baseline)
    missing, unexpected = model.mace.load_state_dict(baseline.mace.state_dict(), strict=False)
    assert all(k.startswith("products.") for k in missing + unexpected)
    for fp, block in zip(model.mace.products, baseline.mace.products):
        map_mace_weights(fp, block)  # independent basis: least-squares map, exact
    batch = make_batch()
    e_ref, f_ref = run(baseline, batch)
    energy, forces = run(model, batch)
    assert (energy - e_ref).abs().max() < 1e-10
    assert (forces - f_ref).abs().max() < 1e-10


def test_fast_paths_reproduce_mace_torch_in_float32():
    """What the trainer runs (FusionProduct's fast kernel, FusionConv) against mace-torch's own
    code path (e3nn interaction, mace's product), float32, mapped weights: energies and
    forces agree to 1e-5 (relative to their scale)."""
    torch.manual_seed(2)
    baseline = build_model("mace", "baseline", {**SMALL, "interaction_kernel": "e3nn"}, STATS)
    model = build_model("mace", "fusion", {**SMALL, "fusion_num_channels": 8}, STATS)
    assert any(type(m).__name__ == "FusionConv" for m in model.modules())
    missing, unexpected = model.mace.load_state_dict(baseline.mace.state_dict(), strict=False)
    assert all(k.startswith("products.") for k in missing + unexpected)
    for fp, block in zip(model.mace.products, baseline.mace.products):
        map_mace_weights(fp, block)
    baseline, model = baseline.float().eval(), model.float().eval()
    batch = {k: v.float() if v.is_floating_point() else v for k, v in make_batch().items()}
    e_ref, f_ref = run(baseline, batch)
    energy, forces = run(model, batch)
    assert energy.dtype == torch.float32 and f_ref.abs().max() > 1e-3
    assert (energy - e_ref).abs().max() < 1e-5 * max(1.0, e_ref.abs().max().item())
    assert (forces - f_ref).abs().max() < 1e-5 * max(1.0, f_ref.abs().max().item())


def test_three_body_model_without_its_extra_terms_is_the_mace_forward(models):
    """MaceFusion3Body re-implements ScaleShiftMACE.forward; with zero 3-body weights it must
    give exactly the wrapped mace model's energies and forces."""
    model = models["SMALL", "fusion-3body"]
    assert isinstance(model, mf.MaceFusion3Body)
    batch = make_batch()
    energy, _ = run(model, batch)
    weights = [block.fusion.fusion.weight for block in model.extra]
    saved = [w.detach().clone() for w in weights]
    try:
        with torch.no_grad():
            for w in weights:
                w.zero_()
        e0, f0 = run(model, batch)
        e_ref, f_ref = run(MaceEnergyModel(model.mace).eval(), batch)
    finally:
        with torch.no_grad():
            for w, s in zip(weights, saved):
                w.copy_(s)
    assert (e0 - e_ref).abs().max() < 1e-12 and (f0 - f_ref).abs().max() < 1e-12
    assert (energy - e_ref).abs().max() > 1e-6  # the 3-body term does contribute


def test_three_body_blocks_use_sparse_contraction_with_the_same_function(models):
    """mace/fusion-3body's blocks contract sparsely (fast per edge); "sparse" and "auto"
    give the same block (same symmetrised paths, same numbers)."""
    model = models["SMALL", "fusion-3body"]
    for block in model.extra:
        assert {ins.strategy for ins in block.fusion.fusion.instructions} == {"sparse"}
        assert block.fusion.basis == "independent"
    blocks = []
    for strategy in ("auto", "sparse"):
        torch.manual_seed(3)
        blocks.append(FusionBlock("0e+1o", "0e+1o", channels=3, nu=3, mode="exact", lmax_sh=2,
                                  num_species=2, radial_mlp=[4], strategy=strategy))
    assert "dense" in {ins.strategy for ins in blocks[0].fusion.fusion.instructions}
    assert blocks[0].fusion.fusion.paths == blocks[1].fusion.fusion.paths
    h = torch.randn(4, 12)
    pos = torch.randn(4, 3)
    edge_index = torch.tensor([[0, 0, 1, 2, 3, 3], [1, 2, 0, 3, 0, 1]])
    species = torch.tensor([0, 1, 1, 0])
    ref, out = (b(h, edge_index, species, positions=pos) for b in blocks)
    assert ref.abs().max() > 1e-3 and (out - ref).abs().max() < 1e-12


def test_training_mode_forces_have_second_derivatives(models):
    model = models["SMALL", "fusion-3body"].train()
    try:
        batch = make_batch()
        out = model(batch, compute_forces=True)
        loss = out["energy"].square().sum() + out["forces"].square().sum()
        loss.backward()
        block = model.extra[0].message.radial_mlp
        grads = [p.grad for p in block.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
    finally:
        model.eval().zero_grad(set_to_none=True)


def test_unknown_or_bad_hyperparameters_are_named():
    with pytest.raises(
        ValueError,
        match=r"unknown hyperparameter\(s\) \['fusion_L_int'\] for "
        r"mace/fusion; valid keys: \[.*'fusion_num_channels'.*'num_channels'",
    ):
        build_model("mace", "fusion", {"fusion_L_int": 2}, STATS)
    with pytest.raises(
        ValueError,
        match=r"\['num_channel'\] for mace/fusion-3body; valid keys: "
        r"\[.*'fusion_L_int', 'fusion_lmax_sh', 'fusion_num_channels'",
    ):
        build_model("mace", "fusion-3body", {"num_channel": 8}, STATS)
    with pytest.raises(ValueError, match="fusion_num_channels must be a positive integer"):
        mf.choose_width("fusion", {"fusion_num_channels": 0}, STATS)
    with pytest.raises(ValueError, match="fusion_radial_MLP must be a list"):
        mf.split_hparams("fusion-3body", {"fusion_radial_MLP": 16})
    with pytest.raises(KeyError, match="valid: fusion, fusion-3body, fusion-vertex"):
        mf.choose_width("fusoin", {}, STATS)


def test_reduced_basis_baseline_is_predicted_and_is_the_budget():
    """mace/baseline with use_reduced_cg (mace's cuequivariance basis, the paper config's
    anchor): the closed-form count matches the built model, and mace/fusion, whose
    independent basis has as many weights, gets no extra width from it."""
    hp = {**SMALL, "use_reduced_cg": True}
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        baseline = build_model("mace", "baseline", hp, STATS)
    finally:
        torch.set_default_dtype(old)
    reduced = baseline.mace.products[0].symmetric_contractions.contractions[0]
    assert reduced.U_matrix_3.shape[-1] < mf.param_count("baseline", SMALL, STATS, 8)
    n = count_parameters(baseline)
    assert mf.param_count("baseline", hp, STATS, 8) == n
    assert n < mf.param_count("baseline", SMALL, STATS, 8)  # the reduced basis is smaller
    C, n_fusion, n_base = mf.choose_width("fusion", hp, STATS)
    assert n_base == n and n_fusion <= n
    assert C == 8  # same product weights as the reduced basis: the width cannot grow
    assert mf.choose_width("fusion", SMALL, STATS)[0] > 8  # against the full basis it does


def test_correlation_4_baseline_count_uses_maces_filter():
    """mace's full basis filters labels at correlation 4 (natural parity), our independent
    basis does not: the closed-form baseline count must follow mace (0e+1o: 9 order-4 chain
    paths into 0e with the filter, 10 without)."""
    hp = {"num_channels": 4, "max_L": 1, "max_ell": 1, "correlation": 4, "radial_MLP": [8]}
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        baseline = build_model("mace", "baseline", hp, STATS)
        fusion = build_model("mace", "fusion", hp, STATS)  # raises if its count is off
    finally:
        torch.set_default_dtype(old)
    assert mf.param_count("baseline", hp, STATS, 4) == count_parameters(baseline)
    assert fusion.fusion_info["n_params_baseline"] == count_parameters(baseline)
