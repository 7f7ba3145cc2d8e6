"""Faults the suite survives, each shown here (or in the test named in its docstring).

1. A training process SIGKILLed at a random moment resumes from its last checkpoint and
   ends bit-identical to an uninterrupted run (CPU, float64, one thread). Fixed kill points
   (after a checkpoint, mid-epoch) are in tests/train/test_resume.py and a real MACE run
   through ``fusion train`` in tests/cli/test_cli.py; here the moment is random (seeded).
2. A corrupt checkpoint is detected and the previous good one is used: truncation and
   missing keys in tests/train/test_resume.py; here flipped bytes inside a tensor, which
   ``torch.load`` itself does not notice (the content digest does).
3. A half-written output never counts as finished: atomic writes leave the old file or no
   file, never a partial one; Snakemake marks a job killed mid-run incomplete and
   ``--rerun-incomplete`` redoes it.
4. A NaN or infinite loss, gradient or validation error stops the run with a clear message
   and keeps the last good checkpoint (NaN loss in tests/train/test_trainer.py).
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from fusion.train.checkpoint import (
    CheckpointError,
    atomic_write_text,
    content_digest,
    load_latest_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from fusion.train.metrics import write_metrics_json
from fusion.train.trainer import TrainingDivergedError, train

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TIMING = ("seconds_per_epoch", "wall_seconds")
# Longer than the toy's default 6 epochs so that a random kill moment lands in training.
KILL_CONFIG = {"epochs": 10}
SLEEP_PER_BATCH_S = 0.02  # child only: spreads 40 batches over >= 0.8 s, results unchanged


def strip_timing(metrics: dict) -> dict:
    """The parts of train()'s result that must be identical between runs (no wall times)."""
    return {
        "val": metrics["val"],
        "test": metrics["test"],
        "units": metrics["units"],
        "train": {k: v for k, v in metrics["train"].items() if k not in TIMING},
    }


