"""``stilbene-tddft``: an offline stand-in for xxMD stilbene, generated with pyscf.

Frames are geometries of stilbene (or any molecule with one torsion about a double bond)
along the central C=C torsion from *cis* (0°) to *trans* (180°), each with a seeded thermal
displacement, labelled with S0 and S1 energies and forces from Tamm–Dancoff linear response
(``pyscf.tdscf.TDA``) with analytic gradients (``td.nuc_grad_method()``).

Geometry of frame ``i`` (deterministic in ``(seed, i)``, independent of ``n_frames``, so a
cache can be extended later and a resumed run reproduces the same frames):

- target torsion: frame 0 is 0° (cis), frame 1 is 180° (trans), frame ``i >= 2`` is
  ``180° * vdc(i - 1)`` with ``vdc`` the base-2 van der Corput sequence (90°, 45°, 135°,
  22.5°, ...), so any prefix of the frames covers the path evenly;
- the torsion is set with rdkit (``SetDihedralDeg``) on a seeded ETKDG + MMFF geometry and
  the rest of the molecule is relaxed with MMFF with that torsion held fixed;
- thermal displacement: every atom moves by a Gaussian with standard deviation
  ``sigma_a = sqrt(k_B T / (m_a omega_ref^2))`` per Cartesian component (the classical
  thermal amplitude of an oscillator of wavenumber ``omega_ref``, default 1000 cm^-1; about
  0.084 Å for H and 0.024 Å for C at 300 K), with the mass-weighted mean removed (no net
  translation); ``rng = numpy.random.default_rng([seed, i])``.

The stored torsion angle is the one measured on the displaced geometry (degrees, 0..180).

Electronic structure: ``method="hf"`` is CIS (TDA on RHF), the cheapest choice; any other
value is a pyscf exchange–correlation name (``"b3lyp"``, ...) for TDA-DFT. For ``"hf"`` the
S0 gradient is assembled from the terms that the S1 gradient already computes (saving the
second pass over the 2-electron derivative integrals, about a third of the time); for DFT
it is a separate ground-state gradient.

Cache (``.npz``, written atomically after every chunk of frames; a killed generation resumes
from the frames already stored):

=============  =================  ===========================================
key            shape              meaning
=============  =================  ===========================================
``z``          ``[n]`` int64      atomic numbers
``pos``        ``[F, n, 3]``      positions, Å
``energies``   ``[F, 2]``         S0, S1 total energies, eV
``forces``     ``[F, 2, n, 3]``   S0, S1 forces, eV/Å
``torsion``    ``[F]``            central torsion angle, degrees in [0, 180]
``settings``   ``[]`` str         JSON of the generation settings (checked on resume)
=============  =================  ===========================================

Registered datasets (both S0 and S1: ``y`` [M, 2] total energies, forces [A, 2, 3]):

- ``stilbene-tddft``: the first :data:`N_FRAMES` frames (seed 0, CIS/STO-3G, 300 K). They
  ship with the package (``fusion/data/files/stilbene-tddft.npz``, provenance in
  ``fusion/data/files/README.md``), because computing them takes about an hour on 2 cores;
  ``prepare`` copies that file into the cache and checks it, so the demo never waits for
  quantum chemistry. A test recomputes shipped frames with this module.
- ``stilbene-tddft-1k``: 1,000 frames; ``prepare`` starts from the shipped frames and computes
  the rest (about 30 s a frame on one core; resumable; ``threads`` from the workflow rule).

pyscf and rdkit are imported inside functions only.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fusion.data.cache import cache_error, load_npz_checked, save_npz_atomic
from fusion.data.registry import (
    DatasetFamily,
    DatasetSpec,
    family_cache_path,
    register,
    register_family,
)
from fusion.data.structures import Structures

__all__ = [
    "STILBENE_SMILES",
    "ETHYLENE_SMILES",
    "StilbeneFrames",
    "frame_torsion_target",
    "thermal_sigma",
    "TorsionGeometryBuilder",
    "excited_state_labels",
    "generate_torsion_frames",
    "generate_stilbene",
    "load_stilbene",
    "dihedral_deg",
]

FORMAT_VERSION = 1
STILBENE_SMILES = "c1ccccc1/C=C/c1ccccc1"
# torsion atoms: ring carbon, the two central carbons, ring carbon
STILBENE_TORSION_SMARTS = "c-[CX3]=[CX3]-c"
ETHYLENE_SMILES = "C=C"
ETHYLENE_TORSION_SMARTS = "[#1]-[#6]=[#6]-[#1]"

HARTREE_TO_EV = 27.211386245988  # CODATA 2018, as pyscf.data.nist
BOHR_TO_ANGSTROM = 0.529177210903
K_B_EV = 8.617333262e-5  # eV/K
AMU_KG = 1.66053906660e-27
EV_J = 1.602176634e-19
SPEED_OF_LIGHT_CM_S = 2.99792458e10

REQUIRED_KEYS = ("z", "pos", "energies", "forces", "torsion", "settings")


@dataclass
class StilbeneFrames:
    """Frames of a cache (see module docstring for units and shapes)."""

    z: np.ndarray  # [n] int64
    pos: np.ndarray  # [F, n, 3] Å
    energies: np.ndarray  # [F, 2] eV (S0, S1)
    forces: np.ndarray  # [F, 2, n, 3] eV/Å
    torsion: np.ndarray  # [F] degrees
    settings: dict

    def __len__(self) -> int:
        return int(self.pos.shape[0])


# ----------------------------------------------------------------------------- geometry


def _van_der_corput(k: int) -> float:
    """Base-2 van der Corput number of ``k >= 1`` (1 -> 0.5, 2 -> 0.25, 3 -> 0.75, ...)."""
    value, denom = 0.0, 1.0
    while k:
        denom *= 2.0
        value += (k & 1) / denom
        k >>= 1
    return value


def frame_torsion_target(index: int) -> float:
    """Target torsion (degrees) of frame ``index``: 0, 180, then 180 * vdc(index - 1)."""
    if index < 0:
        raise ValueError(f"frame index must be >= 0, got {index}")
    if index == 0:
        return 0.0
    if index == 1:
        return 180.0
    return 180.0 * _van_der_corput(index - 1)


def thermal_sigma(masses_amu: np.ndarray, temperature_k: float,
                  omega_ref_cm: float = 1000.0) -> np.ndarray:
    """Per-atom Gaussian displacement std (Å): ``sqrt(k_B T / (m omega_ref^2))``.

    ``masses_amu`` [n] in atomic mass units, ``temperature_k`` in K, ``omega_ref_cm`` the
    reference vibrational wavenumber in cm^-1. Returns [n] in Å.
    """
    if temperature_k < 0:
        raise ValueError(f"temperature must be >= 0 K, got {temperature_k}")
    if not omega_ref_cm > 0:
        raise ValueError(f"omega_ref must be > 0 cm^-1, got {omega_ref_cm}")
    omega = 2.0 * math.pi * SPEED_OF_LIGHT_CM_S * omega_ref_cm  # rad/s
    k_spring = np.asarray(masses_amu, dtype=np.float64) * AMU_KG * omega**2  # N/m = J/m^2
    k_spring_ev_a2 = k_spring / EV_J * 1e-20  # eV/Å^2
    return np.sqrt(K_B_EV * temperature_k / k_spring_ev_a2)


def dihedral_deg(pos: np.ndarray, atoms: tuple[int, int, int, int]) -> float:
    """Unsigned dihedral angle (degrees, 0..180) of ``atoms`` in ``pos`` [n, 3]."""
    p0, p1, p2, p3 = (np.asarray(pos[a], dtype=np.float64) for a in atoms)
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1n) * b1n
    w = b2 - np.dot(b2, b1n) * b1n
    x = np.dot(v, w)
    y = np.dot(np.cross(b1n, v), w)
    return float(abs(math.degrees(math.atan2(y, x))))


class TorsionGeometryBuilder:
    """Seeded geometries of a molecule along one torsion about a double bond.

    ``smiles``: the molecule (hydrogens are added); ``torsion_smarts``: a 4-atom SMARTS whose
    first match defines the torsion; ``seed``: ETKDG random seed. ``geometry(angle_deg)``
    returns positions [n, 3] in Å with that torsion, relaxed by MMFF with the torsion fixed.
    """

    def __init__(self, smiles: str, torsion_smarts: str, seed: int = 0) -> None:
        from rdkit import Chem
        from rdkit.Chem import AllChem

        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise ValueError(f"rdkit cannot parse SMILES {smiles!r}")
        mol = Chem.AddHs(mol)
        pattern = Chem.MolFromSmarts(torsion_smarts)
        if pattern is None:
            raise ValueError(f"rdkit cannot parse torsion SMARTS {torsion_smarts!r}")
        matches = mol.GetSubstructMatches(pattern)
        if not matches:
            raise ValueError(f"torsion SMARTS {torsion_smarts!r} matches nothing in {smiles!r}")
        self.torsion_atoms: tuple[int, int, int, int] = tuple(int(a) for a in matches[0])
        params = AllChem.ETKDGv3()
        params.randomSeed = int(seed)
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise RuntimeError(f"ETKDG embedding failed for {smiles!r} (seed {seed})")
        AllChem.MMFFOptimizeMolecule(mol)
        self.mol = mol
        self.smiles = smiles
        self.z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
        self.masses = np.array([a.GetMass() for a in mol.GetAtoms()], dtype=np.float64)

    def geometry(self, angle_deg: float) -> np.ndarray:
        """Positions [n, 3] (Å) with the torsion at ``angle_deg`` (MMFF-relaxed otherwise)."""
        from rdkit import Chem
        from rdkit.Chem import AllChem, rdMolTransforms

        mol = Chem.Mol(self.mol)
        conf = mol.GetConformer()
        a, b, c, d = self.torsion_atoms
        rdMolTransforms.SetDihedralDeg(conf, a, b, c, d, float(angle_deg))
        props = AllChem.MMFFGetMoleculeProperties(mol)
        ff = AllChem.MMFFGetMoleculeForceField(mol, props)
        ff.MMFFAddTorsionConstraint(a, b, c, d, False, float(angle_deg), float(angle_deg), 1e4)
        ff.Minimize(maxIts=2000)
        return np.array(conf.GetPositions(), dtype=np.float64)

    def frame(self, index: int, seed: int, temperature_k: float,
              omega_ref_cm: float = 1000.0) -> np.ndarray:
        """Positions [n, 3] (Å) of frame ``index``: torsion target + thermal displacement."""
        pos = self.geometry(frame_torsion_target(index))
        rng = np.random.default_rng([int(seed), int(index)])
        sigma = thermal_sigma(self.masses, temperature_k, omega_ref_cm)  # [n] Å
        disp = rng.standard_normal(pos.shape) * sigma[:, None]  # [n, 3]
        disp -= (self.masses[:, None] * disp).sum(0) / self.masses.sum()
        return pos + disp


# ------------------------------------------------------------------ electronic structure


def converged_scf(mf, conv_tol: float, what: str):
    """Run pyscf mean field ``mf`` to ``conv_tol``; second-order (``newton``) if the DIIS
    run does not converge; ``RuntimeError`` naming ``what`` if that fails too."""
    mf.conv_tol = conv_tol
    mf.kernel()
    if not mf.converged:
        mf = mf.newton()
        mf.kernel()
    if not mf.converged:
        raise RuntimeError(f"{what} did not converge")
    return mf


def excited_state_labels(z: np.ndarray, pos: np.ndarray, basis: str = "sto-3g",
                         method: str = "hf", conv_tol: float = 1e-9
                         ) -> tuple[np.ndarray, np.ndarray]:
    """S0 and S1 energies (eV) [2] and forces (eV/Å) [2, n, 3] of one geometry (Å).

    ``method="hf"``: RHF + TDA (CIS); otherwise RKS with ``xc=method`` + TDA. Raises
    ``RuntimeError`` when the SCF or the TDA eigenproblem does not converge.
    """
    from pyscf import dft, gto, scf, tdscf

    atoms = [(int(zi), tuple(float(x) for x in p)) for zi, p in zip(z, pos)]
    mol = gto.M(atom=atoms, basis=basis, unit="Angstrom", verbose=0)
    if method.lower() == "hf":
        mf = scf.RHF(mol)
    else:
        mf = dft.RKS(mol)
        mf.xc = method
    mf = converged_scf(mf, conv_tol, f"SCF ({method}/{basis})")
    td = tdscf.TDA(mf)
    td.nstates = 2
    td.kernel()
    if not np.all(td.converged):
        raise RuntimeError(f"TDA ({method}/{basis}) did not converge: {td.converged}")
    grad_s1 = td.nuc_grad_method()
    s0_from_s1: dict[int, np.ndarray] = {}
    if method.lower() == "hf":
        grad_s1.extra_force = _s0_gradient_collector(mf, s0_from_s1)
    g1 = grad_s1.kernel(state=1)  # [n, 3] Hartree/Bohr
    if method.lower() == "hf" and len(s0_from_s1) == mol.natm:
        g0 = np.stack([s0_from_s1[i] for i in range(mol.natm)]) + mf.nuc_grad_method().grad_nuc()
    else:  # DFT, or a pyscf whose TDA gradient no longer exposes the terms used above
        g0 = mf.nuc_grad_method().kernel()
    energies = np.array([mf.e_tot, mf.e_tot + td.e[0]]) * HARTREE_TO_EV  # [2] eV
    to_force = -HARTREE_TO_EV / BOHR_TO_ANGSTROM
    forces = np.stack([g0, g1]) * to_force  # [2, n, 3] eV/Å
    return energies, forces


def _s0_gradient_collector(mf, out: dict[int, np.ndarray]) -> Callable:
    """An ``extra_force`` hook for pyscf's TDA-RHF gradient that assembles the RHF ground-state
    electronic gradient of each atom from the same 2-electron derivative terms.

    In ``pyscf.grad.tdrhf.grad_elec`` the hook sees ``h1ao`` = hcore derivative + the
    (bra and ket) derivative of the ground-state Fock potential of ``oo0`` (occupied
    projector), so ``2 <h1ao, oo0> - 2 <S^x, W0>`` is the RHF electronic gradient
    (``W0`` the energy-weighted density). Adds nothing to the S1 gradient.
    """
    dme0 = mf.nuc_grad_method().make_rdm1e(mf.mo_energy, mf.mo_coeff, mf.mo_occ)  # [nao, nao]
    aoslices = mf.mol.aoslice_by_atom()

    def extra_force(atom_id: int, envs: dict) -> float:
        if not all(k in envs for k in ("h1ao", "oo0", "s1")):
            return 0.0
        p0, p1 = aoslices[atom_id, 2:]
        s1 = envs["s1"]
        grad = 2.0 * np.einsum("xpq,pq->x", envs["h1ao"], envs["oo0"])
        grad -= 2.0 * np.einsum("xij,ij->x", s1[:, p0:p1], dme0[p0:p1])
        out[int(atom_id)] = grad
        return 0.0

    return extra_force


# ------------------------------------------------------------------------------- cache


def _settings(smiles, torsion_smarts, seed, basis, method, temperature_k, omega_ref_cm) -> dict:
    return {"smiles": smiles, "torsion_smarts": torsion_smarts, "seed": int(seed),
            "basis": basis, "method": method, "temperature_k": float(temperature_k),
            "omega_ref_cm": float(omega_ref_cm), "format_version": FORMAT_VERSION}


def _read_cache(path: Path) -> dict:
    arrays = load_npz_checked(path, FORMAT_VERSION, REQUIRED_KEYS)
    try:
        arrays["settings"] = json.loads(str(arrays["settings"]))
    except json.JSONDecodeError as err:
        raise cache_error(path, f"field 'settings' is not JSON ({err})") from err
    return arrays


def generate_torsion_frames(n_frames: int, cache_path: str | os.PathLike, seed: int = 0,
                            basis: str = "sto-3g", method: str = "hf", *,
                            smiles: str = STILBENE_SMILES,
                            torsion_smarts: str = STILBENE_TORSION_SMARTS,
                            temperature_k: float = 300.0, omega_ref_cm: float = 1000.0,
                            chunk_size: int = 4, threads: int = 1,
                            log: Callable[[str], None] = print) -> StilbeneFrames:
    """Generate (or resume) ``n_frames`` labelled frames into ``cache_path``.

    Frames already in the cache are kept (their settings must equal these, else
    ``ValueError`` naming the differing keys); the missing ones are computed and the cache
    is rewritten atomically after every ``chunk_size`` frames. Returns the loaded frames.
    ``threads``: pyscf/OpenMP threads.
    """
    from pyscf import lib

    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    cache_path = Path(cache_path)
    settings = _settings(smiles, torsion_smarts, seed, basis, method, temperature_k,
                         omega_ref_cm)
    builder = TorsionGeometryBuilder(smiles, torsion_smarts, seed)
    n_at = int(builder.z.shape[0])
    pos = np.zeros((0, n_at, 3))
    energies = np.zeros((0, 2))
    forces = np.zeros((0, 2, n_at, 3))
    torsion = np.zeros(0)
    if cache_path.exists():
        old = _read_cache(cache_path)
        differing = sorted(k for k in settings if old["settings"].get(k) != settings[k])
        if differing:
            raise ValueError(
                f"{cache_path} was generated with other settings ({', '.join(differing)}: "
                f"{ {k: old['settings'].get(k) for k in differing} } vs "
                f"{ {k: settings[k] for k in differing} }); use another cache path or delete it"
            )
        pos, energies, forces, torsion = (old[k] for k in ("pos", "energies", "forces",
                                                           "torsion"))
        if len(pos) >= n_frames:
            return load_stilbene(cache_path)
        log(f"{cache_path}: resuming at frame {len(pos)} of {n_frames}")
    old_threads = lib.num_threads()
    lib.num_threads(threads)
    try:
        while len(pos) < n_frames:
            stop = min(n_frames, len(pos) + chunk_size)
            new = {"pos": [], "energies": [], "forces": [], "torsion": []}
            for i in range(len(pos), stop):
                started = time.perf_counter()
                xyz = builder.frame(i, seed, temperature_k, omega_ref_cm)
                try:
                    e, f = excited_state_labels(builder.z, xyz, basis, method)
                except RuntimeError as err:
                    raise RuntimeError(f"{cache_path}: frame {i}: {err}") from err
                angle = dihedral_deg(xyz, builder.torsion_atoms)
                new["pos"].append(xyz)
                new["energies"].append(e)
                new["forces"].append(f)
                new["torsion"].append(angle)
                log(f"frame {i}: torsion {angle:6.1f} deg, S1-S0 {e[1] - e[0]:.3f} eV, "
                    f"{time.perf_counter() - started:.1f} s")
            pos = np.concatenate([pos, np.stack(new["pos"])])
            energies = np.concatenate([energies, np.stack(new["energies"])])
            forces = np.concatenate([forces, np.stack(new["forces"])])
            torsion = np.concatenate([torsion, np.asarray(new["torsion"])])
            save_npz_atomic(cache_path, {
                "z": builder.z, "pos": pos, "energies": energies, "forces": forces,
                "torsion": torsion, "settings": np.asarray(json.dumps(settings, sort_keys=True)),
            }, FORMAT_VERSION)
    finally:
        lib.num_threads(old_threads)
    return load_stilbene(cache_path)


def generate_stilbene(n_frames: int, cache_path: str | os.PathLike, seed: int = 0,
                      basis: str = "sto-3g", method: str = "hf", **kwargs) -> StilbeneFrames:
    """Generate (or resume) ``n_frames`` stilbene frames (S0/S1, see module docstring).

    Keyword arguments are passed to :func:`generate_torsion_frames` (``temperature_k``,
    ``omega_ref_cm``, ``chunk_size``, ``threads``, ``log``).
    """
    return generate_torsion_frames(n_frames, cache_path, seed, basis, method,
                                   smiles=STILBENE_SMILES,
                                   torsion_smarts=STILBENE_TORSION_SMARTS, **kwargs)


def load_stilbene(cache_path: str | os.PathLike) -> StilbeneFrames:
    """Load and validate a cache written by :func:`generate_stilbene`.

    Raises ``FileNotFoundError`` when absent and :class:`fusion.data.cache.CacheError` naming
    the file, field (and frame for non-finite values) when shapes or values are wrong.
    """
    path = Path(cache_path)
    d = _read_cache(path)
    z, pos, energies, forces, torsion = (d[k] for k in ("z", "pos", "energies", "forces",
                                                       "torsion"))
    if z.ndim != 1 or z.shape[0] < 1 or not np.issubdtype(z.dtype, np.integer):
        raise cache_error(path, f"field 'z' should be [n] integers, got {z.dtype} {z.shape}")
    n = z.shape[0]
    if pos.ndim != 3 or pos.shape[1:] != (n, 3):
        raise cache_error(path, f"field 'pos' should be [F, {n}, 3], got {pos.shape}")
    n_frames = pos.shape[0]
    expected = {"energies": (n_frames, 2), "forces": (n_frames, 2, n, 3),
                "torsion": (n_frames,)}
    for name, shape in expected.items():
        if d[name].shape != shape:
            raise cache_error(path, f"field {name!r} should have shape {list(shape)}, "
                                    f"got {list(d[name].shape)}")
    for name in ("pos", "energies", "forces", "torsion"):
        values = d[name].reshape(n_frames, -1)
        bad = np.nonzero(~np.isfinite(values).all(axis=1))[0]
        if bad.size:
            raise cache_error(path, f"field {name!r} has non-finite values in frame(s) "
                                    f"{bad[:10].tolist()}")
    if np.any((torsion < 0) | (torsion > 180)):
        raise cache_error(path, "field 'torsion' should be degrees in [0, 180]")
    return StilbeneFrames(z=z.astype(np.int64), pos=pos.astype(np.float64),
                          energies=energies.astype(np.float64),
                          forces=forces.astype(np.float64), torsion=torsion.astype(np.float64),
                          settings=d["settings"])


# ------------------------------------------------------------------------------ datasets

N_FRAMES = 220  # frames of stilbene-tddft (shipped)
SHIPPED_CACHE = Path(__file__).parent / "files" / "stilbene-tddft.npz"
STATES = ("S0", "S1")
SPLIT_SEED = 0


def stilbene_cache_path(key: str, cache_dir: str | os.PathLike = "resources") -> Path:
    """``<cache_dir>/<key>/<key>.npz``."""
    return family_cache_path(key, cache_dir)


def prepare_stilbene(key: str, n_frames: int, cache_dir: str | os.PathLike = "resources",
                     threads: int | None = None, log: Callable[[str], None] = print) -> Path:
    """Make the cache of ``key`` with ``n_frames`` frames: copy the shipped frames (when
    the cache does not exist yet), then compute any missing ones (resumable)."""
    import shutil

    path = stilbene_cache_path(key, cache_dir)
    if not path.exists():
        if not SHIPPED_CACHE.exists():
            raise FileNotFoundError(
                f"the shipped stilbene frames {SHIPPED_CACHE} are missing (a broken install?); "
                "reinstall fusion-bench or generate them with fusion.data.stilbene."
                "generate_stilbene"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".copy.npz")
        shutil.copyfile(SHIPPED_CACHE, tmp)
        os.replace(tmp, path)
    if threads is None:
        threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    generate_stilbene(n_frames, path, seed=0, basis="sto-3g", method="hf",
                      threads=threads, log=log)
    return path


def frames_structures(frames: StilbeneFrames, name: str) -> Structures:
    """``Structures`` of the frames: ``y`` [F, 2] S0/S1 total energies (eV), forces
    [F * n, 2, 3] (eV/Å), reported in meV and meV/Å; ``meta["torsion"]`` [F] degrees."""
    from fusion.data.xtb_md import frames_to_structures

    return frames_to_structures(frames.z, frames.pos, frames.energies,
                                frames.forces.transpose(0, 2, 1, 3),  # [F, n, 2, 3]
                                name, states=list(STATES), torsion=frames.torsion)


def load_stilbene_dataset(key: str, n_frames: int, cache_dir: str | os.PathLike = "resources",
                          n_train: int | None = None, n_val: int | None = None,
                          n_test: int | None = None, seed: int = 0
                          ) -> tuple[Structures, dict[str, np.ndarray]]:
    """``key`` as ``(Structures, splits)``; prepares the cache if missing. The split is
    fixed (:func:`fusion.data.xtb_md.frame_split`, default 60/10/30 %); ``seed`` is the
    training seed and does not change it."""
    from fusion.data.xtb_md import frame_split

    path = stilbene_cache_path(key, cache_dir)
    if not path.exists():
        prepare_stilbene(key, n_frames, cache_dir)
    frames = load_stilbene(path)
    if len(frames) < n_frames:
        raise cache_error(path, f"it holds {len(frames)} frames, {key} needs {n_frames}; "
                                f"run `fusion prepare {key}` to compute the rest")
    frames = StilbeneFrames(frames.z, frames.pos[:n_frames], frames.energies[:n_frames],
                            frames.forces[:n_frames], frames.torsion[:n_frames],
                            frames.settings)
    return frames_structures(frames, key), frame_split(n_frames, n_train, n_val, n_test,
                                                       SPLIT_SEED)


def _register() -> None:
    from functools import partial

    for key, n_frames in (("stilbene-tddft", N_FRAMES), ("stilbene-tddft-1k", 1000)):
        register_family(DatasetFamily(key, partial(stilbene_cache_path, key),
                                      partial(prepare_stilbene, key, n_frames)))
        shipped = "shipped with the package" if n_frames <= N_FRAMES else (
            f"the first {N_FRAMES} shipped, the rest computed by `fusion prepare {key}`")
        register(DatasetSpec(
            key=key, loader=partial(load_stilbene_dataset, key, n_frames), family=key,
            card={
                "name": "stilbene S0/S1 along the C=C torsion (offline xxMD stand-in)",
                "source": "generated: rdkit ETKDG + MMFF geometries with the central torsion "
                          "set from cis (0 deg) to trans (180 deg) plus 300 K thermal "
                          "displacements; pyscf CIS (TDA on RHF) / STO-3G S0 and S1 energies "
                          f"and analytic forces; {shipped}",
                "license": "generated here (no third-party data)",
                "offline": True,
                "smiles": STILBENE_SMILES,
                "states": list(STATES),
                "n_structures": n_frames,
                "units": "energies eV (total, per state; reported meV), forces eV/Å "
                         "(reported meV/Å), torsion degrees",
                "report_unit": "meV",
                "split": "RandomState(0) permutation of the frames: train first, val next, "
                         "test from the end; default 60/10/30 %",
                "split_sizes": {"train": int(0.6 * n_frames), "val": int(0.1 * n_frames),
                                "test": n_frames - int(0.6 * n_frames) - int(0.1 * n_frames)},
            },
        ))


_register()
