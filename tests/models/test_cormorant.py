"""cormorant/*: the reference's parametrisation (parameter counts, weights from the reference
reproduce its outputs), symmetries, forces, smoothness, the fusion term and its control.

Small models keep every test to seconds; float64 (conftest fixture).
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
from fusion.models.cormorant import CORMORANT_DEFAULTS, Cormorant, pad_batch
from fusion.models.cormorant.convert import load_reference_state_dict, reference_key
from fusion.models.registry import ModelStats, build_model, count_parameters

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "data" / "cormorant_reference.pt"
QM9_ELEMENTS = (1, 6, 7, 8, 9)
SMALL = {"num_cg_levels": 2, "maxl": 2, "max_sh": 2, "num_channels": 3}
SMALL_FUSION = {**SMALL, "fusion_lmax_sh": 1, "fusion_L_int": 1}
ELEMENTS = (1, 6, 8)


def _stats(elements=ELEMENTS) -> ModelStats:
    return ModelStats(elements=elements, atomic_energies=np.linspace(-13.6, -2041.3, len(elements)),
                      avg_num_neighbors=3.0, scale=0.5)


def _batch(positions_list, species_list, elements=ELEMENTS) -> dict:
    """Molecules in GraphLoader's layout (edges are not used by cormorant/*)."""
    n = [p.shape[0] for p in positions_list]
    species = torch.cat([torch.as_tensor(s) for s in species_list])
    node_attrs = torch.zeros(len(species), len(elements))
    node_attrs[torch.arange(len(species)), species] = 1.0
    return {
        "positions": torch.cat(positions_list),
        "node_attrs": node_attrs,
        "edge_index": torch.zeros(2, 0, dtype=torch.long),
        "batch": torch.repeat_interleave(torch.arange(len(n)), torch.tensor(n)),
        "ptr": torch.tensor([0, *np.cumsum(n).tolist()]),
    }