def log_rows(workdir: Path) -> list[dict]:
    with open(workdir / "log.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def uninterrupted(toy, tmp_path_factory):
    """Metrics, log rows and best weights of one uninterrupted run of ``KILL_CONFIG``."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    metrics = toy.run(workdir, config=KILL_CONFIG)
    return {
        "metrics": strip_timing(metrics),
        "log": log_rows(workdir),
        "model": torch.load(workdir / "model.pt", weights_only=True),
    }


def start_training_child(toy, workdir: Path) -> subprocess.Popen:
    """Train ``KILL_CONFIG`` in a fresh interpreter; it prints ``training`` at its first batch."""
    code = textwrap.dedent(
        f"""
        import importlib.util, sys, time
        spec = importlib.util.spec_from_file_location("toy_problem", {str(toy.HERE)!r})
        toy = importlib.util.module_from_spec(spec)
        sys.modules["toy_problem"] = toy
        spec.loader.exec_module(toy)

        def slow(epoch, b, batch):
            if (epoch, b) == (1, 1):
                print("training", flush=True)
            time.sleep({SLEEP_PER_BATCH_S})
            return batch

        toy.run({str(workdir)!r}, config={KILL_CONFIG!r}, train_hook=slow)
        print("finished", flush=True)
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("trial", range(3))
def test_sigkill_at_a_random_moment_resumes_to_identical_results(
    toy, tmp_path, uninterrupted, trial
):
    delay_s = random.Random(1000 + trial).uniform(0.0, 0.5)  # training lasts >= 0.8 s
    workdir = tmp_path / "run"
    child = start_training_child(toy, workdir)
    first = child.stdout.readline().strip()
    assert first == "training", (first, child.stderr.read())
    time.sleep(delay_s)
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, f"child ended on its own after {delay_s:.3f} s"
    assert not (workdir / "model.pt").exists()  # it did not finish

    state, _ = load_latest_checkpoint(workdir, log=lambda line: None)
    done = state["epoch"] if state is not None else 0
    assert 0 <= done < KILL_CONFIG["epochs"]
    lines: list[str] = []
    metrics = toy.run(workdir, config=KILL_CONFIG, log=lines.append)
    if done:
        assert f"after epoch {done} of {KILL_CONFIG['epochs']}" in lines[0], lines[0]
    assert sum(line.startswith("epoch ") for line in lines) == KILL_CONFIG["epochs"] - done
    assert strip_timing(metrics) == uninterrupted["metrics"]
    assert log_rows(workdir) == uninterrupted["log"]
    best = torch.load(workdir / "model.pt", weights_only=True)
    assert all(torch.equal(best[k], uninterrupted["model"][k]) for k in best)


# ------------------------------------------------------------------- corrupt checkpoints


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_flipped_tensor_bytes_are_detected_and_the_previous_checkpoint_used(toy, tmp_path):
    toy.run(tmp_path, config={"epochs": 3})
    ckpt = tmp_path / "checkpoint.pt"
    state = read_checkpoint(ckpt)
    weight = next(iter(state["model"].values()))
    offset = ckpt.read_bytes().find(weight.numpy().tobytes())
    assert offset > 0  # torch stores tensor data uncompressed
    _flip_byte(ckpt, offset + 3)
    # torch.load alone does not notice: the zip records' CRCs are not checked on load.
    raw = torch.load(ckpt, weights_only=True)
    assert not torch.equal(next(iter(raw["model"].values())), weight)
    with pytest.raises(CheckpointError, match="fails its content checksum"):
        read_checkpoint(ckpt)

    lines: list[str] = []
    metrics = toy.run(tmp_path, config={"epochs": 4}, log=lines.append)
    assert any(
        ln.startswith(f"warning: corrupt checkpoint {ckpt}") and "content checksum" in ln
        for ln in lines
    ), lines
    assert f"resuming from {tmp_path / 'checkpoint.prev.pt'} after epoch 2 of 4" in lines
    assert (tmp_path / "checkpoint.pt.corrupt").exists()  # kept for inspection
    assert metrics["train"]["epochs"] == 4


def test_random_byte_flips_never_load_as_a_good_checkpoint(tmp_path):
    state = {
        "format": 1,
        "epoch": 3,
        "model": {"w": torch.linspace(-1, 1, 256, dtype=torch.float64)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1}]},
        "schedule": {"plateau_lr": 0.1, "best": float("inf"), "num_bad": 0},
        "ema": None,
        "best_val": 1.5,
        "best_epoch": 2,
        "best_state": {"w": torch.zeros(256, dtype=torch.float64)},
        "rng": {"torch": torch.get_rng_state()},
        "early_stop_counter": 0,
        "stopped_early": False,
        "log_rows": [{"epoch": 1, "lr": 0.1}],
        "config": {"lr": 0.1},
        "seconds_total": 1.0,
        "n_train_structures": 8,
    }
    path = save_checkpoint(state, tmp_path)
    good = path.read_bytes()
    expected = content_digest(state)
    rng = random.Random(7)
    detected = 0
    for offset in rng.sample(range(len(good)), 200):
        _flip_byte(path, offset)
        try:
            loaded = read_checkpoint(path)
        except CheckpointError:
            detected += 1
        else:  # a byte that carries no content (zip padding, alignment, names)
            assert content_digest(loaded) == expected
        path.write_bytes(good)
    assert detected > 100  # most bytes are content


# ------------------------------------------------------------------ half-written outputs


