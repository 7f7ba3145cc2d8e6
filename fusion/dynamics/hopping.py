"""Velocity Verlet and Landau–Zener surface hopping driven by the adiabatic gap.

Units (ASE's): positions Å, energies eV, forces eV/Å, masses amu, velocities Å per ASE time
unit (``ase.units.fs`` ASE time units = 1 fs, so 1 ASE time unit ≈ 10.18 fs); kinetic energy
``0.5 m v^2`` is then in eV. Inputs and outputs give times in **fs**.

**Surfaces.** Dynamics needs the adiabatic energies ``E_s`` [S] (eV) and forces
``F_s = -dE_s/dx`` [S, n, 3] (eV/Å) of every state ``s`` at a geometry: a *surfaces*
function ``positions [n, 3] -> (energies [S], forces [S, n, 3])``. :func:`ase_surfaces`
makes one from an ASE calculator (multi-state calculators such as
:class:`fusion.dynamics.calculator.FusionCalculator` give ``energies``/``state_forces``;
a plain calculator gives one state).

**Velocity Verlet** on the active surface ``a`` (:func:`run_trajectory`)::

    x(t+dt) = x + dt v + dt^2 F_a(x) / (2 m)
    v(t+dt) = v + dt (F_a(x) + F_a(x(t+dt))) / (2 m)

NVE on one surface when no hop happens (no thermostat).

**Hopping** (Landau–Zener with the Belyaev–Lebedev gap formula; no couplings needed). For the
active state ``a`` and each adjacent state ``b = a ± 1`` the gap ``g(t) = |E_a - E_b|`` is
followed; when the middle of three consecutive values is a local minimum,
``g(t-dt) < g(t-2dt)`` and ``g(t-dt) < g(t)``, the hop probability is::

    P = exp(-pi / (2 hbar) * sqrt(g^3 / g''))      g = g(t-dt),
    g'' = (g(t) - 2 g(t-dt) + g(t-2dt)) / dt^2     (central difference)

with ``hbar = 0.6582119569 eV fs``. One uniform number ``u`` (from the trajectory's seeded
generator) is drawn per minimum; for ``u < P`` the trajectory hops *at the minimum*
(time ``t-dt``): positions and velocities go back to that step, the state becomes ``b`` and
the velocities are rescaled along the momentum, ``v -> v sqrt(K'/K)`` with
``K' = K + E_a - E_b`` (total energy conserved). If ``K' < 0`` (or ``K = 0``) the hop is
*frustrated* and rejected: the trajectory continues unchanged on ``a``. For a linear
crossing at constant velocity this equals the Landau–Zener probability
``exp(-2 pi V^2 / (hbar v |F_1 - F_2|))`` exactly (``tests/dynamics/test_hopping.py``).

**Ensembles** (:func:`run_ensemble`): trajectories start on S1 (``initial_state``) from
Franck–Condon geometries of each named start (cis, trans): thermal-displacement sampling
(Gaussian positions with ``sigma_a = sqrt(k_B T / (m_a omega_ref^2))`` as in
:mod:`fusion.data.stilbene`, Maxwell–Boltzmann velocities at ``T``, centre-of-mass motion
removed), seeded by ``(seed, start, trajectory)``. A Wigner sampling would need the normal
modes of each start and is not implemented. Outputs (CSV): ``trajectories.csv`` (one row
per recorded step; the energy of every state, ``e0_ev``, ``e1_ev``, ``e2_ev``, ...),
``hops.csv`` (every gap minimum met: probability, random number, outcome
``hop``/``frustrated``/``stay``), ``summary.csv`` (one row per trajectory, with the state its
first exit went to and the number of states).

**More than two states.** Hops go to adjacent states only, so a trajectory started on S1 of
a three-state model (xxMD's S0/S1/S2) leaves S1 for S0 or for S2; ``summary.csv`` records
where its first exit went (``first_exit_to``).

The analysis of an ensemble (S1 lifetime, cis/trans branching, figures) is in
:mod:`fusion.dynamics.analysis`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "HBAR_EV_FS",
    "belyaev_lebedev_probability",
    "landau_zener_probability",
    "ase_surfaces",
    "TrajectoryResult",
    "run_trajectory",
    "franck_condon_sample",
    "stilbene_starts",
    "run_ensemble",
]

HBAR_EV_FS = 0.6582119569  # eV fs (CODATA 2018)

Surfaces = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _ase_fs() -> float:
    from ase import units

    return float(units.fs)  # ASE time units per fs


# --------------------------------------------------------------------------- formulas


def belyaev_lebedev_probability(gap_before: float, gap_min: float, gap_after: float,
                                dt_fs: float) -> float:
    """Landau–Zener hop probability from three gap values (eV) ``dt_fs`` apart, the middle a
    local minimum: ``exp(-pi/(2 hbar) sqrt(g^3 / g''))``, ``g''`` by central difference."""
    if not (gap_min < gap_before and gap_min < gap_after):
        raise ValueError(f"gap {gap_min} eV is not a local minimum of "
                         f"({gap_before}, {gap_min}, {gap_after})")
    if not dt_fs > 0:
        raise ValueError(f"dt must be > 0 fs, got {dt_fs}")
    curvature = (gap_after - 2.0 * gap_min + gap_before) / dt_fs**2  # eV/fs^2, > 0 here
    return float(math.exp(-math.pi / (2.0 * HBAR_EV_FS) * math.sqrt(gap_min**3 / curvature)))


def landau_zener_probability(coupling_ev: float, velocity_a_per_fs: float,
                             slope_difference_ev_per_a: float) -> float:
    """Diabatic-passage (= adiabatic hop) probability of the Landau–Zener model:
    ``exp(-2 pi V^2 / (hbar v |F_1 - F_2|))``; V in eV, v in Å/fs, slopes in eV/Å."""
    return float(math.exp(-2.0 * math.pi * coupling_ev**2 / (
        HBAR_EV_FS * abs(velocity_a_per_fs) * abs(slope_difference_ev_per_a))))


# --------------------------------------------------------------------------- surfaces


def ase_surfaces(calculator, atoms) -> Surfaces:
    """A surfaces function from an ASE calculator and a template ``atoms`` (numbers).

    Multi-state calculators report ``energies`` [S] and ``state_forces`` [S, n, 3]; any other
    calculator is taken as one state (``energy``, ``forces``).
    """
    from ase.calculators.calculator import all_changes

    work = atoms.copy()

    def surfaces(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        work.positions = positions
        calculator.calculate(work, ["energy", "forces"], all_changes)
        results = calculator.results
        if "energies" in results and "state_forces" in results:
            return (np.asarray(results["energies"], dtype=np.float64),
                    np.asarray(results["state_forces"], dtype=np.float64))
        return (np.array([float(results["energy"])]),
                np.asarray(results["forces"], dtype=np.float64)[None])

    return surfaces


# --------------------------------------------------------------------------- dynamics


@dataclass
class TrajectoryResult:
    """One trajectory, recorded every ``record_every`` steps (``R`` records).

    ``time_fs`` [R]; ``state`` [R] active state; ``energies`` [R, S] eV; ``kinetic`` [R] eV;
    ``torsion_deg`` [R] (NaN without torsion atoms); ``hops``: list of dicts, one per gap
    minimum met (``time_fs, from_state, to_state, gap_ev, probability, random, outcome``);
    ``positions``/``velocities``: final [n, 3] (Å, Å/fs).
    """

    time_fs: np.ndarray
    state: np.ndarray
    energies: np.ndarray
    kinetic: np.ndarray
    torsion_deg: np.ndarray
    hops: list[dict] = field(default_factory=list)
    positions: np.ndarray | None = None
    velocities: np.ndarray | None = None

    @property
    def total_energy(self) -> np.ndarray:
        """Kinetic + active-state potential energy [R], eV."""
        return self.kinetic + self.energies[np.arange(len(self.state)), self.state]


def _torsion(positions: np.ndarray, atoms: Sequence[int] | None) -> float:
    if atoms is None:
        return float("nan")
    from fusion.data.stilbene import dihedral_deg

    return dihedral_deg(positions, tuple(atoms))


def run_trajectory(surfaces: Surfaces, positions: np.ndarray, velocities_a_per_fs: np.ndarray,
                   masses_amu: np.ndarray, state: int, n_steps: int, dt_fs: float,
                   rng: np.random.Generator | None = None, hopping: bool = True,
                   torsion_atoms: Sequence[int] | None = None,
                   record_every: int = 1) -> TrajectoryResult:
    """Velocity Verlet on the active surface with gap-driven Landau–Zener hops.

    ``positions`` [n, 3] Å; ``velocities_a_per_fs`` [n, 3] Å/fs; ``masses_amu`` [n];
    ``state``: initial active state; ``n_steps`` of ``dt_fs``; ``rng``: the trajectory's
    generator (required with ``hopping``); ``hopping=False``: NVE on one surface.
    """
    if n_steps < 0 or record_every < 1:
        raise ValueError(f"need n_steps >= 0 and record_every >= 1, got {n_steps}, "
                         f"{record_every}")
    if not dt_fs > 0:
        raise ValueError(f"dt must be > 0 fs, got {dt_fs}")
    if hopping and rng is None:
        raise ValueError("hopping needs a seeded numpy Generator (rng)")
    fs = _ase_fs()
    dt = dt_fs * fs  # ASE time units
    x = np.array(positions, dtype=np.float64)  # [n, 3] Å
    v = np.array(velocities_a_per_fs, dtype=np.float64) / fs  # [n, 3] Å / ASE time
    m = np.asarray(masses_amu, dtype=np.float64)[:, None]  # [n, 1] amu
    if x.shape != v.shape or x.shape != (m.shape[0], 3):
        raise ValueError(f"positions {x.shape}, velocities {v.shape} and masses {m.shape[0]} "
                         "do not match ([n, 3], [n, 3], [n])")
    energies, forces = surfaces(x)
    n_states = energies.shape[0]
    if not 0 <= state < n_states:
        raise ValueError(f"initial state {state} out of range: the surfaces have {n_states}")
    active = int(state)

    n_records = n_steps // record_every + 1
    rec_time = np.arange(n_records) * record_every * dt_fs
    rec_state = np.zeros(n_records, dtype=np.int64)
    rec_energies = np.zeros((n_records, n_states))
    rec_kinetic = np.zeros(n_records)
    rec_torsion = np.zeros(n_records)
    hops: list[dict] = []

    def kinetic(vel: np.ndarray) -> float:
        return float(0.5 * np.sum(m * vel * vel))  # eV

    def record(step: int) -> None:
        if step % record_every == 0:
            r = step // record_every
            rec_state[r] = active
            rec_energies[r] = energies
            rec_kinetic[r] = kinetic(v)
            rec_torsion[r] = _torsion(x, torsion_atoms)

    def neighbours(s: int) -> list[int]:
        return [b for b in (s - 1, s + 1) if 0 <= b < n_states]

    # gap history per neighbour: list of (gap, snapshot), the last three steps
    history: dict[int, list] = {}

    def reset_history(snapshot) -> None:
        history.clear()
        for b in neighbours(active):
            history[b] = [(abs(snapshot[2][active] - snapshot[2][b]), snapshot)]

    step = 0
    record(0)
    reset_history((x, v, energies, forces, 0))
    while step < n_steps:
        x_new = x + dt * v + 0.5 * dt * dt * forces[active] / m
        energies_new, forces_new = surfaces(x_new)
        v_new = v + 0.5 * dt * (forces[active] + forces_new[active]) / m
        x, v, energies, forces = x_new, v_new, energies_new, forces_new
        step += 1
        if hopping:
            snapshot = (x, v, energies, forces, step)
            for b in neighbours(active):
                hist = history[b]
                hist.append((abs(energies[active] - energies[b]), snapshot))
                del hist[:-3]
                if len(hist) < 3:
                    continue
                (g0, _), (g1, mid), (g2, _) = hist
                if not (g1 < g0 and g1 < g2):
                    continue
                probability = belyaev_lebedev_probability(g0, g1, g2, dt_fs)
                u = float(rng.random())
                mx, mv, me, mf, mstep = mid
                event = {"time_fs": mstep * dt_fs, "from_state": active, "to_state": b,
                         "gap_ev": g1, "probability": probability, "random": u,
                         "torsion_deg": _torsion(mx, torsion_atoms)}
                if u >= probability:
                    hops.append({**event, "outcome": "stay"})
                    continue
                k_old = kinetic(mv)
                k_new = k_old + me[active] - me[b]
                if k_new < 0 or k_old == 0:
                    hops.append({**event, "outcome": "frustrated"})
                    continue
                hops.append({**event, "outcome": "hop"})
                # Go back to the minimum, switch surface, rescale velocities (energy conserved).
                x, energies, forces, step = mx, me, mf, mstep
                v = mv * math.sqrt(k_new / k_old)
                active = b
                reset_history((x, v, energies, forces, step))
                break
        record(step)
    return TrajectoryResult(time_fs=rec_time, state=rec_state, energies=rec_energies,
                            kinetic=rec_kinetic, torsion_deg=rec_torsion, hops=hops,
                            positions=x.copy(), velocities=v * fs)


def franck_condon_sample(positions: np.ndarray, masses_amu: np.ndarray, temperature_k: float,
                         rng: np.random.Generator, omega_ref_cm: float = 1000.0
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Thermal-displacement initial condition: positions [n, 3] Å (Gaussian, sigma as in
    :func:`fusion.data.stilbene.thermal_sigma`) and Maxwell–Boltzmann velocities [n, 3] Å/fs
    at ``temperature_k``; centre-of-mass displacement and momentum removed."""
    from ase import units

    from fusion.data.stilbene import thermal_sigma

    m = np.asarray(masses_amu, dtype=np.float64)
    sigma = thermal_sigma(m, temperature_k, omega_ref_cm)  # [n] Å
    disp = rng.standard_normal((m.shape[0], 3)) * sigma[:, None]
    disp -= (m[:, None] * disp).sum(0) / m.sum()
    v_std = np.sqrt(units.kB * temperature_k / m)  # [n] Å / ASE time
    v = rng.standard_normal((m.shape[0], 3)) * v_std[:, None]
    v -= (m[:, None] * v).sum(0) / m.sum()
    return np.asarray(positions, dtype=np.float64) + disp, v * units.fs


