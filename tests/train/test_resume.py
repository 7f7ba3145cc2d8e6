"""Resuming: a run SIGKILLed in a subprocess and resumed in-process ends bit-identical to an
uninterrupted run; corrupt checkpoints fall back to the previous one, or to a fresh start."""

import csv
import signal
import subprocess
import sys

import pytest
import torch

from fusion.train.checkpoint import (
    REQUIRED_KEYS,
    atomic_torch_save,
    read_checkpoint,
    save_checkpoint,
)

TIMING = ("seconds_per_epoch", "wall_seconds")


def strip_timing(metrics):
    return {
        "val": metrics["val"],
        "test": metrics["test"],
        "units": metrics["units"],
        "train": {k: v for k, v in metrics["train"].items() if k not in TIMING},
    }


def log_rows(workdir):
    """log.csv rows without the wall-time column."""
    with open(workdir / "log.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def reference_rows(reference, tmp_path):
    path = tmp_path / "reference_log"
    path.mkdir()
    (path / "log.csv").write_text(reference["log"])
    return log_rows(path)


def assert_same_as_reference(metrics, workdir, reference, tmp_path):
    assert strip_timing(metrics) == strip_timing(reference["metrics"])
    assert log_rows(workdir) == reference_rows(reference, tmp_path)
    best = torch.load(workdir / "model.pt", weights_only=True)
    assert best.keys() == reference["model"].keys()
    assert all(torch.equal(best[k], reference["model"][k]) for k in best)


def run_killed_child(toy, workdir, **kill):
    """Train in a fresh interpreter that SIGKILLs itself at the point given by ``kill``."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('toy_problem', {str(toy.HERE)!r})\n"
        "toy = importlib.util.module_from_spec(spec)\n"
        "sys.modules['toy_problem'] = toy\n"
        "spec.loader.exec_module(toy)\n"
        f"toy.run_and_kill({str(workdir)!r}, **{kill!r})\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr)


@pytest.mark.parametrize(
    ("kill", "done"),
    [({"after_epoch": 3}, 3), ({"mid_epoch": (4, 2)}, 3)],
    ids=["after-checkpoint", "mid-epoch"],
)
def test_sigkill_then_resume_equals_uninterrupted(toy, tmp_path, reference, kill, done):
    workdir = tmp_path / "run"
    run_killed_child(toy, workdir, **kill)
    assert read_checkpoint(workdir / "checkpoint.pt")["epoch"] == done
    assert len(log_rows(workdir)) == done
    lines = []
    metrics = toy.run(workdir, log=lines.append)
    assert lines[0] == f"resuming from {workdir / 'checkpoint.pt'} after epoch {done} of 6"
    assert sum(line.startswith("epoch ") for line in lines) == 6 - done
    assert metrics["train"]["epochs"] == 6
    assert_same_as_reference(metrics, workdir, reference, tmp_path)


def test_corrupt_checkpoint_falls_back_to_previous(toy, tmp_path, reference):
    toy.run(tmp_path)
    ckpt = tmp_path / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    lines = []
    metrics = toy.run(tmp_path, log=lines.append)
    assert any("corrupt checkpoint" in ln and str(ckpt) in ln for ln in lines), lines
    assert any(ln == f"resuming from {tmp_path / 'checkpoint.prev.pt'} after epoch 5 of 6"
               for ln in lines)  # fmt: skip
    corrupt = tmp_path / "checkpoint.pt.corrupt"
    assert corrupt.read_bytes() == data[: len(data) // 2]  # kept for inspection
    # Epoch 6 ran again; log.csv dropped its stale row and got a new one.
    assert_same_as_reference(metrics, tmp_path, reference, tmp_path)
    assert read_checkpoint(ckpt)["epoch"] == 6


def test_checkpoint_missing_keys_is_corrupt(toy, tmp_path, reference):
    toy.run(tmp_path)
    torch.save({"epoch": 6, "model": {}}, tmp_path / "checkpoint.pt")
    lines = []
    metrics = toy.run(tmp_path, log=lines.append)
    assert any("missing key(s)" in ln and "checkpoint.pt" in ln for ln in lines), lines
    assert (tmp_path / "checkpoint.pt.corrupt").exists()
    assert_same_as_reference(metrics, tmp_path, reference, tmp_path)


def test_no_good_checkpoint_starts_fresh_with_warning(toy, tmp_path, reference):
    toy.run(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "checkpoint.prev.pt").write_bytes(b"")
    (tmp_path / "checkpoint.pt.corrupt").write_bytes(b"older corrupt file")
    lines = []
    metrics = toy.run(tmp_path, log=lines.append)
    assert any("starting fresh" in ln and ln.startswith("warning:") for ln in lines), lines
    assert not any(ln.startswith("resuming") for ln in lines)
    assert (tmp_path / "checkpoint.pt.corrupt").read_bytes() == b"older corrupt file"
    assert (tmp_path / "checkpoint.pt.corrupt.1").read_bytes() == b"not a checkpoint"
    assert (tmp_path / "checkpoint.prev.pt.corrupt").read_bytes() == b""
    assert_same_as_reference(metrics, tmp_path, reference, tmp_path)


def test_resume_when_only_prev_exists(toy, tmp_path, reference):
    toy.run(tmp_path, config={"epochs": 3})
    (tmp_path / "checkpoint.pt").unlink()
    lines = []
    metrics = toy.run(tmp_path, log=lines.append)
    assert lines[0] == f"resuming from {tmp_path / 'checkpoint.prev.pt'} after epoch 2 of 6"
    assert metrics["train"]["epochs"] == 6


def test_resume_with_changed_config_warns(toy, tmp_path):
    toy.run(tmp_path, config={"epochs": 2})
    lines = []
    toy.run(tmp_path, config={"epochs": 3, "lr": 0.02}, log=lines.append)
    assert any("config differs" in ln and "'lr'" in ln for ln in lines), lines


def test_checkpoint_of_another_model_is_refused(toy, tmp_path):
    toy.run(tmp_path, config={"epochs": 1})
    model = torch.nn.Module()
    model.lin = torch.nn.Linear(2, 2)
    tr, va, te = toy.loaders()
    from fusion.train.trainer import train

    with pytest.raises(RuntimeError, match="does not fit this model"):
        train(model, tr, va, te, {**toy.BASE_CONFIG}, tmp_path, log=lambda s: None)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1  # not treated as corrupt


def test_save_checkpoint_is_atomic_and_keeps_prev(tmp_path):
    state = {k: None for k in REQUIRED_KEYS} | {"format": 1, "epoch": 1}
    save_checkpoint(state, tmp_path)
    save_checkpoint({**state, "epoch": 2}, tmp_path)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 2
    assert read_checkpoint(tmp_path / "checkpoint.prev.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.prev.pt", "checkpoint.pt"]
    with pytest.raises(ValueError, match="missing key"):
        save_checkpoint({"epoch": 3}, tmp_path)
    atomic_torch_save({"a": torch.ones(2)}, tmp_path / "x.pt")
    assert torch.equal(torch.load(tmp_path / "x.pt", weights_only=True)["a"], torch.ones(2))