def _molecule(seed: int = 0, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    positions = torch.randn(n, 3, generator=g) * 0.9
    species = [int(s) for s in torch.randint(0, len(ELEMENTS), (n,), generator=g)]
    return positions, species


def _model(variant: str = "baseline", hparams: dict | None = None):
    torch.manual_seed(0)
    hp = hparams if hparams is not None else (SMALL if variant == "baseline" else SMALL_FUSION)
    return build_model("cormorant", variant, hp, _stats()).eval()


# ------------------------------------------------------------------ the reference's model
def test_weights_from_the_reference_reproduce_its_outputs():
    """Fixture from benchmarks/make_cormorant_fixture.py: the reference's CormorantQM9
    (defaults, float64) with its weights, ten QM9 molecules and its outputs."""
    fx = torch.load(FIXTURE, weights_only=True)
    assert fx["reference"].startswith("risilab/cormorant@6a4b637")
    stats = _stats(tuple(fx["elements"]))
    model = build_model("cormorant", "baseline", {}, stats).eval()
    load_reference_state_dict(model, fx["state_dict"])
    batch = _batch(fx["positions"], [
        [fx["elements"].index(int(z)) for z in zs] for zs in fx["z"]], tuple(fx["elements"]))
    pos, onehot, mask, _ = pad_batch(batch, batch["positions"])
    y = model.predict(pos, onehot, mask)
    expected = fx["prediction"]
    assert y.shape == expected.shape == (10,)
    rel = ((y - expected).abs() / expected.abs()).max().item()
    assert rel < 1e-5, rel
    # the energy is the composition energy plus scale times the prediction
    energy = model(batch)["energy"]
    e0 = torch.tensor([stats.atomic_energies[
        [fx["elements"].index(int(z)) for z in zs]].sum() for zs in fx["z"]])
    assert torch.allclose(energy, e0 + stats.scale * expected, rtol=1e-10, atol=1e-8)
    # random weights do not (the comparison above can fail)
    torch.manual_seed(1)
    other = build_model("cormorant", "baseline", {}, stats).eval()
    assert ((other.predict(pos, onehot, mask) - expected).abs() / expected.abs()).max() > 1e-3


def test_parameter_counts_per_component_equal_the_reference():
    stats = _stats(QM9_ELEMENTS)
    model = build_model("cormorant", "baseline", {}, stats)

    def n(module):
        return sum(p.numel() for p in module.parameters())

    assert n(model.radial) == 64
    assert n(model.input_mpnn) == 13_587
    assert n(model.edge_levels) + n(model.atom_levels) == 61_800
    assert n(model.output) == 136_001
    assert count_parameters(model) == 211_452
    # every parameter has a reference counterpart, one to one
    fx = torch.load(FIXTURE, weights_only=True)
    assert sorted(reference_key(k) for k in fx["state_dict"]) == sorted(
        k for k, _ in model.named_parameters())


def test_converter_rejects_mismatched_weights():
    fx = torch.load(FIXTURE, weights_only=True)
    small = build_model("cormorant", "baseline", SMALL, _stats(QM9_ELEMENTS))
    with pytest.raises(ValueError, match="shape|lacks"):
        load_reference_state_dict(small, fx["state_dict"])
    with pytest.raises(KeyError, match="no counterpart"):
        reference_key("cormorant_cg.bogus.weight")


def _cli(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["params", "--model", "cormorant", *args]) == 0
    return out.getvalue().strip()


def test_default_parameter_count_printed_by_cli_and_documented():
    n = int(_cli("--variant", "baseline"))
    assert n == 211_452
    doc = (ROOT / "docs" / "cormorant.md").read_text()
    documented = re.search(r"cormorant/baseline[^\n]*?\*\*([\d,]+)\*\* parameters", doc)
    assert documented is not None, "docs/cormorant.md must state the default parameter count"
    assert int(documented.group(1).replace(",", "")) == n


def test_defaults_are_the_reference_command_line_defaults():
    d = CORMORANT_DEFAULTS
    assert (d["num_cg_levels"], d["maxl"], d["max_sh"], d["num_channels"]) == (4, 3, 3, 10)
    assert (d["charge_power"], d["r_max"], d["soft_cut_rad"], d["soft_cut_width"]) == (
        2, 1.73, 1.73, 0.2)
    assert (d["basis_trig"], d["basis_pow"], d["level_gain"]) == (3, 3, 10.0)
    model = Cormorant({**d}, _stats(QM9_ELEMENTS))
    assert model.degrees == [(0, 1, 2, 3)] * 4


# ------------------------------------------------------------------ symmetries, forces
@pytest.mark.parametrize("variant", ["baseline", "fusion"])
def test_energy_invariant_under_rotation_translation_permutation(variant):
    model = _model(variant)
    pos, species = _molecule()
    e = model(_batch([pos], [species]))["energy"]
    rot = o3.rand_matrix()
    for name, new_pos in (("rotation", pos @ rot.T), ("translation", pos + 1.7)):
        e2 = model(_batch([new_pos], [species]))["energy"]
        assert torch.allclose(e, e2, atol=1e-10, rtol=1e-12), name
    perm = torch.randperm(pos.shape[0])
    e3 = model(_batch([pos[perm]], [[species[i] for i in perm]]))["energy"]
    assert torch.allclose(e, e3, atol=1e-10, rtol=1e-12)
    e4 = model(_batch([pos * 1.05], [species]))["energy"]
    assert (e - e4).abs().item() > 1e-6


def test_features_transform_with_the_complex_wigner_d():
    """F^s(R x) = D(R) F^s(x) per degree, D the Wigner-D of the complex basis (built here from
    the l = 1 solid harmonics' transformation), for every level."""
    from fusion.models.cormorant.so3 import solid_harmonics

    model = _model()
    pos, species = _molecule(1)
    rot = o3.rand_matrix()
    # D_l(R) from Y_l(R r) = D_l Y_l(r), fitted on random points (exact for polynomials)
    pts = torch.randn(40, 3)
    Y = solid_harmonics(pts, 2)
    Yr = solid_harmonics(pts @ rot.T, 2)
    D = {l: torch.linalg.lstsq(Y[l], Yr[l]).solution.T for l in range(3)}
    batch = _batch([pos], [species])
    p, oh, m, _ = pad_batch(batch, batch["positions"])
    _, levels = model.features(p, oh, m)
    _, levels_r = model.features(p @ rot.T, oh, m)
    for lev, lev_r in zip(levels, levels_r):
        for l, f in lev.items():
            assert f.abs().max() > 1e-6
            assert torch.allclose(lev_r[l], f @ D[l].T, atol=1e-9), l


def test_forces_are_minus_gradient_of_energy():
    model = _model()
    pos, species = _molecule(2)
    out = model(_batch([pos], [species]), compute_forces=True)
    forces = out["forces"]
    assert forces.shape == pos.shape and torch.isfinite(forces).all()
    eps = 1e-5
    for atom, axis in ((0, 0), (3, 2), (5, 1)):
        plus, minus = pos.clone(), pos.clone()
        plus[atom, axis] += eps
        minus[atom, axis] -= eps
        de = (model(_batch([plus], [species]))["energy"]
              - model(_batch([minus], [species]))["energy"])
        assert torch.allclose(-de / (2 * eps), forces[atom, axis], atol=1e-6)
    assert torch.allclose(forces.sum(0), torch.zeros(3), atol=1e-9)


def test_batching_pads_without_changing_energies():
    model = _model()
    mols = [_molecule(s, n) for s, n in ((3, 4), (4, 7), (5, 2))]
    together = model(_batch([m[0] for m in mols], [m[1] for m in mols]))["energy"]
    alone = torch.cat([model(_batch([m[0]], [m[1]]))["energy"] for m in mols])
    assert torch.allclose(together, alone, atol=1e-10)


# ------------------------------------------------------------------ smoothness
def _scan(model, distances):
    """Energies of a 3-atom molecule with atom 2 at x = each distance."""
    energies = []
    for d in distances:
        pos = torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.1, 0.0], [float(d), 0.3, 0.2]])
        energies.append(model(_batch([pos], [[1, 0, 2]]))["energy"].item())
    return np.array(energies)


