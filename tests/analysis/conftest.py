"""Synthetic results tree for the analysis tests.

Helpers are handed to tests as fixtures (``make_metrics``, ``write_metrics``, ``write_log``)
because pytest runs with ``--import-mode=importlib``, where tests cannot import conftest.

Two datasets (qm9-U0: energies only; xtb-md-aspirin: energies and forces), models
mace/baseline, mace/fusion and composition/baseline, seeds 0, 1, 2, with test MAEs chosen so
that means, standard deviations and paired differences are exact by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# test MAE per (dataset, model, variant) and seed 0, 1, 2
TEST_MAE = {
    ("qm9-U0", "mace", "baseline"): [10.0, 12.0, 14.0],  # mean 12, std 2
    ("qm9-U0", "mace", "fusion"): [8.0, 11.0, 11.0],  # mean 10, diffs -2 -1 -3
    ("qm9-U0", "composition", "baseline"): [100.0, 100.0, 100.0],
    ("xtb-md-aspirin", "mace", "baseline"): [4.0, 4.0, 4.0],
    ("xtb-md-aspirin", "mace", "fusion"): [5.0, 5.0, 8.0],  # worse than baseline
    ("xtb-md-aspirin", "composition", "baseline"): [40.0, 40.0, 40.0],
}
FORCES_MAE = {  # only the force-field dataset, not for composition
    ("xtb-md-aspirin", "mace", "baseline"): [20.0, 30.0, 40.0],
    ("xtb-md-aspirin", "mace", "fusion"): [10.0, 20.0, 30.0],
}
N_PARAMS = {"baseline": 95760, "fusion": 41000}
SEEDS = (0, 1, 2)


def _make_metrics(
    dataset: str,
    model: str,
    variant: str,
    seed: int,
    mae: float,
    forces_mae: float | None = None,
    n_params: int | None = None,
) -> dict:
    if n_params is None:
        n_params = 6 if model == "composition" else N_PARAMS[variant]
    errors = {
        "mae": mae,
        "rmse": 1.5 * mae,
        "mae_per_atom": mae / 10.0,
        "forces_mae": forces_mae,
        "forces_rmse": None if forces_mae is None else 1.4 * forces_mae,
        "n_structures": 100,
    }
    return {
        "schema_version": 1,
        "dataset": dataset,
        "model": model,
        "variant": variant,
        "seed": seed,
        "n_params": n_params,
        "units": {"y": "meV", "y_per_atom": "meV/atom", "forces": "meV/Å"},
        "test": errors,
        "val": dict(errors, mae=mae * 1.1),
        "train": {
            "n_structures": 1000,
            "epochs": 0 if model == "composition" else 5,
            "best_epoch": 4,
            # the composition fit writes 0.0 with epochs 0 (fusion.experiment)
            "seconds_per_epoch": 0.0 if model == "composition" else 2.0 + seed,
            "wall_seconds": 10.0,
        },
        "inference": {"structures_per_second": None if model == "composition" else 500.0},
        "peak_memory_mb": None if model == "composition" else 100.0,
        "hyperparameters": {},
        "provenance": {
            "git_commit": "",
            "versions": {},
            "device": "cpu",
            "hostname": "",
            "started": "",
            "finished": "",
        },
    }


def _run_dir(root: Path, dataset: str, model: str, variant: str, seed: int) -> Path:
    return root / "results" / "train" / dataset / model / variant / f"seed-{seed}"


def _write_metrics(root: Path, record: dict) -> Path:
    d = _run_dir(root, record["dataset"], record["model"], record["variant"], record["seed"])
    d.mkdir(parents=True, exist_ok=True)
    path = d / "metrics.json"
    path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return path


def _write_log(
    root: Path, dataset: str, model: str, variant: str, seed: int, n_epochs: int
) -> Path:
    d = _run_dir(root, dataset, model, variant, seed)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "log.csv"
    lines = ["epoch,lr,train_loss,val_mae,val_rmse,val_forces_mae,seconds"]
    for epoch in range(n_epochs):
        val = 100.0 * (seed + 1) / (epoch + 1) + (5 if variant == "baseline" else 0)
        lines.append(f"{epoch},0.01,{val * 2},{val},{val * 1.5},,1.0")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def results_tree(tmp_path: Path) -> dict:
    """Write the synthetic metrics.json and log.csv files; return their paths."""
    metrics, logs = [], []
    for (dataset, model, variant), maes in TEST_MAE.items():
        for seed, mae in zip(SEEDS, maes):
            forces = FORCES_MAE.get((dataset, model, variant))
            record = _make_metrics(
                dataset, model, variant, seed, mae, None if forces is None else forces[seed]
            )
            metrics.append(_write_metrics(tmp_path, record))
            n_epochs = 1 if model == "composition" else 6 + seed
            logs.append(_write_log(tmp_path, dataset, model, variant, seed, n_epochs))
    return {"root": tmp_path, "metrics": metrics, "logs": logs}


@pytest.fixture
def make_metrics():
    return _make_metrics


@pytest.fixture
def write_metrics():
    return _write_metrics


@pytest.fixture
def write_log():
    return _write_log
