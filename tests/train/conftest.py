"""Fixtures of the trainer tests (the ``toy`` fixture is in tests/conftest.py)."""

import pytest


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