# --------------------------------------------------------------------------- ensembles


def stilbene_starts(seed: int = 0) -> tuple[dict, tuple[int, int, int, int]]:
    """Franck–Condon reference geometries ``{"cis": Atoms, "trans": Atoms}`` of stilbene
    (torsion 0° and 180°, rdkit ETKDG + MMFF with the torsion held, as the ``stilbene-tddft``
    frames are built) and the four atom indices of the central C=C torsion."""
    from ase import Atoms

    from fusion.data.stilbene import (
        STILBENE_SMILES,
        STILBENE_TORSION_SMARTS,
        TorsionGeometryBuilder,
    )

    builder = TorsionGeometryBuilder(STILBENE_SMILES, STILBENE_TORSION_SMARTS, seed)
    starts = {name: Atoms(numbers=builder.z, positions=builder.geometry(angle))
              for name, angle in (("cis", 0.0), ("trans", 180.0))}
    return starts, builder.torsion_atoms


_MODE_CACHE: dict = {}


def stilbene_normal_mode_starts(seed: int = 0) -> tuple[dict, tuple[int, int, int, int]]:
    """GFN2-xTB normal modes (:class:`fusion.data.normal_modes.NormalModes`) of the cis and
    trans S0 minima of stilbene ``{"cis": modes, "trans": modes}`` (BFGS from the rdkit
    geometries of :func:`stilbene_starts` to 0.001 eV/Å, central-difference Hessian) and the
    torsion atoms. About 40 s on one core; cached per process and seed."""
    if seed not in _MODE_CACHE:
        from fusion.data.normal_modes import hessian, normal_modes, optimise
        from fusion.data.stilbene_casscf import xtb_force_fn

        starts, torsion_atoms = stilbene_starts(seed)
        modes = {}
        for name, atoms in starts.items():
            z = atoms.numbers
            force_fn = xtb_force_fn(z, atoms.positions)
            pos = optimise(force_fn, z, atoms.positions, fmax=0.001)
            energy, _ = force_fn(pos)
            modes[name] = normal_modes(hessian(force_fn, pos), pos, atoms.get_masses(),
                                       energy=energy)
        _MODE_CACHE[seed] = (modes, torsion_atoms)
    return _MODE_CACHE[seed]


