"""Normal-mode thermal sampling (fusion.data.normal_modes): exact harmonic identities on a
spring model, and the 300 K check on stilbene at GFN2-xTB (issue 20)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusion.data import normal_modes as nm

# A non-planar 4-atom spring network: every pair joined by a harmonic spring at its rest
# length, so the energy is invariant to translations and rotations and 3n - 6 = 6 modes.
POS0 = np.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0], [0.3, 1.1, 0.0], [0.4, 0.3, 0.9]])
MASSES = np.array([12.0, 1.0, 16.0, 2.0])
K_SPRING = 5.0  # eV/Å²


def springs(x):
    energy, forces = 0.0, np.zeros_like(x)
    for i in range(4):
        for j in range(i + 1, 4):
            r0 = np.linalg.norm(POS0[i] - POS0[j])
            d = x[i] - x[j]
            r = np.linalg.norm(d)
            energy += 0.5 * K_SPRING * (r - r0) ** 2
            f = -K_SPRING * (r - r0) * d / r
            forces[i] += f
            forces[j] -= f
    return energy, forces


@pytest.fixture(scope="module")
def spring_modes():
    return nm.normal_modes(nm.hessian(springs, POS0, h=1e-4), POS0, MASSES)


def test_modes_are_vibrations_only_with_the_analytic_frequencies(spring_modes):
    assert spring_modes.frequencies_cm.shape == (6,)
    # analytic Hessian of the springs at rest: sum over pairs of k u u^T blocks
    h = np.zeros((12, 12))
    for i in range(4):
        for j in range(i + 1, 4):
            u = (POS0[i] - POS0[j]) / np.linalg.norm(POS0[i] - POS0[j])
            blk = K_SPRING * np.outer(u, u)
            for a, b, s in ((i, i, 1), (j, j, 1), (i, j, -1), (j, i, -1)):
                h[3 * a:3 * a + 3, 3 * b:3 * b + 3] += s * blk
    sqm = np.repeat(np.sqrt(MASSES), 3)
    vals = np.linalg.eigvalsh(h / sqm[:, None] / sqm[None, :])[6:]  # 6 zeros first
    np.testing.assert_allclose(spring_modes.omega, np.sqrt(vals), rtol=1e-5)
    # 1 sqrt(eV/Å²/amu) = 521.47 cm^-1
    np.testing.assert_allclose(spring_modes.frequencies_cm / spring_modes.omega, 521.47,
                               rtol=1e-4)
    # eigenvectors orthonormal and orthogonal to translation
    v = spring_modes.vectors.reshape(6, -1)
    np.testing.assert_allclose(v @ v.T, np.eye(6), atol=1e-8)
    trans = (np.ones((4, 3)) * [1, 0, 0] * np.sqrt(MASSES)[:, None]).reshape(-1)
    np.testing.assert_allclose(v @ trans, 0.0, atol=1e-8)


def test_classical_sample_has_equipartition_and_no_net_motion(spring_modes):
    rng = np.random.default_rng(1)
    h = nm.hessian(springs, POS0, h=1e-4)
    n, temp = 4000, 300.0
    pe, ke = np.zeros(n), np.zeros(n)
    for k in range(n):
        x, v = nm.thermal_sample(spring_modes, temp, rng)
        d = (x - POS0).reshape(-1)
        pe[k] = 0.5 * d @ h @ d  # harmonic potential energy, eV
        ke[k] = 0.5 * (MASSES[:, None] * (v / 0.09822694788464063) ** 2).sum()  # Å/fs -> ASE
        np.testing.assert_allclose((MASSES[:, None] * v).sum(0), 0.0, atol=1e-12)
    expected = 6 * nm.K_B_EV * temp / 2
    assert nm.harmonic_mean_potential(spring_modes, temp) == pytest.approx(expected)
    # mean within 4 standard errors (PE and KE of 6 modes: std = sqrt(6/2) kT)
    se = math.sqrt(3) * nm.K_B_EV * temp / math.sqrt(n)
    assert abs(pe.mean() - expected) < 4 * se
    assert abs(ke.mean() - expected) < 4 * se


def test_wigner_variance_factor_and_low_modes_at_rest(spring_modes):
    temp = 300.0
    hw = nm.HBAR_EV_S * spring_modes.omega * math.sqrt(nm.EV_J / (1e-20 * nm.AMU_KG))
    u = hw / (2 * nm.K_B_EV * temp)
    expected = float((hw / 2 / np.tanh(u)).sum() / 2)  # <V> = E_mode / 2 per mode
    assert nm.harmonic_mean_potential(spring_modes, temp, "wigner") == pytest.approx(expected)
    cut = float(np.sort(spring_modes.frequencies_cm)[3])  # leave the 3 lowest undisplaced
    x, v = nm.thermal_sample(spring_modes, temp, np.random.default_rng(0), min_cm=cut)
    q = np.einsum("kia,ia->k", spring_modes.vectors, (x - POS0) * np.sqrt(MASSES)[:, None])
    low = spring_modes.frequencies_cm < cut
    np.testing.assert_allclose(q[low], 0.0, atol=1e-12)
    assert np.abs(q[~low]).min() > 0
    assert nm.harmonic_mean_potential(spring_modes, temp, min_cm=cut) == pytest.approx(
        3 * nm.K_B_EV * temp / 2)
    with pytest.raises(ValueError, match="kind must be"):
        nm.thermal_sample(spring_modes, temp, np.random.default_rng(0), kind="quantum")
    with pytest.raises(ValueError, match="temperature"):
        nm.thermal_sample(spring_modes, 0.0, np.random.default_rng(0))


def test_saddle_point_is_rejected():
    h = nm.hessian(springs, POS0, h=1e-4)
    with pytest.raises(ValueError, match="imaginary mode .* not a minimum"):
        nm.normal_modes(-h, POS0, MASSES)  # a maximum: every mode imaginary
    with pytest.raises(ValueError, match="does not match"):
        nm.normal_modes(h[:9, :9], POS0, MASSES)


def test_stilbene_300k_sample_mean_potential_within_10_percent_of_harmonic():
    """Issue 20's check, on the surface the modes come from (GFN2-xTB): trans-stilbene
    minimum, 60 classical 300 K samples, mean xTB potential energy above the minimum within
    10 % of the harmonic value of the displaced modes (modes >= 100 cm^-1). Measured
    (100 samples, seed 0): 0.895 eV against 0.879; naive 1000 cm^-1 Cartesian kicks: 2.38."""
    pytest.importorskip("tblite")
    from fusion.data.stilbene_casscf import StilbeneGeometry, xtb_force_fn

    geo = StilbeneGeometry(0)
    start = geo.builder.geometry(180.0)
    ff = xtb_force_fn(geo.z, start)
    pos = nm.optimise(ff, geo.z, start, fmax=0.001)
    e0, _ = ff(pos)
    modes = nm.normal_modes(nm.hessian(ff, pos), pos, geo.masses, energy=e0)
    fresh = xtb_force_fn(geo.z, pos, restart=False)
    rng = np.random.default_rng(0)
    pe = [fresh(nm.thermal_sample(modes, 300.0, rng, min_cm=100.0)[0])[0] - e0
          for _ in range(60)]
    harmonic = nm.harmonic_mean_potential(modes, 300.0, min_cm=100.0)
    assert 0.8 < harmonic < 0.95  # 68 of 72 modes displaced: 68 kT / 2 = 0.879 eV
    assert abs(np.mean(pe) / harmonic - 1.0) < 0.10
