"""Offline force-field stand-ins ``xtb-md-<molecule>``: GFN2-xTB Langevin MD at 500 K.

For each of the 10 rMD17 molecules (:data:`MOLECULES`, SMILES below):

1. geometry from SMILES: rdkit ``AddHs`` + ETKDGv3 embedding with ``randomSeed = seed``;
2. energies and forces from GFN2-xTB via ``tblite.interface.Calculator("GFN2-xTB")``
   (positions passed in Bohr; energy Hartree -> eV, gradient Hartree/Bohr -> force eV/Å);
3. Langevin MD with ASE at :data:`TEMPERATURE_K` (500 K, as rMD17's sampling
   temperature), time step :data:`TIMESTEP_FS`, friction :data:`FRICTION_PER_FS`,
   Maxwell-Boltzmann initial velocities; random numbers from ``RandomState(seed)``;
4. after :data:`EQUILIBRATION_STEPS` steps, one frame every :data:`STEPS_BETWEEN_FRAMES`
   steps until ``n_frames`` frames are kept (energies/forces of the kept frames are the
   xTB values at those positions);
5. cached atomically in ``<cache_dir>/xtb-md-<molecule>/xtb-md-<molecule>.npz`` together
   with the settings and the generation time; a cache made with other settings raises
   :class:`~fusion.data.cache.CacheError` instead of being used silently.

The split is a seeded permutation of the frames (``RandomState(0)``): ``n_train`` first,
then ``n_val``, with ``n_test`` taken from the end, so the test set does not move when the
training set grows. Defaults (``None``): 60 % / 10 % / 30 % of the frames.

One dataset family per molecule (``fusion prepare xtb-md-ethanol``), so the workflow makes
one job per molecule.
"""

from __future__ import annotations

import os
import time
from functools import partial
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
    "MOLECULES",
    "TEMPERATURE_K",
    "generate_xtb_md",
    "xtb_md_cache_path",
    "prepare_xtb_md",
    "load_xtb_md",
    "frame_split",
]

#: The 10 rMD17 molecules and their SMILES (neutral, closed shell).
MOLECULES: dict[str, str] = {
    "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
    "azobenzene": "c1ccc(cc1)/N=N/c1ccccc1",
    "benzene": "c1ccccc1",
    "ethanol": "CCO",
    "malonaldehyde": "O=CC=CO",
    "naphthalene": "c1ccc2ccccc2c1",
    "paracetamol": "CC(=O)Nc1ccc(O)cc1",
    "salicylic-acid": "OC(=O)c1ccccc1O",
    "toluene": "Cc1ccccc1",
    "uracil": "O=C1C=CNC(=O)N1",
}

HARTREE_TO_EV = 27.211386245988  # CODATA 2018
BOHR_TO_ANGSTROM = 0.529177210903  # CODATA 2018

TEMPERATURE_K = 500.0
TIMESTEP_FS = 0.5
FRICTION_PER_FS = 0.01
EQUILIBRATION_STEPS = 200
STEPS_BETWEEN_FRAMES = 10
N_FRAMES = 300
SEED = 0
SPLIT_SEED = 0
CACHE_FORMAT_VERSION = 1
_CACHE_KEYS = ("z", "pos", "energy", "forces", "settings_keys", "settings_values",
               "smiles", "generation_seconds")


def _settings(n_frames: int, steps_between_frames: int, equilibration_steps: int,
              timestep_fs: float, temperature_k: float, friction_per_fs: float,
              seed: int) -> dict[str, float]:
    return {"n_frames": n_frames, "steps_between_frames": steps_between_frames,
            "equilibration_steps": equilibration_steps, "timestep_fs": timestep_fs,
            "temperature_K": temperature_k, "friction_per_fs": friction_per_fs,
            "seed": seed}


def _molecule(name: str) -> str:
    if name not in MOLECULES:
        raise ValueError(f"unknown xtb-md molecule {name!r}; valid: {', '.join(MOLECULES)}")
    return MOLECULES[name]


