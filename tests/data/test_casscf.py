"""SA2-CASSCF(2,2) labels (fusion.data.casscf) on ethylene: forces are minus the energy
gradients of each state, roots are singlets ordered by energy, density fitting changes the
numbers only slightly. About 15 s on one core."""

from __future__ import annotations

import numpy as np
import pytest

from fusion.data import casscf as cs
from fusion.data import stilbene as st

pytest.importorskip("pyscf")


@pytest.fixture(scope="module")
def ethylene():
    builder = st.TorsionGeometryBuilder(st.ETHYLENE_SMILES, st.ETHYLENE_TORSION_SMARTS, seed=0)
    return builder, builder.frame(3, seed=0, temperature_k=300.0)


def test_forces_are_minus_state_gradients_and_states_are_ordered(ethylene):
    builder, pos = ethylene
    central = builder.torsion_atoms[1:3]
    energies, forces, info = cs.sa_casscf_labels(builder.z, pos, central)
    assert energies.shape == (2,) and forces.shape == (2, 6, 3)
    assert energies[1] > energies[0]
    # measured: SA2-CASSCF(2,2)/STO-3G S1-S0 of this frame is 9.89 eV (V state, minimal basis)
    assert energies[1] - energies[0] == pytest.approx(9.894, abs=0.01)
    # state-averaged active occupations sum to 2 electrons
    assert info["natocc"].sum() == pytest.approx(2.0, abs=1e-8)
    assert info["active"] == (7, 8)  # RHF HOMO, LUMO of 16 electrons
    h = 1e-3
    for atom in (central[0], 3):
        plus, minus = pos.copy(), pos.copy()
        plus[atom, 0] += h
        minus[atom, 0] -= h
        e_plus, none, _ = cs.sa_casscf_labels(builder.z, plus, central, gradients=False)
        e_minus, _, _ = cs.sa_casscf_labels(builder.z, minus, central, gradients=False)
        assert none is None
        np.testing.assert_allclose(forces[:, atom, 0], -(e_plus - e_minus) / (2 * h), atol=1e-3)
    # the same point started from these orbitals converges to the same states
    again, _, _ = cs.sa_casscf_labels(builder.z, pos, central, gradients=False,
                                      mo_guess=info["mo"])
    np.testing.assert_allclose(again, energies, atol=1e-6)


@pytest.mark.parametrize("density_fit", [True, False])
def test_s0_gradient_from_the_averaged_energy_is_the_state_specific_one(ethylene, density_fit):
    """g0 = 2 ḡ − g1 (one Lagrangian solve) equals pyscf's own state-specific S0 gradient."""
    from pyscf import fci, gto, mcscf, scf

    builder, pos = ethylene
    mol = gto.M(atom=[(int(z), tuple(p)) for z, p in zip(builder.z, pos)], basis="sto-3g",
                unit="Angstrom", verbose=0)
    mf = scf.RHF(mol).density_fit() if density_fit else scf.RHF(mol)
    mf.kernel()
    mc = mcscf.CASSCF(mf, 2, 2)
    mc.fcisolver = fci.direct_spin0.FCI(mol)
    mc.conv_tol = 1e-10
    mc = mc.state_average_([0.5, 0.5])
    mc.kernel()
    g = cs._state_gradients(mc, density_fit)
    g0 = mc.nuc_grad_method().kernel(state=0)
    np.testing.assert_allclose(g[0], g0, atol=1e-6)  # Hartree/Bohr
    np.testing.assert_allclose(g[1], mc.nuc_grad_method().kernel(state=1), atol=1e-10)
    assert np.abs(g[1] - g[0]).max() > 1e-2  # the two states' gradients do differ


def test_density_fitting_is_a_small_change(ethylene):
    builder, pos = ethylene
    central = builder.torsion_atoms[1:3]
    e_df, _, _ = cs.sa_casscf_labels(builder.z, pos, central, gradients=False)
    e_exact, _, _ = cs.sa_casscf_labels(builder.z, pos, central, gradients=False,
                                        density_fit=False)
    assert abs((e_df[1] - e_df[0]) - (e_exact[1] - e_exact[0])) < 2e-3  # gap, eV
    assert abs(e_df[0] - e_exact[0]) < 0.02  # total energy, eV


def test_bad_active_choice_and_pyramidalisation_identities(ethylene):
    builder, pos = ethylene
    with pytest.raises(ValueError, match="active must be"):
        cs.sa_casscf_labels(builder.z, pos, builder.torsion_atoms[1:3], gradients=False,
                            active="largest")
    planar = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-0.5, 0.8, 0.0], [-0.5, -0.8, 0.0]])
    assert cs.pyramidalisation_deg(planar, 0, 1, (2, 3)) == pytest.approx(0.0, abs=1e-9)
    tetra = np.array([[0.0, 0.0, 0.0], [1, 1, 1], [1, -1, -1], [-1, 1, -1]], dtype=float)
    assert cs.pyramidalisation_deg(tetra, 0, 1, (2, 3)) == pytest.approx(54.7356, abs=1e-3)