NORMAL_MODE_MIN_CM = 100.0  # modes below: thermal velocity, no displacement (phenyl torsions)


def normal_mode_sampler(modes, temperature_k: float, min_cm: float = NORMAL_MODE_MIN_CM
                        ) -> Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    """``rng -> (positions Å, velocities Å/fs)``: classical thermal sample in ``modes``
    (:func:`fusion.data.normal_modes.thermal_sample`)."""
    from fusion.data.normal_modes import thermal_sample

    def sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return thermal_sample(modes, temperature_k, rng, kind="classical", min_cm=min_cm)

    return sample


def _write_csv(path: Path, rows: list[dict], fieldnames: Sequence[str]) -> None:
    import io

    from fusion.train.checkpoint import atomic_write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


TRAJECTORY_FIELDS = ("start", "trajectory", "time_fs", "state", "torsion_deg", "kinetic_ev",
                     "total_ev", "e0_ev", "e1_ev")  # then e2_ev, ... for more states
HOP_FIELDS = ("start", "trajectory", "time_fs", "from_state", "to_state", "gap_ev",
              "probability", "random", "outcome", "torsion_deg")
SUMMARY_FIELDS = ("start", "trajectory", "final_state", "final_torsion_deg", "first_exit_fs",
                  "first_exit_to", "end_fs", "n_hops", "n_frustrated", "max_energy_drift_ev",
                  "n_states")