def embed_smiles(smiles: str, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``(z [N] int64, pos [N, 3] Å)`` of ``smiles`` with hydrogens, rdkit ETKDGv3 seeded."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"rdkit cannot parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"rdkit ETKDG failed to embed {smiles!r} (seed {seed})")
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    return z, np.asarray(mol.GetConformer().GetPositions(), dtype=np.float64)


class _XTB:
    """GFN2-xTB single points with tblite, reusing the previous wavefunction as guess."""

    def __init__(self, z: np.ndarray, pos: np.ndarray):
        from tblite.interface import Calculator

        self.calc = Calculator("GFN2-xTB", z, pos / BOHR_TO_ANGSTROM)
        self.calc.set("verbosity", 0)
        self.result = None

    def __call__(self, pos: np.ndarray) -> tuple[float, np.ndarray]:
        """Energy (eV) and forces ``[N, 3]`` (eV/Å) at ``pos`` ``[N, 3]`` (Å)."""
        self.calc.update(pos / BOHR_TO_ANGSTROM)
        self.result = self.calc.singlepoint(self.result) if self.result is not None \
            else self.calc.singlepoint()
        energy = float(self.result.get("energy")) * HARTREE_TO_EV
        forces = -np.asarray(self.result.get("gradient")) * (HARTREE_TO_EV / BOHR_TO_ANGSTROM)
        return energy, forces


