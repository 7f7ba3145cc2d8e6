"""Bad inputs that had no test elsewhere: command-line arguments, missing input files, bad
training settings given through a run spec. Every one ends in a message naming the
argument, file or field and what was expected (catalogue: docs/reliability.md)."""

from __future__ import annotations

import json

import pytest

from fusion.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "fusion: error: the following arguments are required: command"),
        (["frobnicate"], "fusion: error: argument command: invalid choice: 'frobnicate'"),
        (
            ["params", "--model", "mace", "--hparams", "{bad"],
            "fusion params: error: argument --hparams: not valid JSON (Expecting property "
            "name enclosed in double quotes: line 1 column 2 (char 1)): '{bad'",
        ),
        (
            ["params", "--model", "mace", "--hparams", "[8]"],
            "fusion params: error: argument --hparams: expected a JSON object such as "
            "'{\"num_channels\": 8}', got '[8]'",
        ),
        (
            ["params", "--model", "mace", "--elements", "1,x"],
            "fusion params: error: argument --elements: expected comma-separated atomic "
            "numbers such as 1,6,7,8,9, got '1,x'",
        ),
        (["params", "--variant", "baseline"], "the following arguments are required: --model"),
        (["aggregate", "--out-dir", "x"], "the following arguments are required: metrics"),
    ],
)
def test_bad_command_line_arguments_give_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: fusion")
    assert message in err


def test_missing_run_spec_and_files_name_the_path(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FUSION_RUN_SPEC", raising=False)
    assert main(["train"]) == 2
    assert capsys.readouterr().err == (
        "error: no run spec given (pass --spec JSON or --spec @file.json)\n"
    )
    missing = tmp_path / "spec.json"
    assert main(["train", "--spec", f"@{missing}"]) == 2
    assert capsys.readouterr().err == f"error: [Errno 2] No such file or directory: '{missing}'\n"
    metrics = tmp_path / "results/train/x/metrics.json"
    assert main(["aggregate", str(metrics), "--out-dir", str(tmp_path / "tables")]) == 2
    assert capsys.readouterr().err == f"error: {metrics}: metrics file does not exist\n"


def test_bad_training_settings_in_a_run_spec_fail_before_any_data_is_loaded(tmp_path, capsys):
    spec = {
        "dataset": "qm9-U0",
        "model": "mace",
        "variant": "baseline",
        "seed": 0,
        "out_dir": str(tmp_path / "run"),
        "cache_dir": str(tmp_path / "no-cache-here"),
        "training": {"amp": True, "dtype": "float64"},
    }
    assert main(["train", "--spec", json.dumps(spec)]) == 2
    assert capsys.readouterr().err.startswith(
        "error: TrainConfig.amp: expected false when dtype is 'float64'"
    )
    spec["training"] = {"device": "gpu"}
    assert main(["train", "--spec", json.dumps(spec)]) == 2
    assert capsys.readouterr().err == (
        "error: TrainConfig.device: expected one of ['cpu', 'cuda', 'auto'] or 'cuda:N' "
        "(N = 0, 1, ...), got 'gpu'\n"
    )
    spec["training"] = {"epochs": 3, "learning_rate": 0.1}
    assert main(["train", "--spec", json.dumps(spec)]) == 2
    assert "unknown TrainConfig key(s) ['learning_rate']; valid keys:" in capsys.readouterr().err
    assert not (tmp_path / "no-cache-here").exists()  # nothing was built or loaded
