"""Multi-state MACE (``n_states``): one head per electronic state on a shared trunk.

Checks: with one state the numbers are mace-torch's; every state's forces are -dE_s/dx
(central differences); energies are invariant and forces equivariant under O(3); the heads
differ (fresh weights); per-state composition energies; parameter counts (closed form =
built module, fusion width search under the multi-state budget); clear errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from e3nn import o3

import fusion._mace_first  # noqa: F401  (mace before e3nn)
from fusion.models import mace_fusion as mf
from fusion.models.mace import MaceEnergyModel, MaceStates
from fusion.models.registry import ModelStats, build_model, count_parameters
from tests.models.test_mace_fusion import SMALL, make_batch, run

E0 = np.array([[-13.6, -1030.0, -2040.0], [-13.0, -1025.0, -2035.0]])  # [S, Z] eV
STATS2 = ModelStats(elements=(1, 6, 8), atomic_energies=E0, avg_num_neighbors=3.0)
STATS1 = ModelStats(elements=(1, 6, 8), atomic_energies=E0[0], avg_num_neighbors=3.0)


@pytest.fixture(scope="module")
def two_state():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        return {v: build_model("mace", v, {**SMALL, "n_states": 2}, STATS2).eval()
                for v in ("baseline", "fusion")}
    finally:
        torch.set_default_dtype(old)


def test_one_state_reproduces_mace_exactly():
    torch.manual_seed(1)
    single = build_model("mace", "baseline", SMALL, STATS1).eval()
    states = MaceStates(single.mace, 1).eval()
    assert isinstance(single, MaceEnergyModel)
    batch = make_batch()
    e_ref, f_ref = run(single, batch)
    e, f = run(states, batch)
    assert e.shape == (2, 1) and f.shape == (f_ref.shape[0], 1, 3)
    torch.testing.assert_close(e[:, 0], e_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(f[:, 0], f_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("variant", ["baseline", "fusion"])
def test_shapes_and_forces_are_minus_gradient_per_state(two_state, variant):
    model = two_state[variant]
    batch = make_batch()
    energy, forces = run(model, batch)
    n_atoms = batch["positions"].shape[0]
    assert energy.shape == (2, 2) and forces.shape == (n_atoms, 2, 3)
    h = 1e-5
    for atom, axis in ((0, 0), (1, 2), (6, 1)):
        shifted = []
        for sign in (1, -1):
            b = {k: v.clone() for k, v in batch.items()}
            b["positions"][atom, axis] += sign * h
            shifted.append(run(model, b, forces=False)[0])  # [B, S]
        graph = int(batch["batch"][atom])
        numeric = -(shifted[0] - shifted[1])[graph] / (2 * h)  # [S]
        torch.testing.assert_close(forces[atom, :, axis], numeric, rtol=0, atol=1e-6)


def test_invariant_energies_equivariant_forces(two_state):
    model = two_state["baseline"]
    batch = make_batch()
    energy, forces = run(model, batch)
    torch.manual_seed(3)
    rot = -o3.rand_matrix()  # an improper rotation: O(3), not only SO(3)
    b = {k: v.clone() for k, v in batch.items()}
    b["positions"] = b["positions"] @ rot.T
    energy_r, forces_r = run(model, b)
    torch.testing.assert_close(energy_r, energy, rtol=0, atol=1e-9)
    torch.testing.assert_close(forces_r, forces @ rot.T, rtol=0, atol=1e-9)


def test_heads_differ_and_use_their_own_composition_energies(two_state):
    model = two_state["baseline"]
    batch = make_batch()
    energy, _ = run(model, batch, forces=False)
    onehot = batch["node_attrs"]
    e0 = torch.zeros(2, 2).index_add_(0, batch["batch"], onehot @ torch.tensor(E0).T)  # [B, S]
    interaction = energy - e0
    assert not torch.allclose(interaction[:, 0], interaction[:, 1])
    # zeroing every readout leaves exactly the per-state composition energies
    with torch.no_grad():
        for heads in model.heads():
            for p in heads.parameters():
                p.zero_()
    torch.testing.assert_close(run(model, batch, forces=False)[0], e0, rtol=0, atol=1e-9)


@pytest.mark.parametrize("variant", ["baseline", "fusion", "fusion-vertex"])
def test_parameter_counts_closed_form_match_the_module(variant):
    hp = {**SMALL, "n_states": 3}
    stats = ModelStats(elements=(1, 6, 8), atomic_energies=np.zeros((3, 3)),
                       avg_num_neighbors=3.0)
    model = build_model("mace", variant, hp, stats)
    n = count_parameters(model)
    assert n == mf.param_count(variant, hp, stats, model.mace.node_embedding.linear.irreps_out
                               .count("0e"))
    single = build_model("mace", "baseline", {**SMALL, "n_states": 1}, stats)
    one, readouts = count_parameters(single), count_parameters(single.mace.readouts)
    if variant == "baseline":
        assert n == one + 2 * readouts  # two extra heads of the same size
    else:  # the width search keeps the fusion model within the 3-state baseline's budget
        assert n <= count_parameters(build_model("mace", "baseline", hp, stats))


def test_n_states_defaults_to_the_states_the_data_labels():
    assert build_model("mace", "baseline", SMALL, STATS2).n_states == 2
    assert build_model("mace", "fusion", SMALL, STATS2).n_states == 2
    assert build_model("mace", "baseline", SMALL, STATS1).n_states == 1
    assert build_model("mace", "baseline", {**SMALL, "n_states": 2}, STATS1).n_states == 2


def test_bad_n_states_and_unsupported_combinations():
    with pytest.raises(ValueError, match="n_states .* must be a positive integer or null .*"
                                         "got 0"):
        build_model("mace", "baseline", {**SMALL, "n_states": 0}, STATS1)
    with pytest.raises(ValueError, match="n_states .* got '2'"):
        build_model("mace", "fusion", {**SMALL, "n_states": "2"}, STATS1)
    with pytest.raises(ValueError, match="fusion-3body supports one electronic state only"):
        build_model("mace", "fusion-3body", {**SMALL, "n_states": 2}, STATS1)
    with pytest.raises(ValueError, match="atomic energies for 2 states, but the model has "
                                         "n_states=3"):
        build_model("mace", "baseline", {**SMALL, "n_states": 3}, STATS2)


def test_states_are_ordered_by_construction_unless_switched_off():
    """S1's composition energies far below S0's: free heads predict S1 < S0, ordered heads
    (the default) E1 = E0 + softplus(raw gap) >= E0, with forces still -dE/dx."""
    e0 = E0.copy()
    e0[1] = E0[0] - 3.0  # S1 three eV per atom below S0
    inverted = ModelStats(elements=(1, 6, 8), atomic_energies=e0, avg_num_neighbors=3.0)
    torch.manual_seed(4)
    ordered = build_model("mace", "baseline", {**SMALL, "n_states": 2}, inverted).eval()
    torch.manual_seed(4)
    free = build_model("mace", "baseline", {**SMALL, "n_states": 2, "ordered_states": False},
                       inverted).eval()
    assert ordered.ordered and not free.ordered
    batch = make_batch()
    e_free, _ = run(free, batch, forces=False)
    e_ord, f_ord = run(ordered, batch)
    assert (e_free[:, 1] < e_free[:, 0]).all()
    assert (e_ord[:, 1] >= e_ord[:, 0]).all()
    torch.testing.assert_close(e_ord[:, 0], e_free[:, 0], rtol=0, atol=1e-10)
    h = 1e-5
    b = {k: v.clone() for k, v in batch.items()}
    b["positions"][1, 0] += h
    up = run(ordered, b, forces=False)[0]
    b["positions"][1, 0] -= 2 * h
    down = run(ordered, b, forces=False)[0]
    torch.testing.assert_close(f_ord[1, :, 0], -(up - down)[0] / (2 * h), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="ordered_states must be true or false"):
        build_model("mace", "baseline", {**SMALL, "n_states": 2, "ordered_states": "yes"},
                    inverted)
