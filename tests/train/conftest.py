"""Fixtures of the trainer tests: the toy problem module (loaded by path)."""

import importlib.util
import sys
from pathlib import Path

import pytest

TOY_PATH = Path(__file__).with_name("toy_problem.py")


def _load_toy():
    name = "fusion_train_toy_problem"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TOY_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="session")
def toy():
    """tests/train/toy_problem.py: toy model, synthetic batches, ``run()``."""
    return _load_toy()


@pytest.fixture(scope="session")
def reference(toy, tmp_path_factory):
    """Metrics, log rows and best weights of one uninterrupted run of ``toy.BASE_CONFIG``."""
    import torch

    workdir = tmp_path_factory.mktemp("reference")
    metrics = toy.run(workdir)
    return {
        "metrics": metrics,
        "log": (workdir / "log.csv").read_text(),
        "model": torch.load(workdir / "model.pt", weights_only=True),
    }