def test_energy_continuous_across_every_cutoff_with_soft_input_cutoff():
    """Atom 2 crosses r_max = 1.73 Å from atom 0 (at x = 1.69201) and from atom 1 (at
    x = 1.52082). A continuous energy changes by O(h) over [x_c - h, x_c + h]: shrinking h
    1000-fold shrinks the change ~1000-fold. With input_cutoff 'soft' (sigmoids only) it does;
    with the reference's hard input cutoff the change stays (a jump): the test can fail."""
    crossings = [np.sqrt(1.73**2 - 0.3**2 - 0.2**2), np.sqrt(1.73**2 - 0.8**2 - 0.2**2)]
    smooth = _model("baseline", {**SMALL, "input_cutoff": "soft"})
    hard = _model("baseline", SMALL)

    def change(model, x, h):
        e = _scan(model, [x - h, x + h])
        return abs(e[1] - e[0])

    for x in crossings:
        coarse, fine = change(smooth, x, 1e-4), change(smooth, x, 1e-7)
        assert fine < 1e-2 * coarse + 1e-11, (x, coarse, fine)
    jumps = [change(hard, x, 1e-7) / change(hard, x, 1e-4) for x in crossings]
    assert min(jumps) > 0.5, jumps


# ------------------------------------------------------------------ fusion and its control
def test_fusion_has_no_more_parameters_than_baseline_and_control_matches_its_width():
    fusion = _model("fusion")
    info = fusion.fusion_info
    base = _model("baseline")
    assert info["n_params"] == count_parameters(fusion) <= count_parameters(base)
    assert info["n_params_baseline"] == count_parameters(base)
    wider = _model("fusion", {**SMALL_FUSION, "fusion_num_channels": info["num_channels"] + 1})
    assert count_parameters(wider) > info["n_params_baseline"]
    narrow = _model("baseline-narrow", SMALL_FUSION)
    assert narrow.hparams["num_channels"] == info["num_channels"]
    assert count_parameters(narrow) < count_parameters(fusion)
    assert narrow.fusion_terms is None and len(fusion.fusion_terms) == SMALL["num_cg_levels"]


def test_default_fusion_fits_the_reference_budget():
    n_base = int(_cli("--variant", "baseline"))
    assert int(_cli("--variant", "fusion")) <= n_base
    assert int(_cli("--variant", "baseline-narrow")) < n_base


def test_fusion_term_is_nonzero_and_the_energy_depends_on_it():
    """The fusion term is not identically zero at initialisation (RMS at least 1e-3 of the
    level's input features, at most 10x), and zeroing its weights changes the energy: the
    test fails if the term is identically zero or not wired into the levels."""
    model = _model("fusion")
    pos, species = _molecule(7, 9)
    batch = _batch([pos], [species])
    p, oh, m, _ = pad_batch(batch, batch["positions"])
    ratios = []

    def hook(module, args, output):
        rms_in = torch.cat([f.flatten() for f in args[0].values()]).abs().pow(2).mean().sqrt()
        rms_out = torch.cat([f.flatten() for f in output.values()]).abs().pow(2).mean().sqrt()
        ratios.append((rms_out / rms_in).item())

    handles = [t.register_forward_hook(hook) for t in model.fusion_terms]
    y = model.predict(p, oh, m)
    for h in handles:
        h.remove()
    assert len(ratios) == SMALL["num_cg_levels"]
    assert all(1e-3 < r < 10 for r in ratios), ratios
    with torch.no_grad():
        for term in model.fusion_terms:
            for w in term.weights.values():
                w.zero_()
    y0 = model.predict(p, oh, m)
    assert (y - y0).abs().max() > 1e-6


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "hparams, match",
    [
        ({"num_chanels": 4}, r"unknown hyperparameter\(s\) \['num_chanels'\].*valid keys"),
        ({"maxl": -1}, "maxl must be an integer >= 0"),
        ({"num_channels": 2.5}, "num_channels must be an integer >= 1"),
        ({"r_max": 0}, "r_max must be a positive number"),
        ({"input_cutoff": "none"}, "input_cutoff must be 'hard' or 'soft'"),
        ({"fusion_lmax_sh": 1}, r"unknown hyperparameter\(s\) \['fusion_lmax_sh'\]"),
    ],
)
def test_bad_hparams_raise_clear_errors(hparams, match):
    with pytest.raises(ValueError, match=match):
        build_model("cormorant", "baseline", hparams, _stats())


def test_bad_fusion_hparams_raise_clear_errors():
    with pytest.raises(ValueError, match="fusion_lmax_sh .* must be <= max_sh"):
        build_model("cormorant", "fusion", {"max_sh": 1, "fusion_lmax_sh": 2}, _stats())
    with pytest.raises(ValueError, match=r"valid keys: \[.*'fusion_L_int'"):
        build_model("cormorant", "fusion", {"bogus": 1}, _stats())
