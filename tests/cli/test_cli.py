"""`fusion` command line: run specs, errors users can cause, and kill-and-resume of a real
MACE training run through the same command the workflow uses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fusion.cli import main
from fusion.experiment import RunSpec

BIN = Path(sys.executable).parent
TINY_MACE = {
    "num_channels": 8,
    "max_L": 0,
    "max_ell": 1,
    "correlation": 2,
    "num_interactions": 1,
    "radial_MLP": [8],
    "MLP_irreps": "4x0e",
}


@pytest.fixture(scope="module")
def qm9_cache(tmp_path_factory):
    """The real QM9 cache, built once for this module (about 5 s)."""
    cache = tmp_path_factory.mktemp("resources")
    assert main(["prepare", "qm9", "--cache-dir", str(cache)]) == 0
    return cache


def _spec(cache, out, epochs=4, **changes):
    spec = {
        "dataset": "qm9-U0",
        "model": "mace",
        "variant": "baseline",
        "seed": 0,
        "out_dir": str(out),
        "cache_dir": str(cache),
        "split": {"n_train": 48, "n_val": 16, "n_test": 16},
        "batch_size": 8,
        "eval_batch_size": 16,
        "hparams": TINY_MACE,
        "training": {"epochs": epochs, "lr": 0.01, "dtype": "float64", "progress": False},
        "threads": 1,
    }
    spec.update(changes)
    return json.dumps(spec)


def _fusion(*args, **kwargs):
    return subprocess.Popen(
        [str(BIN / "fusion"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def test_killed_training_resumes_to_the_same_metrics(qm9_cache, tmp_path):
    reference = tmp_path / "reference"
    assert main(["train", "--spec", _spec(qm9_cache, reference)]) == 0
    expected = json.loads((reference / "metrics.json").read_text())

    killed = tmp_path / "killed"
    proc = _fusion("train", "--spec", _spec(qm9_cache, killed))
    deadline = time.time() + 120
    while not (killed / "checkpoint.prev.pt").exists():  # two epochs are on disk
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.json").exists()

    assert main(["train", "--spec", _spec(qm9_cache, killed)]) == 0
    resumed = json.loads((killed / "metrics.json").read_text())
    for split in ("val", "test"):
        assert resumed[split] == expected[split]
    assert resumed["n_params"] == expected["n_params"]
    log = (killed / "log.csv").read_text().splitlines()
    assert len(log) == 1 + 4 and log[0].startswith("epoch,")


def test_changed_spec_does_not_resume_a_stale_checkpoint(qm9_cache, tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--spec", _spec(qm9_cache, out, epochs=1)]) == 0
    changed = _spec(qm9_cache, out, epochs=1, hparams={**TINY_MACE, "num_channels": 4})
    assert main(["train", "--spec", changed]) == 0
    stale = list(out.glob("stale-*/checkpoint.pt"))
    assert len(stale) == 1  # the old checkpoint is kept aside, not resumed, not deleted


def test_checkpoint_copied_from_another_run_is_set_aside_not_resumed(qm9_cache, tmp_path, capsys):
    """A qm9-U0 checkpoint copied into a qm9-homo run (no run_spec.json there): its run hashes
    differ, so it is moved to stale-*/ (bytes kept) and training starts afresh."""
    u0 = tmp_path / "u0"
    assert main(["train", "--spec", _spec(qm9_cache, u0, epochs=2)]) == 0
    homo = tmp_path / "homo"
    homo.mkdir()
    copied = (u0 / "checkpoint.pt").read_bytes()
    (homo / "checkpoint.pt").write_bytes(copied)
    capsys.readouterr()
    assert main(["train", "--spec", _spec(qm9_cache, homo, epochs=1, dataset="qm9-homo")]) == 0
    out = capsys.readouterr().out
    theirs = json.loads((u0 / "run_spec.json").read_text())
    assert theirs["dataset"] == "qm9-U0"
    notice = next(line for line in out.splitlines() if "not resuming" in line)
    assert "checkpoint.pt was made by run spec sha256 " in notice and "this run is spec " in notice
    hashes = re.findall(r"sha256 ([0-9a-f]{12})|spec ([0-9a-f]{12})|data ([0-9a-f]{12})", notice)
    assert len({h for group in hashes for h in group if h}) == 3  # two specs, one cache
    assert "resuming from" not in out
    stale = list(homo.glob("stale-*/checkpoint.pt"))
    assert len(stale) == 1 and stale[0].read_bytes() == copied  # set aside, not deleted
    assert len((homo / "log.csv").read_text().splitlines()) == 1 + 1  # trained afresh
    assert json.loads((homo / "metrics.json").read_text())["dataset"] == "qm9-homo"


def test_a_cutoff_with_no_neighbours_is_named_not_reported_as_divergence(qm9_cache, tmp_path,
                                                                         capsys):
    spec = _spec(qm9_cache, tmp_path / "run", hparams={**TINY_MACE, "r_max": 0.3})
    assert main(["train", "--spec", spec]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: r_max = 0.3 Å leaves every atom of the 48 training structures of "
                   "qm9-U0 without neighbours (no pair closer than r_max): the model would see "
                   "no geometry; raise hparams.r_max"]
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
from fusion.cli import main
sys.exit(main(["train", "--spec", sys.argv[1]]))
"""


