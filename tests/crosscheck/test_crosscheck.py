"""fusion.crosscheck: extxyz export, translation to mace_run_train, parsing of its output,
and one tiny real mace_run_train run (skipped without the QM9 cache)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest

from fusion.crosscheck import (
    ENERGY_KEY,
    UnsupportedSettingError,
    cosine_equivalent_gamma,
    crosscheck_targets,
    mace_run_train_args,
    main,
    parse_epoch_times,
    parse_error_tables,
    parse_step_times,
    parse_test_mae,
    run_crosscheck,
    translation_differences,
    write_extxyz,
    write_extxyz_splits,
)
from fusion.data.structures import Structures
from fusion.models.registry import ModelStats

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def qm9_cache(tmp_path_factory):
    """A QM9 cache built from the qm9pack wheel for this module (about 5 s)."""
    from fusion.data.registry import prepare_family

    cache = tmp_path_factory.mktemp("resources")
    prepare_family("qm9", cache)
    return cache

# Trimmed from logs/crosscheck_run-0.log of a real mace_run_train 0.3.16 run (48/16/32 QM9
# molecules, 2 epochs, --error_table TotalMAE).
MACE_LOG = """\
2026-11-23 11:25:03.302 INFO: Loss metrics on validation set
2026-11-23 11:25:03.303 INFO: Initial: head: Default, loss=0.00027965, MAE_E=  884.86 meV, \
MAE_F=None meV / A
2026-11-23 11:25:03.619 INFO: Epoch 0: head: Default, loss=0.00027974, MAE_E=  885.30 meV, \
MAE_F=None meV / A
2026-11-23 11:25:03.701 INFO: Epoch 1: head: Default, loss=0.00027970, MAE_E=  885.19 meV, \
MAE_F=None meV / A
2026-11-23 11:25:03.707 INFO: Training complete
2026-11-23 11:25:04.171 INFO: Evaluating train_Default ...
2026-11-23 11:25:04.215 INFO: Evaluating valid_Default ...
2026-11-23 11:25:04.241 INFO: Error-table on TRAIN and VALID:
+---------------+-------------+-----------------+------------------+
|  config_type  | MAE E / meV | MAE F / meV / A | relative F MAE % |
+---------------+-------------+-----------------+------------------+
| train_Default |      818.5  |       None      |       None       |
| valid_Default |      885.2  |       None      |       None       |
+---------------+-------------+-----------------+------------------+
2026-11-23 11:25:04.241 INFO: Evaluating Default_Default ...
2026-11-23 11:25:04.262 INFO: Error-table on TEST:
+-----------------+-------------+-----------------+------------------+
|   config_type   | MAE E / meV | MAE F / meV / A | relative F MAE % |
+-----------------+-------------+-----------------+------------------+
| Default_Default |      705.4  |       None      |       None       |
+-----------------+-------------+-----------------+------------------+
2026-11-23 11:25:04.262 INFO: Done
"""

# Trimmed from results/crosscheck_run-0_train.txt of the same run.
MACE_RESULTS = """\
{"loss": 0.00027964962646365166, "mae_e": 0.8848562240600586, "time": 0.1275, "mode": "eval", \
"epoch": null, "head": "Default"}
{"loss": 0.004197412170469761, "time": 0.22818779945373535, "mode": "opt", "epoch": 0}
{"loss": 0.003246424486860633, "time": 0.03588461875915527, "mode": "opt", "epoch": 0}
{"loss": 0.0002797353081405163, "mae_e": 0.8853025436401367, "time": 0.0118, "mode": "eval", \
"epoch": 0, "head": "Default"}
{"loss": 0.005062763579189777, "time": 0.01742386817932129, "mode": "opt", "epoch": 1}
"""

STATS = ModelStats(elements=(1, 6, 7, 8, 9),
                   atomic_energies=np.array([-2.5, -6.25, -4.5, -4.125, -2.0]),
                   avg_num_neighbors=15.5, scale=0.0625)


def make_spec(**changes) -> dict:
    spec = {
        "dataset": "qm9-U0", "model": "mace", "variant": "baseline", "seed": 3,
        "out_dir": "results/train/qm9-U0/mace/baseline/seed-3", "cache_dir": "resources",
        "split": {"n_train": 40, "n_val": 8, "n_test": 8},
        "batch_size": 16, "eval_batch_size": 64, "threads": 1,
        "hparams": {"num_channels": 32, "max_L": 0, "max_ell": 2, "correlation": 3,
                    "num_interactions": 2, "r_max": 4.5},
        "training": {"epochs": 7, "lr": 0.005, "optimizer": "amsgrad", "scheduler": "plateau",
                     "plateau_factor": 0.5, "plateau_patience": 3, "ema": True,
                     "ema_decay": 0.95, "grad_clip": 5.0, "dtype": "float32",
                     "device": "cpu"},
    }
    for key, value in changes.items():
        if key in ("training", "hparams"):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def flag(args: list[str], name: str) -> str:
    assert args.count(name) == 1, f"{name} given {args.count(name)} times"
    return args[args.index(name) + 1]


# ------------------------------------------------------------------------------ extxyz


def synthetic_structures() -> tuple[Structures, dict]:
    rng = np.random.default_rng(0)
    n_atoms = np.array([3, 5, 2, 4, 6, 1])
    z = rng.choice([1, 6, 7, 8, 9], size=n_atoms.sum())
    pos = rng.normal(scale=2.0, size=(n_atoms.sum(), 3))
    y = rng.normal(scale=10.0, size=len(n_atoms))
    structures = Structures(z=z, pos=pos, n_atoms=n_atoms, y=y,
                            meta={"name": "toy", "qm9_index": np.arange(101, 107)})
    splits = {"train": np.array([4, 0, 2]), "val": np.array([5]), "test": np.array([1, 3])}
    return structures, splits


def test_extxyz_round_trip(tmp_path):
    import ase.io

    structures, splits = synthetic_structures()
    paths = write_extxyz(structures, splits, tmp_path)
    assert {k: p.name for k, p in paths.items()} == {
        "train": "train.xyz", "val": "valid.xyz", "test": "test.xyz"}
    offsets = structures.offsets
    for split, path in paths.items():
        frames = ase.io.read(path, index=":")
        assert len(frames) == len(splits[split])
        assert [a.info["fusion_index"] for a in frames] == splits[split].tolist()
        assert [a.info["qm9_index"] for a in frames] == (101 + splits[split]).tolist()
        for atoms, i in zip(frames, splits[split]):
            a0, n = offsets[i], structures.n_atoms[i]
            np.testing.assert_array_equal(atoms.numbers, structures.z[a0:a0 + n])
            np.testing.assert_allclose(atoms.positions, structures.pos[a0:a0 + n], atol=1e-7)
            assert atoms.info[ENERGY_KEY] == structures.y[i]  # repr round-trips exactly
            assert not atoms.pbc.any()
    assert not list(tmp_path.glob(".*.tmp"))


def test_extxyz_splits_are_our_runner_splits(tmp_path, qm9_cache):
    import ase.io

    from fusion.data.registry import get_dataset

    sizes = {"n_train": 12, "n_val": 4, "n_test": 6}
    paths = write_extxyz_splits("qm9-U0", sizes, qm9_cache, tmp_path)
    structures, splits = get_dataset("qm9-U0", cache_dir=qm9_cache, **sizes)
    for split, path in paths.items():
        frames = ase.io.read(path, index=":")
        assert [a.info["fusion_index"] for a in frames] == splits[split].tolist()
        assert [a.info["qm9_index"] for a in frames] == \
            structures.meta["qm9_index"][splits[split]].tolist()
        assert [a.info[ENERGY_KEY] for a in frames] == structures.y[splits[split]].tolist()


# -------------------------------------------------------------------------- arguments


def test_arguments_translate_the_spec():
    args = mace_run_train_args(make_spec(), STATS, data_dir="d", work_dir="w")
    expected = {
        "--model": "MACE", "--num_channels": "32", "--max_L": "0", "--max_ell": "2",
        "--correlation": "3", "--num_interactions": "2", "--r_max": "4.5",
        "--radial_MLP": "[64, 64, 64]", "--MLP_irreps": "16x0e", "--num_radial_basis": "8",
        "--num_cutoff_basis": "5", "--interaction_first": "RealAgnosticInteractionBlock",
        "--batch_size": "16", "--valid_batch_size": "64", "--lr": "0.005",
        "--max_num_epochs": "7", "--optimizer": "adam", "--ema_decay": "0.95",
        "--scheduler": "ReduceLROnPlateau", "--lr_factor": "0.5", "--scheduler_patience": "3",
        "--seed": "3", "--default_dtype": "float32", "--device": "cpu", "--clip_grad": "5.0",
        "--forces_weight": "0.0", "--energy_weight": "1.0", "--weight_decay": "0.0",
        "--loss": "weighted", "--energy_key": "REF_energy", "--error_table": "TotalMAE",
        "--atomic_numbers": "[1, 6, 7, 8, 9]", "--avg_num_neighbors": "15.5",
        "--compute_avg_num_neighbors": "False", "--std": "0.0625", "--work_dir": "w",
        "--train_file": str(Path("d/train.xyz")), "--valid_file": str(Path("d/valid.xyz")),
        "--test_file": str(Path("d/test.xyz")),
    }
    for name, value in expected.items():
        assert flag(args, name) == value, name
    assert "--amsgrad" in args and "--ema" in args
    assert ast.literal_eval(flag(args, "--E0s")) == {
        1: -2.5, 6: -6.25, 7: -4.5, 8: -4.125, 9: -2.0}
    assert flag(make_e0s_average(), "--E0s") == "average"


def make_e0s_average():
    return mace_run_train_args(make_spec(), STATS, e0s="average")


def test_their_parser_accepts_the_arguments():
    from mace.tools import build_default_arg_parser

    args = mace_run_train_args(make_spec(training={"ema": False, "grad_clip": None}), STATS)
    ns = build_default_arg_parser().parse_args(args)
    assert (ns.num_channels, ns.max_L, ns.max_ell, ns.correlation) == (32, 0, 2, 3)
    assert ns.r_max == 4.5 and ns.lr == 0.005 and ns.max_num_epochs == 7
    assert ns.amsgrad is True and ns.ema is False and ns.clip_grad is None
    assert ns.compute_avg_num_neighbors is False and ns.std == 0.0625
    assert ns.weight_decay == 0.0 and ns.forces_weight == 0.0


def test_schedulers():
    none = mace_run_train_args(make_spec(training={"scheduler": "none"}), STATS)
    assert flag(none, "--scheduler") == "ExponentialLR"
    assert flag(none, "--lr_scheduler_gamma") == "1.0"
    cos = make_spec(training={"scheduler": "cosine", "epochs": 20})
    gamma = float(flag(mace_run_train_args(cos, STATS), "--lr_scheduler_gamma"))
    from fusion.train.trainer import TrainConfig

    config = TrainConfig.from_dict(cos["training"])
    cosine_mean = np.mean([config.lr * 0.5 * (1 + math.cos(math.pi * (e - 1) / 20))
                           for e in range(1, 21)])
    assert gamma == pytest.approx(cosine_equivalent_gamma(config))
    assert np.mean([config.lr * gamma**k for k in range(20)]) == pytest.approx(cosine_mean)
    assert any("cosine" in d for d in translation_differences(cos))


@pytest.mark.parametrize("changes, message", [
    ({"training": {"optimizer": "adam"}}, "AMSGrad"),
    ({"training": {"warmup_epochs": 2}}, "warm-up"),
    ({"training": {"loss": "huber"}}, "Huber"),
    ({"hparams": {"num_channel": 8}}, "num_channel"),
    ({"hparams": {"interaction_first": "RealAgnosticResidualInteractionBlock"}},
     "interaction_first"),
    ({"variant": "fusion"}, "mace/baseline"),
])
def test_unsupported_settings_raise(changes, message):
    with pytest.raises(UnsupportedSettingError, match=message):
        mace_run_train_args(make_spec(**changes), STATS)


def test_strict_rejects_approximations():
    spec = make_spec(training={"scheduler": "cosine"})
    mace_run_train_args(spec, STATS)  # approximated ...
    with pytest.raises(UnsupportedSettingError, match="cosine"):
        mace_run_train_args(spec, STATS, strict=True)  # ... unless strict


def test_cli_reports_unsupported_settings(tmp_path, capsys):
    spec = json.dumps(make_spec(training={"optimizer": "adam"}))
    assert main(["--spec", spec, "--workdir", str(tmp_path / "cc")]) == 1
    assert "AMSGrad" in capsys.readouterr().err
    assert not (tmp_path / "cc").exists()  # failed before any work


def test_crosscheck_targets():
    config = {"datasets": ["qm9-U0", "qm9-H"], "seeds": [0, 2],
              "models": {"mace": ["baseline"]}}
    assert crosscheck_targets(config) == []
    assert crosscheck_targets({**config, "crosscheck": True}) == [
        f"results/crosscheck/{d}/mace/baseline/seed-{s}/crosscheck.json"
        for d in ("qm9-U0", "qm9-H") for s in (0, 2)]
    assert crosscheck_targets({**config, "crosscheck": True, "models": {"x": ["y"]}}) == []


# ---------------------------------------------------------------------------- parsing


def test_parse_error_tables_and_test_mae():
    tables = parse_error_tables(MACE_LOG)
    assert set(tables) == {"TRAIN and VALID", "TEST"}
    assert tables["TRAIN and VALID"]["valid_Default"]["MAE E / meV"] == 885.2
    assert tables["TEST"]["Default_Default"] == {
        "MAE E / meV": 705.4, "MAE F / meV / A": None, "relative F MAE %": None}
    assert parse_test_mae(MACE_LOG) == 705.4
    with pytest.raises(ValueError, match="TEST"):
        parse_test_mae(MACE_LOG.split("Evaluating Default_Default")[0])
    with pytest.raises(ValueError, match="TotalMAE"):
        parse_test_mae(MACE_LOG.replace("MAE E / meV", "RMSE E / meV / atom"))


def test_parse_epoch_and_step_times():
    times = parse_epoch_times(MACE_LOG)
    assert times["epochs"] == 2
    assert times["epoch_seconds"] == pytest.approx([0.316, 0.082])
    assert times["seconds"] == pytest.approx(0.398)
    steps = parse_step_times(MACE_RESULTS)
    assert steps["steps"] == 3 and steps["epochs"] == 2
    assert steps["seconds"] == pytest.approx(0.22818779945373535 + 0.03588461875915527
                                             + 0.01742386817932129)
    with pytest.raises(ValueError, match="Initial"):
        parse_epoch_times("nothing here")


# --------------------------------------------------------------------------- real run


def test_tiny_real_crosscheck(tmp_path, qm9_cache):
    """Ours and mace_run_train on 32 molecules, 1 epoch: same parameter count, their
    saved model re-evaluated by us agrees with their table, crosscheck.json written."""
    from fusion.experiment import RunSpec, run_training

    spec = make_spec(
        out_dir=str(tmp_path / "ours"), cache_dir=str(qm9_cache), seed=0,
        split={"n_train": 32, "n_val": 16, "n_test": 16}, batch_size=16, eval_batch_size=32,
        hparams={"num_channels": 8, "max_L": 0, "max_ell": 1, "correlation": 2,
                 "num_interactions": 1, "radial_MLP": [8], "MLP_irreps": "4x0e",
                 "r_max": 5.0},
        training={"epochs": 1, "ema": False, "progress": False})
    ours = run_training(RunSpec.from_dict(spec), log=lambda line: None)
    lines = []
    result = run_crosscheck(spec, tmp_path / "cc", log=lines.append)
    assert any("Error-table on TEST" in line for line in lines)  # streamed
    assert json.loads((tmp_path / "cc" / "crosscheck.json").read_text()) == result
    theirs = result["theirs"]
    assert theirs["n_params"] == ours["n_params"] == result["ours"]["n_params"]
    assert theirs["test_mae_meV_our_evaluation"] == pytest.approx(
        theirs["test_mae_meV"], abs=0.051)
    assert result["ours"]["same_spec"] is True
    assert result["ours"]["test_mae_meV"] == ours["test"]["mae"]
    assert theirs["epochs"] == 1 and theirs["structures_per_epoch"] == 32
    assert theirs["structures_per_second"] > 0 and result["throughput_ratio_ours_over_theirs"] > 0
    assert result["test_mae_relative_difference"] == pytest.approx(
        (theirs["test_mae_meV"] - ours["test"]["mae"]) / ours["test"]["mae"])