def test_interrupted_atomic_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    target.write_text('{"old": true}')

    def crash(*args):
        raise KeyboardInterrupt  # as a signal between writing and renaming

    monkeypatch.setattr("fusion.train.checkpoint.os.replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, '{"new": true}')
    assert target.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temp left


def test_sigkill_mid_write_leaves_no_output(tmp_path):
    """A process killed while writing leaves only a hidden temp file, never ``metrics.json``."""
    target = tmp_path / "metrics.json"
    code = textwrap.dedent(
        f"""
        import os, signal
        from fusion.train.checkpoint import _atomic_write

        def write_half(f):
            f.write(b'{{"test": {{"mae": 1.')
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        _atomic_write({str(target)!r}, write_half, "wb")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not target.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".metrics.json.")
    assert leftovers[0].endswith(".tmp")


def test_metrics_json_is_written_atomically(tmp_path, monkeypatch):
    """write_metrics_json goes through the atomic path: a crash before the rename loses
    nothing already there."""
    target = tmp_path / "metrics.json"
    target.write_text("previous")
    monkeypatch.setattr(
        "fusion.train.checkpoint.os.replace", lambda *a: (_ for _ in ()).throw(OSError(28, "full"))
    )
    with pytest.raises(Exception):  # noqa: B017  (schema or disk error: either keeps the file)
        write_metrics_json(target, {"schema_version": 1})
    assert target.read_text() == "previous"


SNAKEFILE = """\
rule all:
    input:
        "out.txt",


rule slow:
    output:
        "out.txt",
    shell:
        "echo half > {output}; if [ -e slow.flag ]; then sleep 120; fi; echo done >> {output}"
"""


def _snakemake(workdir: Path, *args: str, **kwargs):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(BIN / "snakemake"), "--cores", "1", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def test_snakemake_job_killed_mid_run_is_incomplete_and_redone(tmp_path):
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "slow.flag").touch()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen(
        [str(BIN / "snakemake"), "--cores", "1"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: snakemake and the job's shell
    )
    out = tmp_path / "out.txt"
    deadline = time.time() + 120
    while not (out.exists() and out.read_text() == "half\n"):
        assert proc.poll() is None and time.time() < deadline, "the job never started"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # as a pre-empted node: no clean-up at all
    proc.wait()
    assert out.read_text() == "half\n"
    (tmp_path / "slow.flag").unlink()

    # The half-written output does not count as finished ...
    refused = _snakemake(tmp_path)
    text = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "IncompleteFilesException" in text and "Incomplete files:\nout.txt" in text
    assert "rerun your command with the --rerun-incomplete flag" in text
    assert out.read_text() == "half\n"
    # ... the killed run's lock must go first (Snakemake names the fix) ...
    locked = _snakemake(tmp_path, "--rerun-incomplete")
    text = locked.stdout + locked.stderr
    assert locked.returncode != 0 and "Directory cannot be locked" in text
    assert "It can be removed with the --unlock argument" in text
    assert _snakemake(tmp_path, "--unlock").returncode == 0
    # ... and --rerun-incomplete (set in profiles/default and the SLURM profile) redoes it.
    redone = _snakemake(tmp_path, "--rerun-incomplete")
    assert redone.returncode == 0, redone.stdout + redone.stderr
    assert out.read_text() == "half\ndone\n"
    assert "Nothing to be done" in _snakemake(tmp_path, "--dry-run").stdout


@pytest.mark.parametrize("profile", ["profiles/default", "workflow/profiles/slurm"])
def test_workflow_profiles_rerun_incomplete_jobs(profile):
    settings = yaml.safe_load((REPO / f"{profile}/config.yaml").read_text())
    assert settings["rerun-incomplete"] is True
    assert settings["keep-going"] is True


# ------------------------------------------------------------------------- divergence


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(
    toy, tmp_path, value
):
    def poison(epoch, b, batch):
        if (epoch, b) == (3, 1):
            batch["y"] = batch["y"].clone()
            batch["y"][0] = value
        return batch

    with pytest.raises(TrainingDivergedError) as err:
        toy.run(tmp_path, train_hook=poison)
    loss = "nan" if value != value else "inf"  # the MSE of +-inf is inf
    ckpt = tmp_path / "checkpoint.pt"
    assert str(err.value) == (
        f"training diverged: non-finite value {loss} at epoch 3, batch 1; "
        f"last good checkpoint kept at {ckpt}"
    )
    assert read_checkpoint(ckpt)["epoch"] == 2
    assert not (tmp_path / "model.pt").exists()  # a diverged run writes no result


def test_non_finite_validation_error_stops_the_run(toy, tmp_path):
    tr, va, te = toy.loaders()

    validations = []

    def poison(epoch, b, batch):  # the validation loader's epoch is not set: count passes
        if b == 1:
            validations.append(b)
        if len(validations) == 2:
            batch["y"] = batch["y"].clone()
            batch["y"][0] = float("nan")
        return batch

    va.hook = poison
    torch.manual_seed(0)
    model = toy.ToyModel()
    with pytest.raises(TrainingDivergedError) as err:
        train(model, tr, va, te, {**toy.BASE_CONFIG}, tmp_path, log=lambda s: None)
    assert str(err.value) == (
        f"training diverged: non-finite value nan at epoch 2, batch validation; "
        f"last good checkpoint kept at {tmp_path / 'checkpoint.pt'}"
    )
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_non_finite_gradient_stops_the_run_before_the_weights_change(toy, tmp_path):
    class InfGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * float("inf")

    class Model(toy.ToyModel):
        def forward(self, batch, compute_forces=False):
            out = super().forward(batch, compute_forces)
            if self.training:
                if self.calls == 5:  # epoch 2, batch 2 (4 batches an epoch)
                    out = {**out, "energy": InfGradient.apply(out["energy"])}
                self.calls += 1
            return out

    torch.manual_seed(0)
    model = Model()
    model.calls = 0
    tr, va, te = toy.loaders()
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, batch 2 \(gradient norm\)"):
        train(model, tr, va, te, {**toy.BASE_CONFIG}, tmp_path, log=lambda s: None)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
