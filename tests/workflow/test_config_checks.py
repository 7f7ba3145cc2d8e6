"""Config checks before any job (issue 19): integers must be integers, unknown keys in
`training`, `split` and `hparams` are refused, builders' ranges are checked per run, an
empty config file is an error; every message is one line naming the key."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fusion.models.registry import check_hparams
from fusion.train.trainer import TrainConfig
from fusion.workflow_config import check_run_settings, validate_config

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
TEST = yaml.safe_load((REPO / "config/test.yaml").read_text())


def _changed(path: str, value):
    config = copy.deepcopy(TEST)
    *parents, key = path.split(".")
    node = config
    for name in parents:
        node = node[name]
    node[key] = value
    return config


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("split.n_train", 48.0, "config: split.n_train: 48.0 is not of type 'integer', 'null'"),
        ("split.n_test", 0, "config: split.n_test: 0 is less than the minimum of 1"),
        ("split.ntrain", 5, "config: split: Additional properties are not allowed ('ntrain' was"),
        ("seeds", [0, 1.0], "config: seeds.1: 1.0 is not of type 'integer'"),
        ("seeds", [True], "config: seeds.0: True is not of type 'integer'"),
        ("seeds", [2**63], "config: seeds.0: 9223372036854775808 is greater than the maximum "
                           "of 4294967295"),
        ("seeds", [2**64], "config: seeds.0: 18446744073709551616 is greater than the maximum"),
        ("batch_size", 16.0, "config: batch_size: 16.0 is not of type 'integer'"),
        ("training.epoch", 3, "config: training: Additional properties are not allowed ('epoch'"),
        ("training.seed", 3, "config: training: Additional properties are not allowed ('seed'"),
        ("training.epochs", 2.0, "config: training.epochs: 2.0 is not of type 'integer'"),
        ("cache_dir", "", "config: cache_dir: '' should be non-empty"),
    ],
)
def test_schema_errors_are_one_line_naming_the_key(path, value, message):
    with pytest.raises(ValueError) as err:
        validate_config(_changed(path, value), ["bad.yaml"], SCHEMA)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_every_shipped_config_passes():
    for path in sorted((REPO / "config").glob("*.yaml")):
        validate_config(yaml.safe_load(path.read_text()), [path], SCHEMA)


def test_an_empty_config_file_is_an_error_not_the_paper_grid():
    with pytest.raises(ValueError, match=r"config: the config file\(s\) empty.yaml set nothing"):
        validate_config({}, ["empty.yaml"], SCHEMA)


def test_the_schema_lists_every_training_setting_of_the_trainer():
    schema = yaml.safe_load(SCHEMA.read_text())
    listed = set(schema["properties"]["training"]["properties"])
    assert listed == set(TrainConfig.keys()) - {"seed", "threads"}  # those come from the grid
    from fusion.train import trainer

    training = schema["properties"]["training"]["properties"]
    for key, choices in (("optimizer", trainer.OPTIMIZERS), ("scheduler", trainer.SCHEDULERS),
                         ("monitor", trainer.MONITORS), ("loss", trainer.LOSSES),
                         ("dtype", trainer.DTYPES), ("amp_dtype", trainer.AMP_DTYPES)):
        assert training[key]["enum"] == list(choices), key


@pytest.mark.parametrize(
    ("model", "variant", "hparams", "message"),
    [
        ("mace", "baseline", {"num_channels": 0},
         "MACE hyperparameter num_channels: expected an integer >= 1, got 0"),
        ("mace", "baseline", {"num_interactions": 0},
         "MACE hyperparameter num_interactions: expected an integer >= 1, got 0"),
        ("mace", "fusion", {"correlation": 0},
         "MACE hyperparameter correlation: expected an integer >= 1, got 0"),
        ("mace", "baseline", {"max_ell": -1},
         "MACE hyperparameter max_ell: expected an integer >= 1, got -1"),
        ("mace", "baseline", {"num_channels": 8.0},
         "MACE hyperparameter num_channels: expected an integer >= 1, got 8.0"),
        ("mace", "baseline", {"r_max": -5.0},
         "MACE hyperparameter r_max: expected a cutoff radius > 0 (Å), got -5.0"),
        ("mace", "baseline", {"radial_MLP": []},
         "MACE hyperparameter radial_MLP: expected a non-empty list of integers >= 1"),
        ("mace", "baseline", {"MLP_irreps": "sixteen"},
         "MACE hyperparameter MLP_irreps: expected irreps such as '16x0e', got 'sixteen'"),
        ("mace", "fusion-vertex", {"num_chanels": 8}, "unknown hyperparameter(s) ['num_chanels']"),
        ("composition", "baseline", {"num_channels": 8}, "composition has no hyperparameters"),
    ],
)
def test_builders_check_their_hyperparameters_without_building(model, variant, hparams, message):
    with pytest.raises(ValueError) as err:
        check_hparams(model, variant, hparams)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_run_settings_name_the_run():
    with pytest.raises(ValueError) as err:
        check_run_settings("qm9-U0 mace/baseline", {"warmup_epochs": 3, "epochs": 2},
                           {}, "mace", "baseline")
    assert str(err.value) == ("config: qm9-U0 mace/baseline: TrainConfig.warmup_epochs: "
                              "expected fewer than epochs (2), got 3")
    check_run_settings("qm9-U0 mace/baseline", TEST["training"],
                       TEST["hparams"]["mace"]["baseline"], "mace", "baseline")


def _snakemake(work: Path, *args: str) -> tuple[int, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run([str(BIN / "snakemake"), "--cores", "1", "--dry-run", *args],
                          cwd=work, env=env, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


def test_snakemake_refuses_an_empty_config_file_and_a_bad_run_in_one_line(tmp_path):
    for name in ("Snakefile", "environment.yml"):
        (tmp_path / name).write_bytes((REPO / name).read_bytes())
    for name in ("workflow", "config"):
        subprocess.run(["cp", "-r", str(REPO / name), str(tmp_path / name)], check=True)
    (tmp_path / "empty.yaml").write_text("{}\n")
    rc, out = _snakemake(tmp_path, "--configfile", "empty.yaml")
    assert rc != 0
    assert "config: the config file(s) " in out and "empty.yaml set nothing (empty)" in out
    assert "Building DAG" not in out  # nothing of the paper grid was scheduled

    bad = _changed("hparams.mace.fusion", {**TEST["hparams"]["mace"]["fusion"],
                                          "num_channels": 0})
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    rc, out = _snakemake(tmp_path, "--configfile", "bad.yaml")
    assert rc != 0
    lines = [line for line in out.splitlines() if "num_channels" in line]
    assert lines == ["config: qm9-U0 mace/fusion: MACE hyperparameter num_channels: expected "
                     "an integer >= 1, got 0"], out
    assert "Failed validating" not in out  # no schema dump
