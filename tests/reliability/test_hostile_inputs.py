"""Inputs of a hostile but fair user (issue 19): run specs naming odd paths, specs of
another model, operating-system errors. Each ends in one ``error:`` line naming the path or
key, and nothing finished is overwritten."""

from __future__ import annotations

import json

import pytest

from fusion.cli import main


def _spec(tmp_path, **changes) -> dict:
    spec = {
        "dataset": "qm9-U0",
        "model": "mace",
        "variant": "baseline",
        "seed": 0,
        "out_dir": str(tmp_path / "run"),
        "cache_dir": str(tmp_path / "no-cache-here"),
    }
    spec.update(changes)
    return spec


@pytest.mark.parametrize(
    ("key", "value"),
    [("out_dir", ""), ("out_dir", "  "), ("cache_dir", ""), ("cache_dir", "~/resources")],
)
def test_run_spec_paths_that_name_no_directory_are_refused(tmp_path, capsys, key, value):
    spec = _spec(tmp_path, **{key: value})
    assert main(["train", "--spec", json.dumps(spec)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: run spec key {key!r} should name a directory (not empty, no leading '~', "
        f"which is not expanded here: give the full path), got {value!r}\n"
    )
    assert not (tmp_path / "no-cache-here").exists()


# ------------------------------------------------------------ a spec that is not its model


def _fake_metrics(folder, **run) -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"schema_version": 1, "dataset": "qm9-U0", "model": "mace",
              "variant": "baseline", "seed": 0, "test": {"mae": 12.5}, **run}
    (folder / "metrics.json").write_text(json.dumps(record))
    return (folder / "metrics.json").read_bytes()


def test_composition_refuses_a_spec_of_another_model(tmp_path, capsys):
    before = _fake_metrics(tmp_path / "run")
    spec = _spec(tmp_path)  # mace/baseline, pointing at a finished MACE run
    assert main(["composition", "--spec", json.dumps(spec)]) == 2
    assert capsys.readouterr().err == (
        "error: fusion composition fits composition/baseline; this run spec is for "
        "mace/baseline (train it with fusion train)\n"
    )
    assert (tmp_path / "run/metrics.json").read_bytes() == before
    assert not (tmp_path / "no-cache-here").exists()


def test_train_refuses_the_composition_model(tmp_path, capsys):
    spec = _spec(tmp_path, model="composition")
    assert main(["train", "--spec", json.dumps(spec)]) == 2
    err = capsys.readouterr().err
    assert err == "error: composition is fitted in closed form: run fusion composition\n"


@pytest.mark.parametrize("command", ["train", "composition"])
def test_writers_refuse_a_folder_holding_another_runs_results(tmp_path, capsys, command):
    before = _fake_metrics(tmp_path / "run", model="cormorant", variant="fusion", seed=2)
    model = "mace" if command == "train" else "composition"
    spec = _spec(tmp_path, model=model, training={"epochs": 1})
    assert main([command, "--spec", json.dumps(spec)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: {tmp_path}/run/metrics.json belongs to qm9-U0 cormorant/fusion seed 2, not to "
        f"this run spec's qm9-U0 {model}/baseline seed 0: refusing to overwrite it (give this "
        "run its own out_dir)\n"
    )
    assert (tmp_path / "run/metrics.json").read_bytes() == before


def test_writers_refuse_the_grid_folder_of_another_run(tmp_path, capsys):
    out = tmp_path / "results/train/qm9-U0/mace/baseline/seed-0"
    spec = _spec(tmp_path, model="composition", out_dir=str(out))
    assert main(["composition", "--spec", json.dumps(spec)]) == 2
    assert capsys.readouterr().err == (
        f"error: {out} is the folder of qm9-U0 mace/baseline seed 0, but the run spec is "
        "qm9-U0 composition/baseline seed 0: refusing to write another run's results there\n"
    )
    assert not out.exists()


# ------------------------------------------------------------ run spec values


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"split": {"ntrain": 48}}, "run spec key 'split' has unknown key(s) ['ntrain']; valid: "
                                    "['n_train', 'n_val', 'n_test'] (null or absent = the whole "
                                    "official split)"),
        ({"split": {"n_test": 0}}, "run spec key 'split.n_test' should be an integer >= 1 or "
                                   "null, got 0"),
        ({"split": {"n_train": 48.0}}, "run spec key 'split.n_train' should be an integer >= 1 "
                                       "or null, got 48.0"),
        ({"seed": 2**64}, "run spec key 'seed' should be an integer from 0 to 4294967295 "
                          "(numpy's seed range), got 18446744073709551616"),
        ({"seed": -1}, "run spec key 'seed' should be an integer from 0 to 4294967295"),
        ({"batch_size": 0}, "run spec key 'batch_size' should be an integer >= 1, got 0"),
        ({"hparams": {"num_channels": 0}},
         "MACE hyperparameter num_channels: expected an integer >= 1, got 0"),
        ({"hparams": {"correlation": 0}},
         "MACE hyperparameter correlation: expected an integer >= 1, got 0"),
    ],
)
def test_bad_run_spec_values_fail_before_anything_is_written(tmp_path, capsys, change, message):
    spec = _spec(tmp_path, **change)
    assert main(["train", "--spec", json.dumps(spec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "no-cache-here").exists()


# ------------------------------------------------------------ operating-system errors


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


def test_a_file_where_the_run_folder_should_be(tmp_path, capsys):
    (tmp_path / "taken").write_text("not a folder")
    spec = _spec(tmp_path, out_dir=str(tmp_path / "taken" / "run"), training={"epochs": 1})
    assert main(["train", "--spec", json.dumps(spec)]) == 1
    assert _one_error_line(capsys) == (
        f"error: {tmp_path}/taken/run: Not a directory (errno 20)")


def test_a_name_too_long(tmp_path, capsys):
    out = tmp_path / ("r" * 300)
    spec = _spec(tmp_path, out_dir=str(out), training={"epochs": 1})
    assert main(["train", "--spec", json.dumps(spec)]) == 1
    assert _one_error_line(capsys) == f"error: {out}: File name too long (errno 36)"


def test_a_folder_given_as_the_spec_file(tmp_path, capsys):
    assert main(["train", "--spec", f"@{tmp_path}"]) == 1
    assert _one_error_line(capsys) == f"error: {tmp_path}: Is a directory (errno 21)"


def test_a_read_only_folder(tmp_path, capsys, monkeypatch):
    """Tests run as root, which writes anyway: the refusal the kernel gives a user in a
    read-only folder is injected where the run's folder is created."""
    import errno
    from pathlib import Path

    out = tmp_path / "ro" / "run"

    def read_only(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    spec = _spec(tmp_path, out_dir=str(out), training={"epochs": 1})
    assert main(["train", "--spec", json.dumps(spec)]) == 1
    assert _one_error_line(capsys) == f"error: {out}: Permission denied (errno 13)"


def test_a_full_disk_while_writing_names_the_file_and_leaves_no_temporary(tmp_path, capsys,
                                                                          monkeypatch):
    import errno

    from fusion.train import checkpoint

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full)
    out = tmp_path / "tables" / "dataset_cards.md"
    with pytest.raises(OSError) as err:
        checkpoint.atomic_write_text(out, "x" * 1000)
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(out))
    assert list(out.parent.iterdir()) == []  # no temporary left behind
