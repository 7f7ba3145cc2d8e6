"""stilbene-tddft generator: torsion geometries, thermal amplitudes, TDA labels, chunked cache.

Electronic-structure tests use ethylene (CIS/sto-3g, about a second per frame); stilbene
itself is only embedded with rdkit (no pyscf) here.
"""

import json
import math

import numpy as np
import pytest
from ase import units

from fusion.data import stilbene as st
from fusion.data.cache import CacheError, save_npz_atomic


@pytest.fixture(scope="module")
def ethylene():
    return st.TorsionGeometryBuilder(st.ETHYLENE_SMILES, st.ETHYLENE_TORSION_SMARTS, seed=0)


def test_torsion_schedule_is_prefix_stable_and_covers_cis_to_trans():
    targets = [st.frame_torsion_target(i) for i in range(9)]
    assert targets[:5] == [0.0, 180.0, 90.0, 45.0, 135.0]
    assert sorted(targets) == [0.0, 22.5, 45.0, 67.5, 90.0, 112.5, 135.0, 157.5, 180.0]
    with pytest.raises(ValueError, match="frame index"):
        st.frame_torsion_target(-1)


def test_thermal_sigma_matches_classical_oscillator_in_ase_units():
    # sigma^2 = kT / (m omega^2), computed here in ASE units (eV, Å, amu, ASE time).
    omega = 2 * math.pi * units._c * 100 * 1000.0 / units.s  # 1000 cm^-1 in rad / ASE time
    for mass in (1.008, 12.011):
        expected = math.sqrt(units.kB * 300.0 / (mass * omega**2))
        got = st.thermal_sigma(np.array([mass]), 300.0, 1000.0)[0]
        assert got == pytest.approx(expected, rel=1e-6)
    assert st.thermal_sigma(np.array([1.0]), 0.0)[0] == 0.0
    with pytest.raises(ValueError, match="temperature"):
        st.thermal_sigma(np.array([1.0]), -1.0)


def test_stilbene_geometry_reaches_cis_and_trans_torsions():
    builder = st.TorsionGeometryBuilder(st.STILBENE_SMILES, st.STILBENE_TORSION_SMARTS, seed=0)
    assert builder.z.shape == (26,) and int((builder.z == 6).sum()) == 14
    for angle in (0.0, 90.0, 180.0):
        pos = builder.geometry(angle)
        assert st.dihedral_deg(pos, builder.torsion_atoms) == pytest.approx(angle, abs=1.0)
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(26) * 10
        assert d.min() > 0.9  # no clashes after the constrained relaxation


def test_frames_are_seeded_and_displaced_at_temperature(ethylene):
    a = ethylene.frame(2, seed=3, temperature_k=300.0)
    b = ethylene.frame(2, seed=3, temperature_k=300.0)
    c = ethylene.frame(2, seed=4, temperature_k=300.0)
    cold = ethylene.frame(2, seed=3, temperature_k=0.0)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    assert st.dihedral_deg(cold, ethylene.torsion_atoms) == pytest.approx(90.0, abs=0.5)
    disp = a - cold
    com_shift = (ethylene.masses[:, None] * disp).sum(0) / ethylene.masses.sum()
    np.testing.assert_allclose(com_shift, 0.0, atol=1e-12)
    assert 0.005 < np.abs(disp).max() < 0.5


def test_labels_forces_are_minus_energy_gradients(ethylene):
    from pyscf import gto, scf

    pos = ethylene.frame(3, seed=0, temperature_k=300.0)
    energies, forces = st.excited_state_labels(ethylene.z, pos)
    assert energies.shape == (2,) and forces.shape == (2, 6, 3)
    assert 3.0 < energies[1] - energies[0] < 15.0  # S1 above S0, CIS-like gap in eV
    # S0 from the fused path equals pyscf's own RHF gradient.
    mol = gto.M(atom=[(int(z), tuple(p)) for z, p in zip(ethylene.z, pos)], basis="sto-3g",
                verbose=0)
    mf = scf.RHF(mol)
    mf.conv_tol = 1e-10
    mf.kernel()
    f0 = -mf.nuc_grad_method().kernel() * st.HARTREE_TO_EV / st.BOHR_TO_ANGSTROM
    np.testing.assert_allclose(forces[0], f0, atol=1e-4)
    # S0 and S1 forces against central differences along one atom's x (carbon 0).
    h = 1e-3
    plus, minus = pos.copy(), pos.copy()
    plus[0, 0] += h
    minus[0, 0] -= h
    e_plus, _ = st.excited_state_labels(ethylene.z, plus)
    e_minus, _ = st.excited_state_labels(ethylene.z, minus)
    fd = -(e_plus - e_minus) / (2 * h)  # [2] eV/Å
    np.testing.assert_allclose(forces[:, 0, 0], fd, atol=2e-3)


