"""cormorant/baseline and cormorant/fusion: symmetries, forces, parameter counts, bad input.

Small models (3 channels, maxl 2) keep every test to seconds; float64 (conftest fixture).
"""

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from e3nn import o3

from fusion.cli import main as cli_main
from fusion.models.cormorant import CORMORANT_DEFAULTS, Cormorant
from fusion.models.registry import ModelStats, build_model, count_parameters

ROOT = Path(__file__).resolve().parents[2]
REFERENCE_PARAMS = 211_452  # the reference implementation's default QM9 model
SMALL = {
    "num_cg_levels": 3,
    "maxl": 2,
    "max_sh": 2,
    "num_channels": 3,
    "r_max": 3.0,
    "soft_cut_rad": 2.5,
    "soft_cut_width": 0.3,
    "readout_hidden": 16,
}
SMALL_FUSION = {**SMALL, "fusion_lmax_sh": 1, "fusion_L_int": 1}
ELEMENTS = (1, 6, 8)


def _stats() -> ModelStats:
    return ModelStats(
        elements=ELEMENTS,
        atomic_energies=np.array([-13.6, -1029.8, -2041.3]),
        avg_num_neighbors=3.0,
        scale=0.5,
    )


def _batch(positions: torch.Tensor, species: list[int], r_max: float = 3.0) -> dict:
    """One molecule in GraphLoader's layout; edges = all pairs closer than r_max."""
    n = positions.shape[0]
    d = torch.cdist(positions, positions)
    sender, receiver = torch.nonzero((d < r_max) & ~torch.eye(n, dtype=torch.bool), as_tuple=True)
    node_attrs = torch.zeros(n, len(ELEMENTS))
    node_attrs[torch.arange(n), torch.tensor(species)] = 1.0
    return {
        "positions": positions,
        "node_attrs": node_attrs,
        "edge_index": torch.stack([sender, receiver]),
        "batch": torch.zeros(n, dtype=torch.long),
        "ptr": torch.tensor([0, n]),
    }


def _molecule(seed: int = 0, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    positions = torch.randn(n, 3, generator=g) * 0.9
    species = [int(s) for s in torch.randint(0, len(ELEMENTS), (n,), generator=g)]
    return positions, species


def _model(variant: str = "baseline", hparams: dict | None = None):
    torch.manual_seed(0)
    hp = hparams if hparams is not None else (SMALL if variant == "baseline" else SMALL_FUSION)
    model = build_model("cormorant", variant, hp, _stats())
    return model.eval()


@pytest.mark.parametrize("variant", ["baseline", "fusion"])
def test_energy_invariant_under_rotation_inversion_permutation(variant):
    model = _model(variant)
    pos, species = _molecule()
    e = model(_batch(pos, species))["energy"]
    rot = o3.rand_matrix()
    for name, new_pos in (("rotation", pos @ rot.T), ("inversion", -pos),
                          ("rotoinversion", -pos @ rot.T), ("translation", pos + 1.7)):
        e2 = model(_batch(new_pos, species))["energy"]
        assert torch.allclose(e, e2, atol=1e-10, rtol=1e-12), name
    perm = torch.randperm(pos.shape[0])
    e3 = model(_batch(pos[perm], [species[i] for i in perm]))["energy"]
    assert torch.allclose(e, e3, atol=1e-10, rtol=1e-12)
    # a different geometry gives a different energy (the check above can fail)
    e4 = model(_batch(pos * 1.05, species))["energy"]
    assert (e - e4).abs().item() > 1e-6


@pytest.mark.parametrize("variant", ["baseline", "fusion"])
def test_every_level_is_equivariant(variant):
    """F^s(g x) = D^s(g) F^s(x) per irrep, for a rotation with inversion (det -1)."""
    model = _model(variant)
    pos, species = _molecule(1)
    g = -o3.rand_matrix()
    feats = model.features(_batch(pos, species), pos)
    feats_g = model.features(_batch(pos @ g.T, species), pos @ g.T)
    assert len(feats) == SMALL["num_cg_levels"] + 1
    seen = set()
    for irreps, f, fg in zip(model.irreps_levels, feats, feats_g):
        start = 0
        for _, ir in irreps:
            block, block_g = f[start : start + ir.dim], fg[start : start + ir.dim]  # [d, N, C]
            expected = torch.einsum("ij,jnc->inc", ir.D_from_matrix(g), block)
            assert torch.allclose(block_g, expected, atol=1e-9), (str(irreps), str(ir))
            assert block.abs().max() > 1e-6, f"{ir} is identically zero"
            seen.add(ir)
            start += ir.dim
    # both parities of l = 1 occur and a pseudo-scalar appears by the third level
    assert {o3.Irrep("1o"), o3.Irrep("1e"), o3.Irrep("0o")} <= seen


def test_forces_are_minus_gradient_of_energy():
    model = _model()
    pos, species = _molecule(2)
    out = model(_batch(pos, species), compute_forces=True)
    forces = out["forces"]
    assert forces.shape == pos.shape
    eps = 1e-5
    for atom, axis in ((0, 0), (3, 2), (5, 1)):
        plus, minus = pos.clone(), pos.clone()
        plus[atom, axis] += eps
        minus[atom, axis] -= eps
        de = model(_batch(plus, species))["energy"] - model(_batch(minus, species))["energy"]
        assert torch.allclose(-de / (2 * eps), forces[atom, axis], atol=1e-6)
    # translation invariance: forces sum to zero
    assert torch.allclose(forces.sum(0), torch.zeros(3), atol=1e-9)


def test_energy_is_composition_plus_scaled_residual():
    """With the readout's last layer zeroed the energy is the composition energy."""
    model = _model()
    with torch.no_grad():
        model.readout[-1].weight.zero_()
        model.readout[-1].bias.fill_(2.0)
    pos, species = _molecule(3)
    e = model(_batch(pos, species))["energy"]
    e0 = _stats().atomic_energies[species].sum()
    n = len(species)
    assert torch.allclose(e, torch.tensor([e0 + 0.5 * 2.0 * n]), atol=1e-9)


def _cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["params", "--model", "cormorant", *args]) == 0
    return out.getvalue().strip()


