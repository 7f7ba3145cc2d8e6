"""Fixtures of the reliability tests: the trainer's toy problem (tests/train/toy_problem.py,
loaded by path, as tests/train does) and the repository root."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOY_PATH = REPO / "tests" / "train" / "toy_problem.py"


@pytest.fixture(scope="session")
def toy():
    """The toy model, synthetic batches and ``run()`` of tests/train/toy_problem.py."""
    name = "fusion_train_toy_problem"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TOY_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