class _Killed(Exception):
    pass


def test_chunked_cache_resumes_after_a_kill(tmp_path):
    kwargs = dict(smiles=st.ETHYLENE_SMILES, torsion_smarts=st.ETHYLENE_TORSION_SMARTS,
                  chunk_size=1, log=lambda msg: None)
    fresh = st.generate_torsion_frames(2, tmp_path / "fresh.npz", seed=1, **kwargs)
    assert len(fresh) == 2
    np.testing.assert_allclose(fresh.torsion, [0.0, 180.0], atol=15.0)

    def kill_after_frame_1(msg):
        if msg.startswith("frame 1:"):
            raise _Killed

    path = tmp_path / "killed.npz"
    with pytest.raises(_Killed):
        st.generate_torsion_frames(2, path, seed=1, **{**kwargs, "log": kill_after_frame_1})
    assert len(st.load_stilbene(path)) == 1  # the first chunk survived the kill
    messages = []
    resumed = st.generate_torsion_frames(2, path, seed=1, **{**kwargs, "log": messages.append})
    assert messages[0].endswith("resuming at frame 1 of 2")
    assert len(messages) == 2  # the resume line + exactly one computed frame
    for name in ("pos", "energies", "forces", "torsion"):
        np.testing.assert_allclose(getattr(resumed, name), getattr(fresh, name), atol=1e-7)
    assert resumed.settings["basis"] == "sto-3g" and resumed.settings["seed"] == 1
    # Asking for fewer frames than cached computes nothing.
    again = st.generate_torsion_frames(1, path, seed=1, **{**kwargs, "log": messages.append})
    assert len(again) == 2 and len(messages) == 2
    with pytest.raises(ValueError, match="other settings.*seed"):
        st.generate_torsion_frames(3, path, seed=2, **kwargs)


def _write_cache(path, n_frames=2, n=3, **override):
    arrays = {
        "z": np.array([6, 1, 1]),
        "pos": np.zeros((n_frames, n, 3)),
        "energies": np.zeros((n_frames, 2)),
        "forces": np.zeros((n_frames, 2, n, 3)),
        "torsion": np.full(n_frames, 90.0),
        "settings": np.asarray(json.dumps({"basis": "sto-3g"})),
    }
    arrays.update(override)
    save_npz_atomic(path, arrays, st.FORMAT_VERSION)
    return path


def test_load_rejects_bad_caches_naming_field_and_frame(tmp_path):
    good = st.load_stilbene(_write_cache(tmp_path / "good.npz"))
    assert len(good) == 2 and good.forces.shape == (2, 2, 3, 3)
    energies = np.zeros((2, 2))
    energies[1, 1] = np.nan
    with pytest.raises(CacheError, match=r"'energies' has non-finite values in frame\(s\) \[1\]"):
        st.load_stilbene(_write_cache(tmp_path / "nan.npz", energies=energies))
    with pytest.raises(CacheError, match=r"'forces' should have shape \[2, 2, 3, 3\]"):
        st.load_stilbene(_write_cache(tmp_path / "shape.npz", forces=np.zeros((2, 3, 3))))
    with pytest.raises(CacheError, match="'torsion' should be degrees"):
        st.load_stilbene(_write_cache(tmp_path / "angle.npz", torsion=np.array([0.0, 200.0])))
    with pytest.raises(CacheError, match="missing arrays"):
        save_npz_atomic(tmp_path / "missing.npz", {"z": np.array([1])}, st.FORMAT_VERSION)
        st.load_stilbene(tmp_path / "missing.npz")
    with pytest.raises(FileNotFoundError):
        st.load_stilbene(tmp_path / "absent.npz")