def test_a_full_disk_during_training_is_one_error_line_naming_the_file(qm9_cache, tmp_path):
    """Files may not grow past 20 kB (as on a full disk): the first checkpoint cannot be
    written. One line names it, exit 1, no temporary file is left behind."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", LIMITED, _spec(qm9_cache, out, epochs=2)],
                          capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert err == [f"error: {out}/checkpoint.pt: File too large (errno 27)"], proc.stderr
    assert not list(out.glob(".*.tmp")) and not (out / "checkpoint.pt").exists()


def test_composition_baseline_beats_nothing_and_is_exact_least_squares(qm9_cache, tmp_path):
    out = tmp_path / "comp"
    spec = _spec(qm9_cache, out, model="composition", split={"n_train": 2000, "n_test": 500})
    assert main(["composition", "--spec", spec]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_params"] == 5  # H, C, N, O, F
    assert metrics["units"]["y"] == "meV"
    assert 500 < metrics["test"]["mae"] < 1500  # ~865 meV on the full split


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--spec", "{not json"], "run spec is not valid JSON"),
        (["train", "--spec", '{"dataset": "qm9-U0"}'], "missing required key 'model'"),
        (
            ["train", "--spec", '{"dataset": "qm9-U0", "modle": "mace"}'],
            "unknown key(s) ['modle']",
        ),
        (["params", "--model", "mace", "--variant", "fusoin"], "unknown variant 'fusoin'"),
        (["params", "--model", "mace", "--hparams", '{"num_chanels": 4}'], "num_chanels"),
        (["prepare", "qm7"], "unknown dataset 'qm7'"),
    ],
)
def test_user_errors_are_one_clear_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_unknown_qm9_target_lists_valid_targets(tmp_path, capsys):
    spec = _spec(tmp_path, tmp_path / "x", dataset="qm9-U7")
    assert main(["train", "--spec", spec]) == 2
    err = capsys.readouterr().err
    assert "qm9-U7" in err and "qm9-U0" in err


def test_params_prints_the_parameter_count(capsys):
    assert main(["params", "--model", "mace", "--hparams", json.dumps(TINY_MACE)]) == 0
    n = int(capsys.readouterr().out.strip())
    assert n > 100


def test_run_spec_round_trip():
    spec = RunSpec.from_json(_spec("resources", "out"))
    assert RunSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="key 'seed' should be int"):
        RunSpec.from_dict({**spec.to_dict(), "seed": "0"})


def test_corrupt_cache_is_one_error_line_naming_the_file(tmp_path, capsys):
    cache = tmp_path / "resources"
    (cache / "qm9").mkdir(parents=True)
    (cache / "qm9" / "qm9.npz").write_bytes(b"PK\x03\x04 not really a zip archive")
    spec = _spec(cache, tmp_path / "run")
    assert main(["train", "--spec", spec]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "qm9.npz" in err[0]
    assert not (tmp_path / "run" / "metrics.json").exists()
