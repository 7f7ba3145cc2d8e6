"""Velocity Verlet (NVE), Landau–Zener hopping from the gap, ensembles and their analysis."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes

from fusion.dynamics import analysis as an
from fusion.dynamics import hopping as hp

# 1 amu (Å/fs)^2 in eV
AMU_A2_FS2_EV = units.fs**-2


def test_belyaev_lebedev_equals_landau_zener_for_a_linear_crossing():
    # Gap of a linear crossing passed at constant velocity v: g(t) = sqrt((dF v t)^2 + 4 V^2).
    for coupling, velocity, slope_diff in ((0.1, 0.07, 2.0), (0.02, 0.01, 0.5), (0.3, 0.2, 5.0)):
        dt = 1e-3 * coupling / (slope_diff * velocity)
        gaps = [math.hypot(slope_diff * velocity * t, 2 * coupling) for t in (-dt, 0.0, dt)]
        bl = hp.belyaev_lebedev_probability(*gaps, dt_fs=dt)
        lz = hp.landau_zener_probability(coupling, velocity, slope_diff)
        assert 0.01 < lz < 0.99
        assert bl == pytest.approx(lz, rel=1e-5)
    with pytest.raises(ValueError, match="not a local minimum"):
        hp.belyaev_lebedev_probability(1.0, 2.0, 3.0, 0.1)


def crossing_surfaces(slope: float, coupling: float):
    """1-D avoided crossing along x of one atom: diabats +slope*x and -slope*x (eV/Å), coupling
    V (eV). Adiabatic E_-/+ = -/+ sqrt(slope^2 x^2 + V^2)."""

    def surfaces(pos):
        x = pos[0, 0]
        root = math.sqrt(slope**2 * x**2 + coupling**2)
        energies = np.array([-root, root])
        forces = np.zeros((2, 1, 3))
        forces[0, 0, 0] = slope**2 * x / root
        forces[1, 0, 0] = -slope**2 * x / root
        return energies, forces

    return surfaces


def test_simulated_hop_fraction_matches_landau_zener():
    slope, coupling, mass = 1.0, 0.1, 1.0
    x0, v0 = -0.2, 0.0485  # Å, Å/fs, on the upper surface moving towards the crossing
    surfaces = crossing_surfaces(slope, coupling)
    # Velocity at the crossing by energy conservation on the upper surface.
    k_cross = 0.5 * mass * v0**2 * AMU_A2_FS2_EV + math.hypot(slope * x0, coupling) - coupling
    v_cross = math.sqrt(2 * k_cross / (mass * AMU_A2_FS2_EV))
    expected = hp.landau_zener_probability(coupling, v_cross, 2 * slope)
    assert 0.3 < expected < 0.7
    n_traj, hops = 400, 0
    for seed in range(n_traj):
        result = hp.run_trajectory(surfaces, np.array([[x0, 0.0, 0.0]]),
                                   np.array([[v0, 0.0, 0.0]]), np.array([mass]), state=1,
                                   n_steps=160, dt_fs=0.05, rng=np.random.default_rng(seed))
        assert len(result.hops) == 1  # one gap minimum on the way through
        event = result.hops[0]
        assert event["probability"] == pytest.approx(expected, rel=1e-2)
        assert event["gap_ev"] == pytest.approx(2 * coupling, rel=1e-3)
        hopped = event["outcome"] == "hop"
        assert hopped == (event["random"] < event["probability"])
        assert result.state[-1] == (0 if hopped else 1)
        assert result.positions[0, 0] > 0.1  # passed the crossing
        drift = np.abs(result.total_energy - result.total_energy[0]).max()
        assert drift < 1e-4  # hops rescale velocities so the total energy is conserved
        hops += hopped
    sigma = math.sqrt(expected * (1 - expected) / n_traj)
    assert abs(hops / n_traj - expected) < 4 * sigma
    # The same seed gives the same trajectory.
    a, b = (hp.run_trajectory(surfaces, np.array([[x0, 0, 0.0]]), np.array([[v0, 0, 0.0]]),
                              np.array([mass]), 1, 160, 0.05, rng=np.random.default_rng(7))
            for _ in range(2))
    np.testing.assert_array_equal(a.state, b.state)
    np.testing.assert_array_equal(a.kinetic, b.kinetic)


def test_frustrated_upward_hops_are_rejected():
    # Slow passage over the lower surface's barrier: P ~ 0.99 but K < gap at the crossing.
    slope, coupling, mass = 1.0, 0.005, 1.0
    surfaces = crossing_surfaces(slope, coupling)
    x0 = -0.02
    k0 = 0.005 + math.hypot(slope * x0, coupling) - coupling  # 5 meV left at the top (< 2V)
    v0 = math.sqrt(2 * k0 / (mass * AMU_A2_FS2_EV))
    outcomes = []
    for seed in range(5):
        result = hp.run_trajectory(surfaces, np.array([[x0, 0, 0.0]]), np.array([[v0, 0, 0.0]]),
                                   np.array([mass]), state=0, n_steps=400, dt_fs=0.01,
                                   rng=np.random.default_rng(seed))
        assert np.all(result.state == 0)
        assert result.positions[0, 0] > 0.0
        outcomes += [h["outcome"] for h in result.hops]
        drift = np.abs(result.total_energy - result.total_energy[0]).max()
        assert drift < 1e-5
    assert outcomes.count("frustrated") >= 4 and set(outcomes) <= {"frustrated", "stay"}


def harmonic_triatomic(pos):
    """Bonds 0-1 and 1-2, k = 30 eV/Å^2, r0 = 1.1 Å; one state."""
    energy, forces = 0.0, np.zeros_like(pos)
    for i, j in ((0, 1), (1, 2)):
        d = pos[j] - pos[i]
        r = np.linalg.norm(d)
        energy += 0.5 * 30.0 * (r - 1.1) ** 2
        f = -30.0 * (r - 1.1) * d / r
        forces[j] += f
        forces[i] -= f
    return np.array([energy]), forces[None]


def test_nve_conserves_energy_on_one_surface():
    pos = np.array([[0.0, 0.0, 0.0], [1.25, 0.1, 0.0], [2.2, 0.8, 0.1]])
    vel = np.array([[0.01, 0.0, 0.0], [0.0, 0.005, 0.0], [0.0, 0.0, -0.02]])
    masses = np.array([12.0, 16.0, 1.0])
    result = hp.run_trajectory(harmonic_triatomic, pos, vel, masses, state=0, n_steps=2000,
                               dt_fs=0.1, hopping=False)
    total = result.total_energy
    assert np.ptp(result.kinetic) > 0.1  # energy flows between kinetic and potential
    assert np.abs(total - total[0]).max() < 2e-3 * np.ptp(result.kinetic)
    # Velocity Verlet: the energy error shrinks as dt^2.
    half = hp.run_trajectory(harmonic_triatomic, pos, vel, masses, 0, 4000, 0.05, hopping=False)
    ratio = np.abs(total - total[0]).max() / np.abs(half.total_energy - half.total_energy[0]).max()
    assert 3.0 < ratio < 5.0


def test_nve_with_a_tiny_mace_conserves_energy():
    from fusion.dynamics.calculator import FusionCalculator
    from fusion.models.registry import ModelStats, build_model

    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        stats = ModelStats(elements=(1, 6, 8), atomic_energies=np.zeros(3),
                           avg_num_neighbors=4.0, scale=0.2)
        model = build_model("mace", "baseline", {
            "num_channels": 8, "max_L": 0, "max_ell": 1, "correlation": 2,
            "num_interactions": 1, "radial_MLP": [8], "MLP_irreps": "4x0e"}, stats)
    finally:
        torch.set_default_dtype(old)
    atoms = Atoms("COHHHH", positions=[[0.0, 0.0, 0.0], [1.42, 0.05, 0.0], [-0.38, 1.02, 0.1],
                                       [-0.4, -0.5, 0.9], [-0.36, -0.55, -0.87],
                                       [1.72, -0.87, 0.05]])
    surfaces = hp.ase_surfaces(FusionCalculator(model, (1, 6, 8), r_max=5.0), atoms)
    x0, v0 = hp.franck_condon_sample(atoms.positions, atoms.get_masses(), 300.0,
                                     np.random.default_rng(0))
    result = hp.run_trajectory(surfaces, x0, v0, atoms.get_masses(), 0, 40, 0.1, hopping=False)
    total = result.total_energy
    assert np.ptp(result.kinetic) > 1e-3
    assert np.abs(total - total[0]).max() < 0.02 * np.ptp(result.kinetic)


class TorsionModel(Calculator):
    """Two-state torsion model of H-C=C-H (torch, forces by autograd): harmonic bonds and
    angles; S0 = 1.0 sin^2(phi) eV (cis and trans minima), S1 = 2.7 - 1.5 sin^2(phi) eV
    (minimum at 90°, gap 0.2 eV there)."""

    implemented_properties = ["energy", "forces", "energies", "state_forces"]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        x = torch.tensor(self.atoms.positions, dtype=torch.float64, requires_grad=True)
        b0, b1, b2 = x[0] - x[1], x[2] - x[1], x[3] - x[2]
        bonds = torch.stack([b0.norm(), b1.norm(), b2.norm()])
        e_bond = 20.0 * ((bonds - torch.tensor([1.09, 1.34, 1.09])) ** 2).sum()
        cos_a = torch.stack([(b0 @ b1) / (bonds[0] * bonds[1]),
                             (-b1 @ b2) / (bonds[1] * bonds[2])])
        e_angle = 5.0 * ((cos_a - math.cos(math.radians(121.0))) ** 2).sum()
        n1, n2 = torch.linalg.cross(b0, b1), torch.linalg.cross(b1, b2)
        cos_phi = (n1 @ n2) / (n1.norm() * n2.norm())
        sin2 = 1.0 - cos_phi**2
        energies = torch.stack([e_bond + e_angle + 1.0 * sin2,
                                e_bond + e_angle + 2.7 - 1.5 * sin2])
        forces = [-torch.autograd.grad(e, x, retain_graph=True)[0] for e in energies]
        self.results["energies"] = energies.detach().numpy()
        self.results["state_forces"] = torch.stack(forces).numpy()
        self.results["energy"] = float(energies[0].detach())
        self.results["forces"] = self.results["state_forces"][0]


def _hcch(angle_deg):
    a = math.radians(angle_deg)
    h0 = [-0.56, 0.93, 0.0]
    h3 = [1.9, 0.93 * math.cos(a), 0.93 * math.sin(a)]
    return Atoms("HCCH", positions=[h0, [0, 0, 0], [1.34, 0, 0], h3])


def test_ensemble_outputs_population_lifetime_and_branching(tmp_path):
    # cis: H0 and H3 on the same side (torsion 0); trans: opposite (180).
    # End atoms given carbon's mass: slower, smoother torsion for a short test.
    starts = {"cis": _hcch(0.0), "trans": _hcch(180.0)}
    for atoms in starts.values():
        atoms.set_masses([12.0] * 4)
    kwargs = dict(n_trajectories=3, n_steps=150, dt_fs=0.5, temperature_k=300.0, seed=3,
                  torsion_atoms=(0, 1, 2, 3), record_every=2, log=lambda msg: None)
    paths = hp.run_ensemble(TorsionModel, starts, tmp_path / "a", **kwargs)
    hp.run_ensemble(TorsionModel, starts, tmp_path / "b", **kwargs)
    for name in ("trajectories", "hops", "summary"):
        assert paths[name].read_text() == (tmp_path / "b" / f"{name}.csv").read_text()
    traj = pd.read_csv(paths["trajectories"])
    summary = pd.read_csv(paths["summary"])
    assert len(summary) == 6 and len(traj) == 6 * 76
    first = traj[traj["time_fs"] == 0]
    assert (first["state"] == 1).all()
    assert first.loc[first["start"] == "cis", "torsion_deg"].max() < 30
    assert first.loc[first["start"] == "trans", "torsion_deg"].min() > 150
    assert summary["max_energy_drift_ev"].max() < 0.01
    assert summary["n_hops"].sum() >= 1

    result = an.analyse_ensemble(tmp_path / "a")
    population = pd.read_csv(tmp_path / "a" / "population.csv")
    assert population["population"].iloc[0] == 1.0
    for time_fs, value in zip(population["time_fs"], population["population"]):
        on_s1 = traj[(traj["time_fs"] == time_fs)]["state"].eq(1).mean()
        assert value == pytest.approx(on_s1)
    exited = summary["first_exit_fs"].notna()
    assert result["n_exits"] == exited.sum()
    # cis and trans are different decays: no pooled lifetime, one per start
    assert result["lifetime_fs"] is None and "per start" in result["lifetime_note"]
    for start, group in summary.groupby("start"):
        per = result["lifetime_per_start"][start]
        ex = group["first_exit_fs"].notna()
        assert per["n_exits"] == ex.sum()
        observed = group.loc[ex, "first_exit_fs"].sum() + group.loc[~ex, "end_fs"].sum()
        assert per["lifetime_lower95_fs"] == pytest.approx(
            an.lifetime_lower_bound(int(ex.sum()), observed))
        if ex.any():
            tau, _ = an.exponential_lifetime(group.loc[ex, "first_exit_fs"],
                                             group.loc[~ex, "end_fs"])
            assert per["lifetime_fs"] == pytest.approx(tau)
            assert per["first_exit_fs"] == group["first_exit_fs"].min()
    numbers = an.ensemble_numbers(summary, drift_threshold_ev=0.0)
    assert numbers["max_drift_ev"] == summary["max_energy_drift_ev"].max()
    assert numbers["n_drift_flagged"] == (summary["max_energy_drift_ev"] > 0).sum()
    branching = pd.read_csv(tmp_path / "a" / "branching.csv")
    assert list(branching["start"]) == ["cis", "trans"]
    for _, row in branching.iterrows():
        ended = summary[(summary["start"] == row["start"]) & (summary["final_state"] == 0)]
        assert row["n_on_s0"] == len(ended)
        assert row["n_trans"] == int((ended["final_torsion_deg"] >= 90).sum())
    for path in result["figures"]:
        assert (tmp_path / "a" / path.split("/")[-1]).stat().st_size > 1000
    assert {p.rsplit(".", 1)[-1] for p in result["figures"]} == {"png", "svg"}


def test_ensemble_uses_the_start_samplers(tmp_path):
    """A sampler replaces the Cartesian kicks: the trajectory starts where it says."""
    atoms = _hcch(180.0)
    atoms.set_masses([12.0] * 4)
    twisted = _hcch(150.0).positions

    def sampler(rng):
        return twisted.copy(), np.zeros((4, 3))

    hp.run_ensemble(TorsionModel, {"trans": atoms}, tmp_path, n_trajectories=2, n_steps=2,
                    dt_fs=0.25, torsion_atoms=(0, 1, 2, 3), log=lambda msg: None,
                    samplers={"trans": sampler})
    traj = pd.read_csv(tmp_path / "trajectories.csv")
    first = traj[traj["time_fs"] == 0]
    np.testing.assert_allclose(first["torsion_deg"], 150.0, atol=1e-6)
    np.testing.assert_allclose(first["kinetic_ev"], 0.0, atol=1e-12)


def test_drift_threshold_is_the_one_the_table_names():
    from fusion.dynamics.tables import DRIFT_FLAG_EV

    assert DRIFT_FLAG_EV == an.DRIFT_THRESHOLD_EV


def test_exponential_lifetime_recovers_a_known_decay():
    rng = np.random.default_rng(0)
    times = rng.exponential(50.0, size=4000)
    observed = times[times < 100.0]
    censored = np.full((times >= 100.0).sum(), 100.0)
    tau, err = an.exponential_lifetime(observed, censored)
    assert abs(tau - 50.0) < 4 * err and err < 1.5
    with pytest.raises(ValueError, match="bounded below"):
        an.exponential_lifetime([], [100.0])


def test_wilson_interval_matches_reference_values():
    lo, hi = an.wilson_interval(3, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.1078, 0.6032)
    lo, hi = an.wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    with pytest.raises(ValueError):
        an.wilson_interval(5, 3)


def test_stilbene_starts_are_cis_and_trans():
    from fusion.data.stilbene import dihedral_deg

    starts, torsion_atoms = hp.stilbene_starts(seed=0)
    assert set(starts) == {"cis", "trans"}
    assert starts["cis"].get_chemical_formula() == "C14H12"
    assert dihedral_deg(starts["cis"].positions, torsion_atoms) == pytest.approx(0.0, abs=1.0)
    assert dihedral_deg(starts["trans"].positions, torsion_atoms) == pytest.approx(180.0, abs=1.0)


def test_lifetime_lower_bound_is_the_exponential_confidence_bound():
    import math

    from scipy.stats import chi2

    from fusion.dynamics.analysis import lifetime_lower_bound

    # no exit in T: P(no exit | tau) = exp(-T / tau) = 5 %  <=>  tau = T / ln 20
    assert lifetime_lower_bound(0, 1200.0) == pytest.approx(1200.0 / math.log(20.0), rel=1e-12)
    assert lifetime_lower_bound(3, 900.0) == pytest.approx(1800.0 / chi2.ppf(0.95, 8), rel=1e-12)
    # below the maximum-likelihood value T / k, and rising with the observation time
    assert lifetime_lower_bound(3, 900.0) < 300.0 < lifetime_lower_bound(3, 3000.0)
    with pytest.raises(ValueError, match="observed time > 0 fs"):
        lifetime_lower_bound(0, 0.0)
