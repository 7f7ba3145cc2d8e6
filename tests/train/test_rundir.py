"""One writer per run directory (fusion.train.rundir.run_lock): a second writer is refused
naming the holder's pid and host, a lock left by a killed writer is taken over, and the
run's checkpoint is tied to its run spec and data (run_id)."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading

import pytest

from fusion.cli import main
from fusion.train import rundir
from fusion.train.rundir import LOCK_NAME, RunDirLocked, run_lock

HOLDER = """
import sys
from fusion.train.rundir import run_lock
with run_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()  # hold until the test closes stdin (or kills us)
"""


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    return proc


def _spec(tmp_path) -> str:
    return json.dumps({
        "dataset": "qm9-U0", "model": "mace", "variant": "baseline", "seed": 0,
        "out_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "no-cache-here"),
        "training": {"epochs": 1},
    })


def test_a_second_fusion_train_on_the_same_run_is_refused(tmp_path, capsys):
    holder = _holder(tmp_path / "run")
    try:
        assert main(["train", "--spec", _spec(tmp_path)]) == 1
    finally:
        holder.stdin.close()
        holder.wait()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: {tmp_path}/run is being written by pid {holder.pid} "
                             f"on host {socket.gethostname()} (since ")
    assert "a second writer would interleave log.csv and race on the checkpoints" in err[0]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_NAME]  # nothing else
    assert not (tmp_path / "no-cache-here").exists()  # refused before loading any data


def test_two_threads_cannot_hold_one_run_directory(tmp_path):
    errors = []

    def second():
        try:
            with run_lock(tmp_path, log=errors.append):
                errors.append("acquired")
        except RunDirLocked as err:
            errors.append(str(err))

    with run_lock(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        thread.join()
    assert len(errors) == 1 and f"being written by pid {os.getpid()} on host" in errors[0]
    with run_lock(tmp_path, log=errors.append):  # released: free again, nothing stale
        pass
    assert len(errors) == 1


def test_the_lock_of_a_killed_writer_is_taken_over(tmp_path):
    holder = _holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    messages = []
    with run_lock(tmp_path, log=messages.append):
        record = json.loads((tmp_path / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid()
    assert messages == [
        f"warning: took over the stale lock {tmp_path / LOCK_NAME} of pid {holder.pid} on host "
        f"{socket.gethostname()} (since {messages[0].split('(since ')[1].split(')')[0]}), "
        "which is no longer running"
    ]


def test_without_flock_the_record_decides(tmp_path, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(rundir.fcntl, "flock", no_flock)
    lock = tmp_path / LOCK_NAME
    host = socket.gethostname()
    lock.write_text(json.dumps({"pid": os.getppid(), "host": host}))  # alive
    with pytest.raises(RunDirLocked, match=f"being written by pid {os.getppid()} on host"):
        with run_lock(tmp_path):
            pass
    lock.write_text(json.dumps({"pid": 4242, "host": "other-node"}))  # cannot be checked
    with pytest.raises(RunDirLocked, match="pid 4242 on host other-node"):
        with run_lock(tmp_path):
            pass
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(json.dumps({"pid": dead.pid, "host": host}))
    messages = []
    with run_lock(tmp_path, log=messages.append):
        pass
    assert len(messages) == 1 and f"stale lock {lock} of pid {dead.pid}" in messages[0]


def test_a_checkpoint_of_another_run_id_is_refused_by_the_trainer(tmp_path, toy):
    from fusion.train.checkpoint import read_checkpoint

    mine = {"spec_sha256": "a" * 64, "data_sha256": "b" * 64}
    toy.run(tmp_path, config={"epochs": 1}, run_id=mine)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["run_id"] == mine
    other = {"spec_sha256": "c" * 64, "data_sha256": "b" * 64}
    with pytest.raises(RuntimeError, match="belongs to another run") as err:
        toy.run(tmp_path, config={"epochs": 2}, run_id=other)
    assert "a" * 64 in str(err.value) and "c" * 64 in str(err.value)