def _ase_calculator(xtb: _XTB):
    from ase.calculators.calculator import Calculator, all_changes

    class XTBCalculator(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            energy, forces = xtb(self.atoms.get_positions())
            self.results = {"energy": energy, "forces": forces}

    return XTBCalculator()


def generate_xtb_md(molecule: str, n_frames: int = N_FRAMES,
                    steps_between_frames: int = STEPS_BETWEEN_FRAMES,
                    equilibration_steps: int = EQUILIBRATION_STEPS,
                    timestep_fs: float = TIMESTEP_FS, temperature_k: float = TEMPERATURE_K,
                    friction_per_fs: float = FRICTION_PER_FS,
                    seed: int = SEED) -> dict[str, np.ndarray]:
    """Run the MD of ``molecule`` and return the cache arrays (see module docstring).

    Returns ``z`` [N], ``pos`` [F, N, 3] Å, ``energy`` [F] eV, ``forces`` [F, N, 3] eV/Å,
    the settings, ``smiles`` and ``generation_seconds`` (wall time).
    """
    from ase import Atoms, units
    from ase.constraints import FixCom
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

    if n_frames < 1 or steps_between_frames < 1 or equilibration_steps < 0:
        raise ValueError(f"need n_frames >= 1, steps_between_frames >= 1 and "
                         f"equilibration_steps >= 0; got {n_frames}, {steps_between_frames}, "
                         f"{equilibration_steps}")
    started = time.perf_counter()
    smiles = _molecule(molecule)
    z, pos0 = embed_smiles(smiles, seed)
    xtb = _XTB(z, pos0)
    atoms = Atoms(numbers=z, positions=pos0)
    atoms.calc = _ase_calculator(xtb)
    rng = np.random.RandomState(seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature_k, rng=rng)
    Stationary(atoms)
    atoms.set_constraint(FixCom())  # instead of Langevin's deprecated fixcm=True
    dyn = Langevin(atoms, timestep=timestep_fs * units.fs, temperature_K=temperature_k,
                   friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    if equilibration_steps:
        dyn.run(equilibration_steps)
    n = z.shape[0]
    pos = np.empty((n_frames, n, 3))  # [F, N, 3] Å
    energy = np.empty(n_frames)  # [F] eV
    forces = np.empty((n_frames, n, 3))  # [F, N, 3] eV/Å
    for frame in range(n_frames):
        dyn.run(steps_between_frames)
        pos[frame] = atoms.get_positions()
        energy[frame] = atoms.get_potential_energy()
        forces[frame] = atoms.get_forces(apply_constraint=False)
    if not (np.isfinite(energy).all() and np.isfinite(forces).all()):
        raise RuntimeError(f"xtb-md-{molecule}: non-finite xTB energy or forces")
    settings = _settings(n_frames, steps_between_frames, equilibration_steps, timestep_fs,
                         temperature_k, friction_per_fs, seed)
    return {
        "z": z, "pos": pos, "energy": energy, "forces": forces,
        "settings_keys": np.array(list(settings)),
        "settings_values": np.array(list(settings.values()), dtype=np.float64),
        "smiles": np.array(smiles),
        "generation_seconds": np.array(time.perf_counter() - started),
    }


def xtb_md_cache_path(molecule: str, cache_dir: str | os.PathLike = "resources") -> Path:
    """``<cache_dir>/xtb-md-<molecule>/xtb-md-<molecule>.npz``."""
    return family_cache_path(f"xtb-md-{molecule}", cache_dir)


def prepare_xtb_md(molecule: str, cache_dir: str | os.PathLike = "resources",
                   **settings) -> dict[str, np.ndarray]:
    """Generate the frames of ``molecule`` and (over)write its cache atomically."""
    raw = generate_xtb_md(molecule, **settings)
    save_npz_atomic(xtb_md_cache_path(molecule, cache_dir), raw, CACHE_FORMAT_VERSION)
    return raw


def _read_cache(molecule: str, cache_dir, **settings) -> dict[str, np.ndarray]:
    path = xtb_md_cache_path(molecule, cache_dir)
    if not path.exists():
        return prepare_xtb_md(molecule, cache_dir, **settings)
    raw = load_npz_checked(path, CACHE_FORMAT_VERSION, _CACHE_KEYS)
    f, n = raw["pos"].shape[0], raw["z"].shape[0]
    for key, shape in (("pos", (f, n, 3)), ("energy", (f,)), ("forces", (f, n, 3))):
        if raw[key].shape != shape:
            raise cache_error(path, f"array {key!r} has shape {raw[key].shape}, expected {shape}")
    if not (np.isfinite(raw["energy"]).all() and np.isfinite(raw["forces"]).all()):
        raise cache_error(path, "it contains non-finite energies or forces")
    found = dict(zip(raw["settings_keys"].tolist(), raw["settings_values"].tolist()))
    wanted = generate_settings(**settings)
    diff = {k: (found.get(k), v) for k, v in wanted.items() if found.get(k) != v}
    if diff:
        raise cache_error(path, f"it was generated with other settings "
                                f"(key: (cached, requested)) {diff}")
    return raw


def generate_settings(**kwargs) -> dict[str, float]:
    """The full settings dict for keyword overrides of :func:`generate_xtb_md`."""
    defaults = dict(n_frames=N_FRAMES, steps_between_frames=STEPS_BETWEEN_FRAMES,
                    equilibration_steps=EQUILIBRATION_STEPS, timestep_fs=TIMESTEP_FS,
                    temperature_k=TEMPERATURE_K, friction_per_fs=FRICTION_PER_FS, seed=SEED)
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise ValueError(f"unknown xtb-md setting(s) {unknown}; valid: {sorted(defaults)}")
    return {k: float(v) for k, v in _settings(**{**defaults, **kwargs}).items()}


def frame_split(n_frames: int, n_train: int | None, n_val: int | None, n_test: int | None,
                seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Seeded split of ``n_frames`` frames: ``perm = RandomState(seed).permutation``;
    train = ``perm[:n_train]``, val = the next ``n_val``, test = the last ``n_test``.
    ``None`` sizes default to 60 % / 10 % / 30 % of the frames."""
    n_train = int(0.6 * n_frames) if n_train is None else n_train
    n_val = int(0.1 * n_frames) if n_val is None else n_val
    n_test = n_frames - int(0.6 * n_frames) - int(0.1 * n_frames) if n_test is None else n_test
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test > n_frames:
        raise ValueError(f"split n_train={n_train} + n_val={n_val} + n_test={n_test} needs "
                         f"more than the {n_frames} frames available")
    perm = np.random.RandomState(seed).permutation(n_frames).astype(np.int64)
    return {"train": perm[:n_train], "val": perm[n_train:n_train + n_val],
            "test": perm[n_frames - n_test:]}


def frames_to_structures(z: np.ndarray, pos: np.ndarray, energy: np.ndarray,
                         forces: np.ndarray, name: str, **meta) -> Structures:
    """``Structures`` of ``F`` frames of one molecule (``z`` [N], ``pos``/``forces``
    [F, N, 3] in Å and eV/Å, ``energy`` [F] eV), reported in meV and meV/Å. With ``S``
    electronic states: ``energy`` [F, S], ``forces`` [F, N, S, 3]. ``meta``: extra entries
    (e.g. ``states``, per-frame ``torsion``)."""
    f, n = pos.shape[:2]
    return Structures(
        z=np.tile(z, f), pos=pos.reshape(f * n, 3), n_atoms=np.full(f, n),
        y=energy, forces=forces.reshape(f * n, *forces.shape[2:]),
        meta={"name": name, "target": "energy", "unit": "eV", "report_unit": "meV",
              "report_factor": 1000.0, "forces_unit": "eV/Å", **meta},
    )


def load_xtb_md(molecule: str, cache_dir: str | os.PathLike = "resources",
                n_train: int | None = None, n_val: int | None = None,
                n_test: int | None = None, seed: int = 0,
                **settings) -> tuple[Structures, dict[str, np.ndarray]]:
    """``xtb-md-<molecule>`` as ``(Structures, splits)``; generates the cache if missing.

    ``seed`` is the training seed (the split is fixed, :func:`frame_split`); ``settings``
    (e.g. ``n_frames=50``) override the generation defaults and must match the cache.
    """
    raw = _read_cache(molecule, cache_dir, **settings)
    structures = frames_to_structures(raw["z"], raw["pos"], raw["energy"], raw["forces"],
                                      f"xtb-md-{molecule}")
    return structures, frame_split(len(structures), n_train, n_val, n_test)


def _register() -> None:
    for molecule, smiles in MOLECULES.items():
        key = f"xtb-md-{molecule}"
        register_family(DatasetFamily(key, partial(xtb_md_cache_path, molecule),
                                      partial(prepare_xtb_md, molecule)))
        register(DatasetSpec(
            key=key, loader=partial(load_xtb_md, molecule), family=key,
            card={
                "name": f"{molecule} GFN2-xTB Langevin MD (offline rMD17 stand-in)",
                "source": "generated: rdkit ETKDGv3 geometry from SMILES, GFN2-xTB "
                          "(tblite) energies/forces, ASE Langevin MD",
                "license": "generated here (no third-party data)",
                "offline": True,
                "smiles": smiles,
                "md": f"{TEMPERATURE_K:g} K, dt {TIMESTEP_FS:g} fs, friction "
                      f"{FRICTION_PER_FS:g}/fs, {EQUILIBRATION_STEPS} equilibration steps, "
                      f"one frame every {STEPS_BETWEEN_FRAMES} steps, seed {SEED}",
                "n_structures": N_FRAMES,
                "units": "energy eV (reported meV), forces eV/Å (reported meV/Å)",
                "report_unit": "meV",
                "split": "RandomState(0) permutation of the frames: train first, val next, "
                         "test from the end; default 60/10/30 %",
                "split_sizes": {"train": int(0.6 * N_FRAMES), "val": int(0.1 * N_FRAMES),
                                "test": N_FRAMES - int(0.6 * N_FRAMES) - int(0.1 * N_FRAMES)},
            },
        ))


_register()
