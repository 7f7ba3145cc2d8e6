"""Transfer test sets: acac-600K/H-transfer/dihedral evaluated with the acac-300K run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fusion.cli import main as cli_main
from fusion.data import sources
from fusion.data.download import sha256_of
from fusion.data.registry import get_dataset
from fusion.transfer import evaluate_run, source_run_dir

REAL = Path(__file__).parents[1] / "data" / "real"
TINY = {"num_channels": 4, "max_L": 0, "max_ell": 1, "correlation": 1,
        "num_interactions": 1, "r_max": 4.0}


def _spec(root: Path, dataset: str, **changes) -> dict:
    spec = {"dataset": dataset, "model": "mace", "variant": "baseline", "seed": 0,
            "out_dir": str(root / "train" / dataset / "mace" / "baseline" / "seed-0"),
            "cache_dir": str(root / "cache"), "split": {}, "batch_size": 4,
            "eval_batch_size": 8, "hparams": dict(TINY),
            "training": {"epochs": 1, "lr": 0.01, "energy_weight": 1.0, "forces_weight": 10.0,
                         "dtype": "float64", "progress": False},
            "threads": 1}
    spec.update(changes)
    return spec


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    with pytest.MonkeyPatch.context() as mp:
        for relpath in json.loads((REAL / "SOURCES.json").read_text()):
            mp.setitem(sources.PINNED, relpath,
                       sources.PinnedFile(relpath, sha256_of(REAL / relpath)))
        sources.import_files(REAL, root / "cache", log=lambda _: None)
        get_dataset("acac-300K", cache_dir=root / "cache")  # the cache, from checked files
    assert cli_main(["train", "--spec", json.dumps(_spec(root, "acac-300K"))]) == 0
    return root


def test_transfer_metrics_come_from_the_trained_run(trained, capsys):
    source = trained / "train" / "acac-300K" / "mace" / "baseline" / "seed-0"
    base = json.loads((source / "metrics.json").read_text())
    for dataset, n_test, forces in (("acac-600K", 3, True), ("acac-dihedral", 2, False)):
        spec = _spec(trained, dataset)
        assert cli_main(["evaluate", "--spec", json.dumps(spec)]) == 0
        m = json.loads((Path(spec["out_dir"]) / "metrics.json").read_text())
        assert m["dataset"] == dataset and m["evaluated_from"] == str(source)
        assert m["test"]["n_structures"] == n_test
        assert (m["test"]["forces_mae"] is not None) is forces
        assert m["n_params"] == base["n_params"] and m["val"] == base["val"]
        assert m["train"] == base["train"]
    assert "weights of" in capsys.readouterr().out


def test_evaluating_the_training_set_reproduces_the_trainer(trained):
    source = trained / "train" / "acac-300K" / "mace" / "baseline" / "seed-0"
    base = json.loads((source / "metrics.json").read_text())
    structures, splits = get_dataset("acac-300K", cache_dir=trained / "cache")
    errors = evaluate_run(source, structures, splits["test"], 8)
    assert errors["mae"] == pytest.approx(base["test"]["mae"], rel=1e-9)
    assert errors["forces_mae"] == pytest.approx(base["test"]["forces_mae"], rel=1e-9)


def test_transfer_refusals_name_what_to_do(trained, capsys):
    assert cli_main(["train", "--spec", json.dumps(_spec(trained, "acac-600K"))]) == 2
    assert "acac-600K shares its training set with acac-300K" in capsys.readouterr().err
    other = _spec(trained, "acac-H-transfer", hparams={**TINY, "num_channels": 8})
    assert cli_main(["evaluate", "--spec", json.dumps(other)]) == 2
    assert "was made with other settings (hparams)" in capsys.readouterr().err
    seed3 = _spec(trained, "acac-H-transfer", seed=3)
    seed3["out_dir"] = seed3["out_dir"].replace("seed-0", "seed-3")
    assert cli_main(["evaluate", "--spec", json.dumps(seed3)]) == 2
    assert "train it first" in capsys.readouterr().err
    assert cli_main(["evaluate", "--spec", json.dumps(_spec(trained, "acac-300K"))]) == 2
    assert "is trained, not evaluated" in capsys.readouterr().err
    spec = _spec(trained, "acac-600K")
    from fusion.experiment import RunSpec

    assert source_run_dir(RunSpec.from_dict(spec)) == Path(
        _spec(trained, "acac-300K")["out_dir"])
