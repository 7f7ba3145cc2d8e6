"""Data files a hostile but fair user may hand over (issue 19): extxyz column counts that do
not match the data, impossible or non-integer atomic numbers, bytes that are not text, and
cache writes that fail or are killed. Every refusal names the file (and archive member,
frame, line); no temporary file is left behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest

from fusion.data import forcefields as ff
from fusion.data.cache import save_npz_atomic
from fusion.data.extxyz import FrameError, read_extxyz
from fusion.data.structures import Structures

ROW = "{z} 0.0 0.0 {x:.1f} 0.1 0.2 0.3\n"


def _xyz(tmp_path, props="species:S:1:pos:R:3:forces:R:3", species=("C", "H")):
    text = f"{len(species)}\nenergy=-1.5 Properties={props}\n"
    text += "".join(ROW.format(z=z, x=float(k)) for k, z in enumerate(species))
    path = tmp_path / "bad.xyz"
    path.write_text(text * 2)
    return path


def test_properties_whose_column_counts_do_not_match_are_refused(tmp_path):
    assert read_extxyz(_xyz(tmp_path)).z.tolist() == [6, 1, 6, 1]  # the control reads
    # 1 + 2 + 4 = 7 columns, as many as the data has: read before, with shifted columns
    path = _xyz(tmp_path, props="species:S:1:pos:R:2:forces:R:4")
    with pytest.raises(FrameError) as err:
        read_extxyz(path)
    assert str(err.value) == (
        f"{path}: frame 0 (line 1): Properties='species:S:1:pos:R:2:forces:R:4': 'pos' is "
        "R:2, expected R:3")
    path = _xyz(tmp_path, props="species:S:1:pos:S:3:forces:R:3")
    with pytest.raises(FrameError, match="'pos' is S:3, expected R:3"):
        read_extxyz(path)


@pytest.mark.parametrize(("species", "message"), [
    (("C", "200"), "frame 0 (line 4): atomic number 200 of atom 1; expected 1..118"),
    (("0", "H"), "frame 0 (line 3): atomic number 0 of atom 0; expected 1..118"),
    (("6.7", "H"), "frame 0 (line 1): unknown element symbol '6.7'"),
])
def test_extxyz_atomic_numbers_are_range_checked(tmp_path, species, message):
    path = _xyz(tmp_path, species=species)
    with pytest.raises(FrameError) as err:
        read_extxyz(path)
    assert str(err.value) == f"{path}: {message}"


@pytest.mark.parametrize(("z", "message"), [
    ([6.7, 1.0, 1.0], "rmd17_x.npz: 'nuclear_charges'[0] = 6.7 is not an atomic number "
                      "(a whole number 1..118)"),
    ([6, 200, 1], "rmd17_x.npz: 'nuclear_charges'[1] = 200; expected an atomic number 1..118"),
])
def test_npz_atomic_numbers_are_neither_truncated_nor_out_of_range(z, message):
    keys = {"z": "nuclear_charges", "pos": "coords", "energy": "energies", "forces": "forces"}
    arrays = {"nuclear_charges": np.array(z), "coords": np.zeros((2, 3, 3)),
              "energies": np.zeros(2), "forces": np.zeros((2, 3, 3))}
    with pytest.raises(ValueError) as err:
        ff.frames_from_npz(arrays, "rmd17_x.npz", keys, 1.0, 1.0)
    assert str(err.value) == message


@pytest.mark.parametrize(("z", "message"), [
    ([6.7, 1.0], "Structures.z[0] = 6.7 is not an atomic number (a whole number 1..118)"),
    ([6, 119], "Structures.z[1] = 119; expected an atomic number 1..118"),
    ([6.0, 1.0], None),
])
def test_structures_check_atomic_numbers(z, message):
    def make():
        return Structures(z=np.array(z), pos=np.zeros((2, 3)), n_atoms=np.array([2]),
                          y=np.zeros(1))

    if message is None:
        assert make().z.tolist() == [6, 1]
        return
    with pytest.raises(ValueError) as err:
        make()
    assert str(err.value) == message


def test_bytes_that_are_not_text_name_the_file_and_the_archive_member(tmp_path):
    path = tmp_path / "train.xyz"
    path.write_bytes(b"3\nenergy=1 \xff\xfe garbage\n")
    with pytest.raises(FrameError) as err:
        read_extxyz(path)
    assert str(err.value) == (f"{path}: not UTF-8 text (byte 11: invalid start byte); a binary "
                              "or corrupt file where extxyz text was expected")
    source = "dataset_3BPA.tar.gz:test_1200K.xyz"
    with pytest.raises(ValueError) as err:
        ff._frames_of_xyz(b"\x89PNG\r\n\x1a\n\x00", source)
    assert str(err.value).startswith(f"{source}: not UTF-8 text (byte 0: invalid start byte)")


# ------------------------------------------------------------------ cache writes


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(tmp_path):
    target = tmp_path / "qm9" / "qm9.npz"
    target.parent.mkdir()
    host = socket.gethostname()
    dead = target.parent / f".qm9.npz.{host}.{_dead_pid()}.abc123.tmp"
    dead.write_bytes(b"\0" * 100_000)  # what a SIGKILL mid-write leaves
    alive = target.parent / f".qm9.npz.{host}.{os.getppid()}.def456.tmp"
    alive.write_bytes(b"\0")  # a writer still running: not ours to remove
    other = target.parent / f".qm9.npz.elsewhere.{_dead_pid()}.ghi789.tmp"
    other.write_bytes(b"\0")  # another host's writer: its pid means nothing here
    save_npz_atomic(target, {"a": np.arange(3)}, 1)
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(
        [alive.name, other.name, "qm9.npz"])


FAILING = """
import resource, signal, sys
import numpy as np
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))  # as a disk that fills up
from fusion.data.cache import save_npz_atomic
try:
    save_npz_atomic(sys.argv[1], {"big": np.zeros(100_000)}, 1)
except OSError as err:
    print(err.errno, err.filename)
"""

TERMINATED = """
import sys, time
import numpy as np
import fusion.data.cache as cache
from fusion.cli import main

def slow(fh, **arrays):  # half the cache is on disk when the job is stopped
    fh.write(b"\\0" * 100_000)
    fh.flush()
    print("writing", flush=True)
    time.sleep(600)

cache.np.savez = slow
sys.exit(main(["prepare", "qm9", "--cache-dir", sys.argv[1]]))
"""


def test_a_failed_cache_write_names_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "x" / "x.npz"
    proc = subprocess.run([sys.executable, "-c", FAILING, str(target)], capture_output=True,
                          text=True)
    assert proc.stdout.split() == ["27", str(target)], proc.stderr
    assert list(target.parent.iterdir()) == []


def test_a_cache_write_stopped_by_sigterm_leaves_no_temporary(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", TERMINATED, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "writing\n", proc.stderr.read()
    temporaries = list(tmp_path.rglob(".*.tmp"))
    assert len(temporaries) == 1 and temporaries[0].stat().st_size >= 100_000
    proc.send_signal(signal.SIGTERM)
    assert proc.wait() == 128 + signal.SIGTERM
    assert list(tmp_path.rglob(".*.tmp")) == []
    assert not list(tmp_path.rglob("*.npz"))  # nothing half-written under the real name