def test_default_parameter_count_printed_by_cli_and_documented():
    n = int(_cli("--variant", "baseline"))
    assert abs(n - REFERENCE_PARAMS) <= 0.05 * REFERENCE_PARAMS
    doc = (ROOT / "docs" / "cormorant.md").read_text()
    documented = re.search(r"cormorant/baseline[^\n]*?\*\*([\d,]+)\*\* parameters", doc)
    assert documented is not None, "docs/cormorant.md must state the default parameter count"
    assert int(documented.group(1).replace(",", "")) == n
    stats = ModelStats(elements=(1, 6, 7, 8, 9), atomic_energies=np.zeros(5),
                       avg_num_neighbors=10.0)
    assert count_parameters(build_model("cormorant", "baseline", {}, stats)) == n


def test_fusion_has_no_more_parameters_than_baseline():
    n_base = int(_cli("--variant", "baseline"))
    n_fusion = int(_cli("--variant", "fusion"))
    assert n_fusion <= n_base
    model = _model("fusion")
    info = model.fusion_info
    assert info["n_params"] == count_parameters(model) <= info["n_params_baseline"]
    assert info["n_params_baseline"] == count_parameters(_model("baseline"))
    assert info["width"] == "auto" and 1 <= info["num_channels"] <= SMALL["num_channels"]
    # the next width up would exceed the baseline: the width is the largest that fits
    wider = _model("fusion", {**SMALL_FUSION, "fusion_num_channels": info["num_channels"] + 1})
    assert count_parameters(wider) > info["n_params_baseline"]
    assert len(model.extra_terms) == SMALL["num_cg_levels"]


def test_ordered_square_adds_only_duplicate_channels():
    """Cormorant's ordered (l1, l2) square has more mixing weights than the unordered one,
    same features otherwise (same irreps per level)."""
    a = _model("baseline", SMALL)
    b = _model("baseline", {**SMALL, "square_pairs": "unordered"})
    assert count_parameters(a) > count_parameters(b)
    assert [str(x) for x in a.irreps_levels] == [str(x) for x in b.irreps_levels]


@pytest.mark.parametrize(
    "hparams, match",
    [
        ({"num_chanels": 4}, r"unknown hyperparameter\(s\) \['num_chanels'\].*valid keys"),
        ({"maxl": -1}, "maxl must be an integer >= 0"),
        ({"num_channels": 2.5}, "num_channels must be an integer >= 1"),
        ({"parity": "odd"}, "parity must be 'both' or 'natural'"),
        ({"r_max": 0}, "r_max must be a positive number"),
        ({"activation": "tanh"}, "activation must be one of"),
        ({"fusion_lmax_sh": 1}, r"unknown hyperparameter\(s\) \['fusion_lmax_sh'\]"),
    ],
)
def test_bad_hparams_raise_clear_errors(hparams, match):
    with pytest.raises(ValueError, match=match):
        build_model("cormorant", "baseline", hparams, _stats())


def test_bad_fusion_hparams_raise_clear_errors():
    with pytest.raises(ValueError, match="fusion_radial_MLP must be a list"):
        build_model("cormorant", "fusion", {"fusion_radial_MLP": 16}, _stats())
    with pytest.raises(ValueError, match=r"valid keys: \[.*'fusion_L_int'"):
        build_model("cormorant", "fusion", {"bogus": 1}, _stats())


def test_defaults_are_the_published_architecture():
    d = CORMORANT_DEFAULTS
    assert (d["num_cg_levels"], d["maxl"], d["max_sh"], d["num_channels"]) == (4, 3, 3, 10)
    assert d["charge_power"] == 2
    stats = ModelStats(elements=(1, 6, 7, 8, 9), atomic_energies=np.zeros(5),
                       avg_num_neighbors=2.0)
    model = Cormorant({**d}, stats)
    assert len(model.levels) == 4
    assert str(model.irreps_levels[-1]) == "10x0e+10x0o+10x1o+10x1e+10x2e+10x2o+10x3o+10x3e"
