"""Determinism: the same run spec and seed give identical metrics on CPU, in two fresh
processes (``fusion train``, as the workflow calls it), apart from wall times and
provenance (tests/train/test_trainer.py shows that another seed gives other weights)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fusion.cli import main

BIN = Path(sys.executable).parent
TINY_MACE = {
    "num_channels": 8,
    "max_L": 0,
    "max_ell": 1,
    "correlation": 2,
    "num_interactions": 1,
    "radial_MLP": [8],
    "MLP_irreps": "4x0e",
}
# Measured, machine-dependent values: everything else must be equal.
TIMING_KEYS = {"provenance", "inference", "peak_memory_mb"}
TIMING_TRAIN_KEYS = {"seconds_per_epoch", "wall_seconds"}


@pytest.fixture(scope="module")
def qm9_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("resources")
    assert main(["prepare", "qm9", "--cache-dir", str(cache)]) == 0
    return cache


def spec(cache: Path, out: Path, seed: int = 0) -> str:
    return json.dumps(
        {
            "dataset": "qm9-U0",
            "model": "mace",
            "variant": "baseline",
            "seed": seed,
            "out_dir": str(out),
            "cache_dir": str(cache),
            "split": {"n_train": 32, "n_val": 16, "n_test": 16},
            "batch_size": 8,
            "eval_batch_size": 16,
            "hparams": TINY_MACE,
            "training": {"epochs": 2, "lr": 0.01, "dtype": "float64", "progress": False,
                         "ema": True, "ema_decay": 0.9, "device": "cpu"},
            "threads": 1,
        }
    )  # fmt: skip


def train_in_fresh_process(cache: Path, out: Path, seed: int = 0) -> dict:
    proc = subprocess.run(
        [str(BIN / "fusion"), "train", "--spec", spec(cache, out, seed)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "metrics.json").read_text())


def comparable(metrics: dict) -> dict:
    """metrics.json without wall times, provenance and the output folder."""
    kept = {k: v for k, v in metrics.items() if k not in TIMING_KEYS}
    kept["train"] = {k: v for k, v in kept["train"].items() if k not in TIMING_TRAIN_KEYS}
    kept["hyperparameters"] = {
        k: v for k, v in kept["hyperparameters"].items() if k != "out_dir"
    }
    return kept


def log_without_seconds(out: Path) -> list[dict]:
    with open(out / "log.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def test_same_spec_and_seed_give_identical_metrics_in_two_processes(qm9_cache, tmp_path):
    first = train_in_fresh_process(qm9_cache, tmp_path / "first")
    second = train_in_fresh_process(qm9_cache, tmp_path / "second")
    assert comparable(first) == comparable(second)
    assert first["test"]["mae"] > 0 and first["train"]["epochs"] == 2
    assert log_without_seconds(tmp_path / "first") == log_without_seconds(tmp_path / "second")
    a = torch.load(tmp_path / "first/model.pt", weights_only=True)
    b = torch.load(tmp_path / "second/model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Each result says where it came from: software versions and hardware.
    for metrics in (first, second):
        provenance = metrics["provenance"]
        assert provenance["versions"]["torch"] == torch.__version__
        assert provenance["versions"]["mace-torch"] and provenance["device"].startswith("cpu")