def energy_fields(n_states: int) -> tuple[str, ...]:
    """``trajectories.csv``'s energy columns for ``n_states`` states: ``e0_ev``, ``e1_ev``
    (NaN for one state), then ``e2_ev``, ... (eV)."""
    return tuple(f"e{k}_ev" for k in range(max(2, n_states)))


def run_ensemble(calculator_factory: Callable[[], object], starts: Mapping[str, object],
                 out_dir: str | os.PathLike, n_trajectories: int = 8, n_steps: int = 200,
                 dt_fs: float = 0.5, temperature_k: float = 300.0, initial_state: int = 1,
                 seed: int = 0, torsion_atoms: Sequence[int] | None = None,
                 record_every: int = 1, omega_ref_cm: float = 1000.0,
                 log: Callable[[str], None] = print,
                 samplers: Mapping[str, Callable] | None = None) -> dict[str, Path]:
    """Run ``n_trajectories`` per start (e.g. ``{"cis": atoms, "trans": atoms}``) on
    ``initial_state`` with surface hopping; write CSVs into ``out_dir``; return their paths.

    ``calculator_factory()`` returns an ASE calculator (multi-state: ``energies`` and
    ``state_forces`` results, e.g. :class:`~fusion.dynamics.calculator.FusionCalculator`); it is
    called once per start. Trajectory ``j`` of start number ``i`` uses
    ``numpy.random.default_rng([seed, i, j])`` for its initial condition and hops.
    ``samplers``: optional ``{start: rng -> (positions, velocities)}`` (e.g.
    :func:`normal_mode_sampler`); starts without one use :func:`franck_condon_sample`
    (independent Cartesian kicks, ``omega_ref_cm``).
    """
    if n_trajectories < 1:
        raise ValueError(f"n_trajectories must be >= 1, got {n_trajectories}")
    if not starts:
        raise ValueError("starts is empty: give at least one named geometry (ASE Atoms)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    traj_rows, hop_rows, summary_rows = [], [], []
    n_states = 1
    for i, (name, atoms) in enumerate(starts.items()):
        surfaces = ase_surfaces(calculator_factory(), atoms)
        masses = atoms.get_masses()
        for j in range(n_trajectories):
            rng = np.random.default_rng([int(seed), i, j])
            if samplers is not None and name in samplers:
                x0, v0 = samplers[name](rng)
            else:
                x0, v0 = franck_condon_sample(atoms.positions, masses, temperature_k, rng,
                                              omega_ref_cm)
            result = run_trajectory(surfaces, x0, v0, masses, initial_state, n_steps, dt_fs,
                                    rng=rng, torsion_atoms=torsion_atoms,
                                    record_every=record_every)
            total = result.total_energy
            states = result.energies.shape[1]
            n_states = max(n_states, states)
            for r in range(len(result.time_fs)):
                energies = dict(zip(energy_fields(states), result.energies[r]))
                traj_rows.append({
                    "start": name, "trajectory": j, "time_fs": round(result.time_fs[r], 6),
                    "state": int(result.state[r]), "torsion_deg": result.torsion_deg[r],
                    "kinetic_ev": result.kinetic[r], "total_ev": total[r],
                    "e1_ev": float("nan"), **energies})
            for hop in result.hops:
                hop_rows.append({"start": name, "trajectory": j, **hop})
            exits = [h for h in result.hops
                     if h["outcome"] == "hop" and h["from_state"] == initial_state]
            summary_rows.append({
                "start": name, "trajectory": j, "final_state": int(result.state[-1]),
                "final_torsion_deg": result.torsion_deg[-1],
                "first_exit_fs": exits[0]["time_fs"] if exits else "",
                "first_exit_to": int(exits[0]["to_state"]) if exits else "",
                "end_fs": result.time_fs[-1],
                "n_hops": sum(h["outcome"] == "hop" for h in result.hops),
                "n_frustrated": sum(h["outcome"] == "frustrated" for h in result.hops),
                "max_energy_drift_ev": float(np.max(np.abs(total - total[0]))),
                "n_states": states,
            })
            log(f"{name} trajectory {j}: final state {result.state[-1]}, torsion "
                f"{result.torsion_deg[-1]:.1f} deg, {summary_rows[-1]['n_hops']} hop(s)")
    paths = {"trajectories": out / "trajectories.csv", "hops": out / "hops.csv",
             "summary": out / "summary.csv"}
    _write_csv(paths["trajectories"], traj_rows,
               TRAJECTORY_FIELDS[:-2] + energy_fields(n_states))
    _write_csv(paths["hops"], hop_rows, HOP_FIELDS)
    _write_csv(paths["summary"], summary_rows, SUMMARY_FIELDS)
    return paths
