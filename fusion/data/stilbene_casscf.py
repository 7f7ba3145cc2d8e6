"""Stilbene on the SA2-CASSCF(2,2)/STO-3G stand-in surface: GFN2-xTB minima and normal modes,
a continuous relaxed torsion scan, a penalty-function S1/S0 crossing search, and the
validation numbers of ``docs/stilbene.md`` (issue 20).

- Geometries: GFN2-xTB (tblite) S0 minima of cis and trans stilbene (from the rdkit
  ETKDG/MMFF geometries of :class:`fusion.data.stilbene.TorsionGeometryBuilder`), and a
  relaxed scan of the central C=C torsion on GFN2-xTB S0 in which every point starts from the
  previous one (one half of the molecule rotated about the C=C bond by the step, then
  optimised with that dihedral held): the phenyl rings follow continuously instead of
  falling into unrelated MMFF minima.
- Normal modes: GFN2-xTB Hessians (central differences) at the minima, for thermal sampling
  (:mod:`fusion.data.normal_modes`).
- Crossing: :func:`penalty_meci` minimises Levine–Coe–Martínez's penalty function
  ``F = (E0 + E1)/2 + sigma * dE² / (dE + alpha)`` with the analytic SA-CASSCF gradients
  of both states (ASE BFGS on F), tracking the active orbitals from step to step.

Units: Å, eV, degrees.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fusion.data.casscf import pyramidalisation_deg, sa_casscf_labels
from fusion.data.normal_modes import hessian, normal_modes, optimise
from fusion.data.stilbene import (
    STILBENE_SMILES,
    STILBENE_TORSION_SMARTS,
    TorsionGeometryBuilder,
    dihedral_deg,
)

__all__ = ["StilbeneGeometry", "xtb_force_fn", "relaxed_scan", "penalty_meci",
           "geometry_measures"]

PENALTY_SIGMA = 3.5  # dimensionless (Levine, Coe, Martínez, J. Phys. Chem. B 2008)
PENALTY_ALPHA_EV = 0.02 * 27.211386245988  # 0.02 Hartree


def xtb_force_fn(z: np.ndarray, pos: np.ndarray, restart: bool = True) -> Callable:
    """A ``force_fn`` (positions Å → (energy eV, forces eV/Å)) for GFN2-xTB with tblite.

    ``restart``: start each SCF from the previous wavefunction (fast along a path; use False
    for unrelated geometries such as thermal samples)."""
    from fusion.data.xtb_md import _XTB

    xtb = _XTB(np.asarray(z), np.asarray(pos, dtype=np.float64))
    if restart:
        return xtb

    def fresh(x: np.ndarray) -> tuple[float, np.ndarray]:
        xtb.result = None
        return xtb(x)

    return fresh


class StilbeneGeometry:
    """Atom roles of stilbene (rdkit atom order of :data:`STILBENE_SMILES` with hydrogens).

    ``torsion_atoms`` (ipso, C, C, ipso), ``central`` (the two C=C carbons), ``hydrogens``
    of the central carbons, ``ortho`` (one ortho carbon of each ring), ``side`` (atoms on the
    second central carbon's side of the C=C bond, rotated by :meth:`set_torsion`).
    """

    def __init__(self, seed: int = 0) -> None:
        self.builder = TorsionGeometryBuilder(STILBENE_SMILES, STILBENE_TORSION_SMARTS, seed)
        mol = self.builder.mol
        a, b, c, d = self.builder.torsion_atoms
        self.z, self.masses = self.builder.z, self.builder.masses
        self.torsion_atoms = (a, b, c, d)
        self.central = (b, c)

        def neighbours(i):
            return [n.GetIdx() for n in mol.GetAtomWithIdx(i).GetNeighbors()]

        self.hydrogens = tuple(next(n for n in neighbours(x) if self.z[n] == 1) for x in (b, c))
        self.ortho = tuple(next(n for n in neighbours(ipso) if n not in (b, c))
                           for ipso in (a, d))
        side, stack = {c}, [c]
        while stack:
            i = stack.pop()
            for n in neighbours(i):
                if n != b and n not in side:
                    side.add(n)
                    stack.append(n)
        self.side = np.array(sorted(side))

    def set_torsion(self, pos: np.ndarray, angle_deg: float) -> np.ndarray:
        """``pos`` with the second half rotated about the C=C bond to the signed dihedral
        ``angle_deg`` (ASE convention)."""
        from ase import Atoms

        atoms = Atoms(numbers=self.z, positions=pos)
        mask = np.zeros(len(self.z), dtype=bool)
        mask[self.side] = True
        atoms.set_dihedral(*self.torsion_atoms, angle_deg, mask=mask.tolist())
        return atoms.get_positions()

    def measures(self, pos: np.ndarray) -> dict:
        """Central torsion (0..180), phenyl twists (ring plane vs C=C, 0..90) and
        pyramidalisation at each central carbon (degrees)."""
        a, b, c, d = self.torsion_atoms
        twist = []
        for ctr, other, ipso, ortho in ((c, b, a, self.ortho[0]), (b, c, d, self.ortho[1])):
            t = dihedral_deg(pos, (ctr, other, ipso, ortho))
            twist.append(min(t, 180.0 - t))
        pyr = [pyramidalisation_deg(pos, b, c, (a, self.hydrogens[0])),
               pyramidalisation_deg(pos, c, b, (d, self.hydrogens[1]))]
        hcch = dihedral_deg(pos, (self.hydrogens[0], b, c, self.hydrogens[1]))
        return {"torsion_deg": dihedral_deg(pos, self.torsion_atoms),
                "phenyl_twist_deg": twist, "pyramidalisation_deg": pyr, "hcch_deg": hcch}


def geometry_measures(geo: StilbeneGeometry, pos: np.ndarray) -> dict:
    return geo.measures(pos)


def relaxed_scan(geo: StilbeneGeometry, start: np.ndarray, angles_deg, force_fn_factory,
                 fmax: float = 0.01, log: Callable[[str], None] = print) -> list[np.ndarray]:
    """Continuous constrained relaxation along ``angles_deg`` (signed, ASE convention): point k
    starts from point k − 1 with one half rotated rigidly to the new angle, then is optimised
    with **both** dihedrals about the C=C bond held at their rotated values (ipso–C=C–ipso
    and H–C=C–H). Holding only the first lets the optimiser meet it by pyramidalising the two
    carbons instead of twisting the π bond (measured with GFN2-xTB: at a nominal 90° the
    H–C=C–H dihedral stayed near 150° and both carbons were pyramidalised by 28°).
    Returns the geometries."""
    from ase import Atoms

    out, pos = [], np.asarray(start, dtype=np.float64)
    hb, hc = geo.hydrogens
    b, c = geo.central
    for angle in angles_deg:
        pos = geo.set_torsion(pos, angle)
        hcch = Atoms(numbers=geo.z, positions=pos).get_dihedral(hb, b, c, hc)
        pos = optimise(force_fn_factory(pos), geo.z, pos, fmax=fmax,
                       dihedrals=[(angle, geo.torsion_atoms), (hcch, (hb, b, c, hc))])
        m = geo.measures(pos)
        log(f"scan {angle:7.1f}: torsion {m['torsion_deg']:6.1f}, H-C=C-H {m['hcch_deg']:6.1f}, "
            f"phenyl twists {m['phenyl_twist_deg'][0]:5.1f} {m['phenyl_twist_deg'][1]:5.1f}, "
            f"pyramidalisation {m['pyramidalisation_deg'][0]:4.1f} "
            f"{m['pyramidalisation_deg'][1]:4.1f}")
        out.append(pos.copy())
    return out


def penalty_meci(geo: StilbeneGeometry, pos: np.ndarray, steps: int = 20,
                 fmax: float = 0.05, sigma: float = PENALTY_SIGMA,
                 alpha_ev: float = PENALTY_ALPHA_EV, log_path: str | Path | None = None,
                 log: Callable[[str], None] = print, first_step: int = 0) -> dict:
    """Minimise the penalty function of the SA2-CASSCF(2,2) S0/S1 pair from ``pos``.

    Every evaluation is one CASSCF with both gradients; each is appended to ``log_path``
    (JSON lines: step, energies, gap, measures, positions, seconds). Returns the last
    evaluation's record plus ``converged`` (BFGS reached ``fmax`` on F, eV/Å).
    """
    from ase import Atoms
    from ase.calculators.calculator import Calculator, all_changes
    from ase.optimize import BFGS

    state = {"mo": None, "n": first_step, "last": None}  # n: numbering continues on resume

    class Penalty(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            x = self.atoms.get_positions()
            e, f, info = sa_casscf_labels(geo.z, x, geo.central, mo_guess=state["mo"])
            state["mo"] = info["mo"]
            gap = float(e[1] - e[0])
            dpen = sigma * (gap**2 + 2 * alpha_ev * gap) / (gap + alpha_ev) ** 2
            value = 0.5 * (e[0] + e[1]) + sigma * gap**2 / (gap + alpha_ev)
            forces = 0.5 * (f[0] + f[1]) + dpen * (f[1] - f[0])
            record = {"step": state["n"], "energies_ev": e.tolist(), "gap_ev": gap,
                      "penalty_ev": float(value), "natocc": info["natocc"].tolist(),
                      "seconds": info["seconds"], **geo.measures(x),
                      "pos": x.tolist(), "forces_ev_a": f.tolist()}
            state["n"] += 1
            state["last"] = record
            if log_path is not None:
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            log(f"meci {record['step']}: gap {gap:.3f} eV, torsion {record['torsion_deg']:.1f}, "
                f"pyr {record['pyramidalisation_deg'][0]:.1f}/"
                f"{record['pyramidalisation_deg'][1]:.1f}, {info['seconds']:.0f} s")
            self.results = {"energy": float(value), "forces": forces}

    atoms = Atoms(numbers=geo.z, positions=np.asarray(pos, dtype=np.float64))
    atoms.calc = Penalty()
    opt = BFGS(atoms, logfile=None, maxstep=0.1)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    return {**state["last"], "converged": converged}


def run_validation(out_dir: str | Path, scan_step_deg: float = 15.0,
                   log: Callable[[str], None] = print) -> dict:
    """xTB minima, continuous xTB scan trans → cis, SA-CASSCF energies on them (no
    gradients); writes ``validation.json`` and ``geometries.npz`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    geo = StilbeneGeometry(0)
    minima = {}
    for name, angle in (("trans", 180.0), ("cis", 0.0)):
        start = geo.builder.geometry(angle)
        pos = optimise(xtb_force_fn(geo.z, start), geo.z, start, fmax=0.005)
        minima[name] = pos
        log(f"xTB {name} minimum: {geo.measures(pos)}")
    angles = np.arange(180.0, -0.1, -scan_step_deg)
    scan = relaxed_scan(geo, minima["trans"], angles, lambda p: xtb_force_fn(geo.z, p), log=log)
    records = {"minima": {}, "scan": []}
    for name, pos in minima.items():
        e, _, info = sa_casscf_labels(geo.z, pos, geo.central, gradients=False)
        records["minima"][name] = {"energies_ev": e.tolist(), "gap_ev": float(e[1] - e[0]),
                                   "natocc": info["natocc"].tolist(),
                                   "seconds": info["seconds"], **geo.measures(pos)}
        log(f"{name}: S1-S0 {e[1] - e[0]:.3f} eV ({info['seconds']:.0f} s)")
    mo = None
    for angle, pos in zip(angles, scan):
        e, _, info = sa_casscf_labels(geo.z, pos, geo.central, gradients=False, mo_guess=mo)
        mo = info["mo"]
        fresh = e
        if round(angle) % 90 == 0:  # the same point from RHF HOMO/LUMO, without tracking
            fresh, _, _ = sa_casscf_labels(geo.z, pos, geo.central, gradients=False)
        rec = {"angle_deg": float(angle), "energies_ev": e.tolist(), "gap_ev": float(e[1] - e[0]),
               "fresh_energies_ev": fresh.tolist(), "natocc": info["natocc"].tolist(),
               "seconds": info["seconds"], **geo.measures(pos)}
        records["scan"].append(rec)
        log(f"scan {angle:6.1f}: S0 {e[0]:.3f} S1 {e[1]:.3f} gap {e[1] - e[0]:.3f} eV "
            f"(fresh orbitals: gap {fresh[1] - fresh[0]:.3f}, S0 diff {fresh[0] - e[0]:+.4f})")
        (out / "validation.json").write_text(json.dumps(records, indent=1))
    np.savez(out / "geometries.npz", z=geo.z, cis=minima["cis"], trans=minima["trans"],
             scan=np.stack(scan), angles=angles)
    (out / "validation.json").write_text(json.dumps(records, indent=1))
    return records


def run_meci(out_dir: str | Path, steps: int = 30, pyramidalise_a: float = 0.15,
             log: Callable[[str], None] = print) -> dict:
    """Penalty-function crossing search from the 90° point of the xTB scan with the second
    central carbon pushed ``pyramidalise_a`` Å out of the plane of its neighbours; resumes from
    the last geometry in ``meci.jsonl``. Writes ``meci.json`` (the last evaluation)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    geo = StilbeneGeometry(0)
    log_path = out / "meci.jsonl"
    done = [json.loads(line) for line in log_path.read_text().splitlines()] \
        if log_path.exists() else []
    if done:
        pos = np.asarray(done[-1]["pos"])
        steps = max(1, steps - len(done))
        log(f"resuming from evaluation {len(done)}")
    else:
        start = geo.builder.geometry(180.0)
        start = optimise(xtb_force_fn(geo.z, start), geo.z, start, fmax=0.005)
        pos = relaxed_scan(geo, start, np.arange(180.0, 89.0, -15.0),
                           lambda p: xtb_force_fn(geo.z, p), log=log)[-1]
        b, c = geo.central
        d = geo.torsion_atoms[3]
        normal = np.cross(pos[d] - pos[c], pos[geo.hydrogens[1]] - pos[c])
        pos[c] += pyramidalise_a * normal / np.linalg.norm(normal)
    result = penalty_meci(geo, pos, steps=steps, log_path=log_path, log=log,
                          first_step=len(done))
    (out / "meci.json").write_text(json.dumps(result, indent=1))
    return result


def run_pyramidalisation_scan(out_dir: str | Path, torsion_deg: float = 90.0,
                              shifts_a=(0.0, 0.15, 0.3, 0.45, 0.6),
                              log: Callable[[str], None] = print) -> list[dict]:
    """SA-CASSCF energies (no gradients) at the xTB relaxed-scan point ``torsion_deg`` with
    the second central carbon moved ``shift`` Å along the normal of the plane of its three
    neighbours (pyramidalisation), orbitals tracked from shift to shift. Writes
    ``pyramidalisation.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    geo = StilbeneGeometry(0)
    start = geo.builder.geometry(180.0)
    start = optimise(xtb_force_fn(geo.z, start), geo.z, start, fmax=0.005)
    angles = np.arange(180.0, torsion_deg - 0.1, -SCAN_STEP_DEG)
    base = relaxed_scan(geo, start, angles, lambda p: xtb_force_fn(geo.z, p), log=log)[-1]
    b, c = geo.central
    d = geo.torsion_atoms[3]
    normal = np.cross(base[d] - base[c], base[geo.hydrogens[1]] - base[c])
    normal /= np.linalg.norm(normal)
    records, mo = [], None
    for shift in shifts_a:
        pos = base.copy()
        pos[c] += shift * normal
        e, _, info = sa_casscf_labels(geo.z, pos, geo.central, gradients=False, mo_guess=mo)
        mo = info["mo"]
        rec = {"shift_a": float(shift), "energies_ev": e.tolist(), "gap_ev": float(e[1] - e[0]),
               "natocc": info["natocc"].tolist(), "seconds": info["seconds"],
               **geo.measures(pos), "pos": pos.tolist()}
        records.append(rec)
        log(f"pyramidalisation {shift:.2f} A: pyr {rec['pyramidalisation_deg'][1]:.1f} deg, "
            f"S0 {e[0]:.3f} S1 {e[1]:.3f} gap {e[1] - e[0]:.3f} eV")
        (out / "pyramidalisation.json").write_text(json.dumps(records, indent=1))
    return records


# ------------------------------------------------------------------- the stilbene-casscf data

CASSCF_FORMAT_VERSION = 1
N_SCAN_FRAMES = 7  # frames 0..6: the xTB scan at 180, 150, ..., 0 degrees
SCAN_STEP_DEG = 15.0  # the scan itself steps 15 degrees (every other point is a frame)
THERMAL_MIN_CM = 100.0  # normal modes below this: velocity only (not used for frames)


def _casscf_settings(seed: int) -> dict:
    return {"method": "SA2-CASSCF(2,2)", "basis": "sto-3g", "density_fit": True,
            "seed": int(seed), "temperature_k": 300.0, "geometry": "gfn2-xtb",
            "format_version": CASSCF_FORMAT_VERSION}


class CasscfPlan:
    """The geometries of the ``stilbene-casscf`` frames (deterministic in ``seed``).

    Frame ``i < N_SCAN_FRAMES``: the continuous GFN2-xTB relaxed scan point at
    ``180 - 30 i`` degrees (no displacement). Frame ``i >= N_SCAN_FRAMES``: a classical
    300 K sample in the GFN2-xTB normal modes of the trans (even ``i - N_SCAN_FRAMES``) or cis
    (odd) minimum, ``numpy.random.default_rng([seed, i])``, modes below 100 cm⁻¹ not displaced.
    Building the plan (minima, Hessians, scan) takes about a minute on one core.
    """

    def __init__(self, seed: int = 0, temperature_k: float = 300.0,
                 log: Callable[[str], None] = print) -> None:
        from fusion.data.normal_modes import thermal_sample

        self._sample = thermal_sample
        self.seed, self.temperature_k = int(seed), float(temperature_k)
        self.geo = StilbeneGeometry(seed)
        self.z = self.geo.z
        self.modes = {}
        for name, angle in (("trans", 180.0), ("cis", 0.0)):
            start = self.geo.builder.geometry(angle)
            ff = xtb_force_fn(self.z, start)
            pos = optimise(ff, self.z, start, fmax=0.001)
            energy, _ = ff(pos)
            self.modes[name] = normal_modes(hessian(ff, pos), pos, self.geo.masses,
                                            energy=energy)
        angles = np.arange(180.0, -0.1, -SCAN_STEP_DEG)
        scan = relaxed_scan(self.geo, self.modes["trans"].pos, angles,
                            lambda p: xtb_force_fn(self.z, p), log=lambda m: None)
        self.scan = scan[::2]  # 180, 150, ..., 0
        log(f"plan: xTB minima, normal modes and scan ready (seed {seed})")

    def frame(self, index: int) -> tuple[np.ndarray, str]:
        """Positions [n, 3] Å and kind (``scan``, ``trans``, ``cis``) of frame ``index``."""
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        if index < N_SCAN_FRAMES:
            return self.scan[index].copy(), "scan"
        kind = ("trans", "cis")[(index - N_SCAN_FRAMES) % 2]
        rng = np.random.default_rng([self.seed, int(index)])
        pos, _ = self._sample(self.modes[kind], self.temperature_k, rng, min_cm=THERMAL_MIN_CM)
        return pos, kind


def generate_casscf_frames(n_frames: int, cache_path: str | Path, seed: int = 0,
                           indices: list[int] | None = None, chunk_size: int = 1,
                           threads: int = 1, plan: CasscfPlan | None = None,
                           log: Callable[[str], None] = print):
    """Generate (or resume) the first ``n_frames`` ``stilbene-casscf`` frames into
    ``cache_path`` (the cache format of :mod:`fusion.data.stilbene`, plus ``index`` [F] and
    ``kind`` [F]). ``indices``: compute only these frame indices (a shard; several shard
    caches are merged with :func:`merge_casscf_shards`). Frames already stored are kept;
    the cache is rewritten atomically after every ``chunk_size`` frames."""
    from pyscf import lib

    from fusion.data.cache import load_npz_checked, save_npz_atomic

    cache_path = Path(cache_path)
    settings = _casscf_settings(seed)
    wanted = list(range(n_frames)) if indices is None else sorted(set(indices))
    stored: dict[int, dict] = {}
    if cache_path.exists():
        old = load_npz_checked(cache_path, CASSCF_FORMAT_VERSION, ("index",))
        old_settings = json.loads(str(old["settings"]))
        if old_settings != settings:
            raise ValueError(f"{cache_path} was generated with other settings ({old_settings} vs "
                             f"{settings}); use another cache path or delete it")
        for k, i in enumerate(old["index"].tolist()):
            stored[int(i)] = {key: old[key][k] for key in ("pos", "energies", "forces",
                                                           "torsion", "kind")}
    todo = [i for i in wanted if i not in stored]
    if todo:
        if plan is None:
            plan = CasscfPlan(seed, log=log)
        old_threads = lib.num_threads()
        lib.num_threads(threads)
        try:
            for n_done, i in enumerate(todo, 1):
                pos, kind = plan.frame(i)
                try:
                    e, f, info = sa_casscf_labels(plan.z, pos, plan.geo.central)
                except RuntimeError as err:
                    raise RuntimeError(f"{cache_path}: frame {i}: {err}") from err
                torsion = dihedral_deg(pos, plan.geo.torsion_atoms)
                stored[i] = {"pos": pos, "energies": e, "forces": f, "torsion": torsion,
                             "kind": kind}
                log(f"frame {i} ({kind}): torsion {torsion:6.1f} deg, S1-S0 {e[1] - e[0]:.3f} "
                    f"eV, {info['seconds']:.0f} s")
                if n_done % chunk_size == 0 or n_done == len(todo):
                    _save_casscf(cache_path, plan.z, stored, settings, save_npz_atomic)
        finally:
            lib.num_threads(old_threads)
    return stored


def _save_casscf(path: Path, z: np.ndarray, stored: dict, settings: dict, save) -> None:
    order = sorted(stored)
    save(path, {
        "z": np.asarray(z, dtype=np.int64), "index": np.asarray(order, dtype=np.int64),
        "pos": np.stack([stored[i]["pos"] for i in order]),
        "energies": np.stack([stored[i]["energies"] for i in order]),
        "forces": np.stack([stored[i]["forces"] for i in order]),
        "torsion": np.asarray([stored[i]["torsion"] for i in order], dtype=np.float64),
        "kind": np.asarray([str(stored[i]["kind"]) for i in order]),
        "settings": np.asarray(json.dumps(settings, sort_keys=True)),
    }, CASSCF_FORMAT_VERSION)


def merge_casscf_shards(shard_paths, out_path: str | Path) -> Path:
    """Merge shard caches of :func:`generate_casscf_frames` (same settings; a frame index in
    several shards must hold the same numbers) into ``out_path``, frames in index order."""
    from fusion.data.cache import load_npz_checked, save_npz_atomic

    stored: dict[int, dict] = {}
    settings = z = None
    for path in shard_paths:
        d = load_npz_checked(path, CASSCF_FORMAT_VERSION, ("index", "kind", "settings", "z"))
        s = json.loads(str(d["settings"]))
        if settings is None:
            settings, z = s, d["z"]
        elif s != settings:
            raise ValueError(f"{path}: other settings than the first shard ({s} vs {settings})")
        for k, i in enumerate(d["index"].tolist()):
            frame = {key: d[key][k] for key in ("pos", "energies", "forces", "torsion", "kind")}
            if i in stored and not np.allclose(stored[i]["energies"], frame["energies"]):
                raise ValueError(f"{path}: frame {i} differs from the same frame in another shard")
            stored[int(i)] = frame
    if settings is None:
        raise ValueError("no shard caches given")
    _save_casscf(Path(out_path), z, stored, settings, save_npz_atomic)
    return Path(out_path)


MECI_INDEX_OFFSET = 1000  # frame index of evaluation k of the crossing search: 1000 + k


def meci_frames_shard(meci_jsonl: str | Path, out_path: str | Path, seed: int = 0,
                      every: int = 1) -> Path:
    """A shard cache (same settings as :func:`generate_casscf_frames`) holding every
    ``every``-th evaluation of the penalty-function crossing search in ``meci_jsonl``
    (positions, both energies and forces as computed there; an evaluation repeating the
    previous geometry, as a resumed search makes, is dropped), frame index
    ``MECI_INDEX_OFFSET + step``, kind ``meci``."""
    from fusion.data.cache import save_npz_atomic

    records = [json.loads(line) for line in Path(meci_jsonl).read_text().splitlines()]
    records = [r for r in records if "forces_ev_a" in r]
    # a resumed search evaluates its last geometry again: keep the first of such repeats
    records = [r for k, r in enumerate(records)
               if k == 0 or r["pos"] != records[k - 1]["pos"]][::every]
    if not records:
        raise ValueError(f"{meci_jsonl} holds no evaluation with forces")
    geo = StilbeneGeometry(seed)
    stored = {MECI_INDEX_OFFSET + int(r["step"]): {
        "pos": np.asarray(r["pos"]), "energies": np.asarray(r["energies_ev"]),
        "forces": np.asarray(r["forces_ev_a"]), "torsion": float(r["torsion_deg"]),
        "kind": "meci"} for r in records}
    _save_casscf(Path(out_path), geo.z, stored, _casscf_settings(seed), save_npz_atomic)
    return Path(out_path)


# ------------------------------------------------------------------------ registered dataset

CASSCF_KEY = "stilbene-casscf"
CASSCF_SHIPPED = Path(__file__).parent / "files" / "stilbene-casscf.npz"


def _casscf_cache_path(cache_dir: str | Path = "resources") -> Path:
    from fusion.data.registry import family_cache_path

    return family_cache_path(CASSCF_KEY, cache_dir)


def prepare_casscf(cache_dir: str | Path = "resources") -> Path:
    """Copy the shipped ``stilbene-casscf`` frames into the cache (they are not recomputed
    here: about 2–6 CPU-min a frame; see :func:`generate_casscf_frames`)."""
    import os
    import shutil

    path = _casscf_cache_path(cache_dir)
    if not CASSCF_SHIPPED.exists():
        raise FileNotFoundError(f"the shipped frames {CASSCF_SHIPPED} are missing (a broken "
                                "install?); regenerate them with fusion.data.stilbene_casscf."
                                "generate_casscf_frames")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".copy.npz")
        shutil.copyfile(CASSCF_SHIPPED, tmp)
        os.replace(tmp, path)
    return path


def load_casscf_dataset(cache_dir: str | Path = "resources", n_train: int | None = None,
                        n_val: int | None = None, n_test: int | None = None, seed: int = 0):
    """``stilbene-casscf`` as ``(Structures, splits)`` (S0/S1, as ``stilbene-tddft``)."""
    from fusion.data.stilbene import SPLIT_SEED, frames_structures, load_stilbene
    from fusion.data.xtb_md import frame_split

    path = _casscf_cache_path(cache_dir)
    if not path.exists():
        prepare_casscf(cache_dir)
    frames = load_stilbene(path)
    return frames_structures(frames, CASSCF_KEY), frame_split(len(frames), n_train, n_val,
                                                              n_test, SPLIT_SEED)


def _register() -> None:
    from fusion.data.registry import DatasetFamily, DatasetSpec, register, register_family

    register_family(DatasetFamily(CASSCF_KEY, _casscf_cache_path, prepare_casscf))
    register(DatasetSpec(
        key=CASSCF_KEY, loader=load_casscf_dataset, family=CASSCF_KEY,
        card={
            "name": "stilbene S0/S1 at SA2-CASSCF(2,2)/STO-3G (multireference stand-in)",
            "source": "generated: GFN2-xTB continuous relaxed torsion scan (180..0 deg) and "
                      "classical 300 K normal-mode samples around the GFN2-xTB cis and trans "
                      "minima; pyscf density-fitted SA2-CASSCF(2,2)/STO-3G S0 and S1 energies "
                      "and analytic state-specific forces; shipped with the package",
            "license": "generated here (no third-party data)",
            "offline": True,
            "smiles": STILBENE_SMILES,
            "states": ["S0", "S1"],
            "units": "energies eV (total, per state; reported meV), forces eV/Å "
                     "(reported meV/Å), torsion degrees",
            "report_unit": "meV",
            "split": "RandomState(0) permutation of the frames: train first, val next, "
                     "test from the end; default 60/10/30 %",
        },
    ))


_register()


def _now() -> str:
    return time.strftime("%H:%M:%S")


def _log(msg: str) -> None:
    print(f"[{_now()}] {msg}", flush=True)


if __name__ == "__main__":  # pragma: no cover - manual runs, see docs/stilbene.md
    import sys

    what = sys.argv[1]
    if what == "validate":
        run_validation(sys.argv[2], log=_log)
    elif what == "meci":
        run_meci(sys.argv[2], steps=int(sys.argv[3]), log=_log)
    elif what == "pyramidalise":
        run_pyramidalisation_scan(sys.argv[2], log=_log)
    elif what == "frames":  # frames N CACHE [i,j,k]
        shard = [int(i) for i in sys.argv[4].split(",")] if len(sys.argv) > 4 else None
        generate_casscf_frames(int(sys.argv[2]), sys.argv[3], indices=shard, log=_log)
    else:
        raise SystemExit(f"unknown command {what!r}")
