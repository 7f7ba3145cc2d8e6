"""FusionCalculator: forces = -dE/dx, multi-state selection, loading a real training run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ase import Atoms

from fusion.cli import main
from fusion.dynamics.calculator import MODEL_STATS_FILE, FusionCalculator
from fusion.models.registry import ModelStats, build_model

TINY_MACE = {"num_channels": 8, "max_L": 0, "max_ell": 1, "correlation": 2,
             "num_interactions": 1, "radial_MLP": [8], "MLP_irreps": "4x0e"}
ELEMENTS = (1, 6, 8)


def _tiny_mace(seed: int) -> torch.nn.Module:
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(seed)
        stats = ModelStats(elements=ELEMENTS, atomic_energies=np.array([-13.6, -1030.0, -2040.0]),
                           avg_num_neighbors=4.0, scale=0.5)
        return build_model("mace", "baseline", TINY_MACE, stats)
    finally:
        torch.set_default_dtype(old)


class TwoStates(torch.nn.Module):
    """Two single-state models stacked as a multi-state model (energy [B, 2], forces [A, 2, 3])."""

    def __init__(self):
        super().__init__()
        self.s0, self.s1 = _tiny_mace(0), _tiny_mace(1)

    def forward(self, batch, compute_forces=True):
        a, b = self.s0(batch, compute_forces), self.s1(batch, compute_forces)
        return {"energy": torch.stack([a["energy"], b["energy"]], dim=1),
                "forces": torch.stack([a["forces"], b["forces"]], dim=1)}


def _methanol() -> Atoms:
    pos = np.array([[0.0, 0.0, 0.0], [1.42, 0.05, 0.0], [-0.38, 1.02, 0.1], [-0.4, -0.5, 0.9],
                    [-0.36, -0.55, -0.87], [1.72, -0.87, 0.05]])
    return Atoms("COHHHH", positions=pos + np.random.default_rng(0).normal(0, 0.05, pos.shape))


def _finite_difference_forces(atoms: Atoms, h: float = 1e-5) -> np.ndarray:
    fd = np.zeros((len(atoms), 3))
    for a in range(len(atoms)):
        for k in range(3):
            energies = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.calc = atoms.calc
                moved.positions[a, k] += sign * h
                energies.append(moved.get_potential_energy())
            fd[a, k] = -(energies[0] - energies[1]) / (2 * h)
    return fd


def test_forces_are_minus_energy_gradient_of_a_tiny_mace():
    atoms = _methanol()
    atoms.calc = FusionCalculator(_tiny_mace(0), ELEMENTS, r_max=5.0)
    forces = atoms.get_forces()
    assert forces.shape == (6, 3) and np.abs(forces).max() > 1e-3
    np.testing.assert_allclose(forces, _finite_difference_forces(atoms), atol=1e-6)
    assert atoms.calc.results["energies"].shape == (1,)
    with pytest.raises(ValueError, match="out of range"):
        atoms.calc.state = 1


def test_multi_state_model_exposes_each_surface():
    atoms = _methanol()
    calc = FusionCalculator(TwoStates(), ELEMENTS, r_max=5.0, state=1)
    atoms.calc = calc
    e1 = atoms.get_potential_energy()
    energies = calc.get_property("energies", atoms)
    state_forces = calc.get_property("state_forces", atoms)
    assert energies.shape == (2,) and state_forces.shape == (2, 6, 3)
    assert e1 == energies[1] and abs(energies[1] - energies[0]) > 1e-6
    np.testing.assert_allclose(atoms.get_forces(), _finite_difference_forces(atoms), atol=1e-6)
    calc.state = 0  # switches the reported surface without re-evaluating
    assert atoms.get_potential_energy() == energies[0]
    np.testing.assert_array_equal(atoms.get_forces(), state_forces[0])


def test_unknown_element_and_bad_output_are_clear_errors():
    atoms = Atoms("CN", positions=[[0, 0, 0], [1.2, 0, 0]])
    atoms.calc = FusionCalculator(_tiny_mace(0), ELEMENTS, r_max=5.0)
    with pytest.raises(ValueError, match="7"):
        atoms.get_potential_energy()

    class NoForces(torch.nn.Module):
        def forward(self, batch, compute_forces=True):
            return {"energy": batch["positions"].sum()[None], "forces": None}

    atoms = _methanol()
    atoms.calc = FusionCalculator(NoForces(), ELEMENTS, r_max=5.0, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="no forces"):
        atoms.get_potential_energy()


def test_loads_a_run_directory_written_by_fusion_train(tmp_path):
    from fusion.data.registry import get_dataset
    from fusion.experiment import model_stats

    cache = tmp_path / "resources"
    assert main(["prepare", "qm9", "--cache-dir", str(cache)]) == 0
    out = tmp_path / "results/train/qm9-U0/mace/baseline/seed-0"
    split = {"n_train": 32, "n_val": 8, "n_test": 8}
    spec = {"dataset": "qm9-U0", "model": "mace", "variant": "baseline", "seed": 0,
            "out_dir": str(out), "cache_dir": str(cache), "split": split, "batch_size": 8,
            "hparams": TINY_MACE, "threads": 1,
            "training": {"epochs": 1, "lr": 0.01, "dtype": "float64", "progress": False}}
    assert main(["train", "--spec", json.dumps(spec)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())

    calc = FusionCalculator.from_run_dir(out)
    assert calc.dtype == torch.float64
    structures, splits = get_dataset("qm9-U0", cache_dir=cache, **split)
    predictions = []
    for i in splits["test"]:
        lo, hi = structures.offsets[i], structures.offsets[i] + structures.n_atoms[i]
        atoms = Atoms(numbers=structures.z[lo:hi], positions=structures.pos[lo:hi])
        atoms.calc = calc
        predictions.append(atoms.get_potential_energy())
    # The calculator reproduces the trainer's own test error of this run.
    mae = np.mean(np.abs(np.array(predictions) - structures.y[splits["test"]]))
    assert mae * structures.meta["report_factor"] == pytest.approx(metrics["test"]["mae"],
                                                                  rel=1e-6)

    # fusion train writes model_stats.json next to the weights: the dataset is not needed.
    stats = model_stats(structures, splits["train"], 5.0)
    written = json.loads((out / MODEL_STATS_FILE).read_text())
    assert written["elements"] == list(stats.elements)
    assert written["scale"] == pytest.approx(stats.scale, rel=1e-12)
    offline = FusionCalculator.from_run_dir(out, cache_dir=tmp_path / "no-such-dir")
    atoms.calc = offline
    assert atoms.get_potential_energy() == pytest.approx(predictions[-1], abs=1e-9)

    with pytest.raises(FileNotFoundError, match="metrics.json"):
        FusionCalculator.from_run_dir(tmp_path)


def test_a_float32_run_evaluated_in_float64_keeps_its_function_and_exact_forces(tmp_path):
    cache = tmp_path / "resources"
    out = tmp_path / "results/train/qm9-U0/mace/baseline/seed-0"
    spec = {"dataset": "qm9-U0", "model": "mace", "variant": "baseline", "seed": 0,
            "out_dir": str(out), "cache_dir": str(cache),
            "split": {"n_train": 16, "n_val": 4, "n_test": 4}, "batch_size": 8,
            "hparams": TINY_MACE, "threads": 1,
            "training": {"epochs": 1, "lr": 0.01, "dtype": "float32", "progress": False}}
    assert main(["train", "--spec", json.dumps(spec)]) == 0
    single = FusionCalculator.from_run_dir(out)
    double = FusionCalculator.from_run_dir(out, dtype=torch.float64)
    assert single.dtype == torch.float32 and double.dtype == torch.float64
    atoms = _methanol()
    atoms.calc = single
    e32 = atoms.get_potential_energy()
    atoms.calc = double
    e64 = atoms.get_potential_energy()
    forces = atoms.get_forces()
    assert e64 == pytest.approx(e32, rel=1e-5)  # the same function up to float32 rounding
    h = 1e-5
    for atom, axis in ((0, 0), (2, 1)):
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.positions[atom, axis] += sign * h
            moved.calc = double
            energies.append(moved.get_potential_energy())
        assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h),
                                                   abs=1e-6)
