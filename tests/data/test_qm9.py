"""Tests for fusion.data.qm9 on fixture CSVs in the exact qm9pack format (conftest.py)."""

import ast
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fusion.data import qm9
from fusion.data.cache import CacheError, save_npz_atomic
from fusion.data.structures import take_splits

HA = qm9.HARTREE_TO_EV
FIXTURE_INDEX = [1, 2, 3, 4, 5, 184, 212]


def test_parse_values_exactly(qm9_dir):
    raw = qm9.parse_qm9_csvs(qm9_dir)
    np.testing.assert_array_equal(raw["index"], FIXTURE_INDEX)  # sorted across files
    np.testing.assert_array_equal(raw["n_atoms"], [5, 4, 3, 4, 3, 5, 13])
    off = np.concatenate([[0], np.cumsum(raw["n_atoms"])])
    np.testing.assert_array_equal(raw["z"][off[0]:off[1]], [6, 1, 1, 1, 1])  # CH4
    np.testing.assert_array_equal(raw["z"][off[2]:off[3]], [8, 1, 1])  # H2O
    np.testing.assert_array_equal(raw["z"][off[5]:off[6]], [9, 6, 9, 9, 9])  # CF4
    np.testing.assert_array_equal(raw["pos"][0], [-0.0126981359, 1.0858041578, 0.0080009958])
    np.testing.assert_array_equal(raw["pos"][off[3]:off[4]][:, 1:], [[0.0, 1.0]] * 4)  # "0.","1."
    np.testing.assert_array_equal(raw["pos"][off[6]], [2.1997e-6, 1.4462618059, 0.0098312216])
    cols = list(raw["target_columns"])
    assert raw["targets"][0, cols.index("InternalEnergy_0K_au")] == -40.47893
    assert raw["targets"][2, cols.index("HOMO_LUMO_gap_au")] == 0.3615
    assert raw["z"].shape == (raw["n_atoms"].sum(),) and raw["pos"].dtype == np.float64


def test_units_and_atomref(qm9_dir, cache_dir):
    s, _ = qm9.load_qm9("U0", cache_dir=cache_dir, data_dir=qm9_dir)
    ch4 = (-40.47893 - (-37.846772 + 4 * -0.500273)) * HA  # -0.631066 Ha
    assert s.y[0] == pytest.approx(ch4, abs=1e-12)
    assert s.y[0] == pytest.approx(-17.17218, abs=1e-5)
    assert s.meta["unit"] == "eV" and s.meta["report_unit"] == "meV"
    assert s.meta["report_factor"] == 1000.0 and s.meta["name"] == "qm9-U0"
    np.testing.assert_array_equal(s.meta["qm9_index"], FIXTURE_INDEX)
    g, _ = qm9.load_qm9("G", cache_dir=cache_dir, data_dir=qm9_dir)  # H2O, free energy
    assert g.y[2] == pytest.approx((-76.422349 - (-75.079532 + 2 * -0.510927)) * HA, abs=1e-12)
    gap, _ = qm9.load_qm9("gap", cache_dir=cache_dir, data_dir=qm9_dir)
    assert gap.y[2] == pytest.approx(0.3615 * HA, abs=1e-12)  # no atomref for gap
    for target, value in [("mu", 1.8511), ("alpha", 6.31), ("r2", 19.0002), ("Cv", 6.002)]:
        t, _ = qm9.load_qm9(target, cache_dir=cache_dir, data_dir=qm9_dir)
        assert t.y[2] == value and t.meta["report_factor"] == 1.0
    assert set(qm9.TARGETS) == {"mu", "alpha", "homo", "lumo", "gap", "r2", "zpve",
                                "U0", "U", "H", "G", "Cv"}


def test_unknown_target_lists_valid(qm9_dir, cache_dir):
    with pytest.raises(ValueError, match=r"unknown QM9 target 'U7'.*'U0'.*'Cv'"):
        qm9.load_qm9("U7", cache_dir=cache_dir, data_dir=qm9_dir)


def test_cache_written_once_and_reused(qm9_dir, cache_dir, tmp_path):
    s1, _ = qm9.load_qm9("U0", cache_dir=cache_dir, data_dir=qm9_dir)
    path = qm9.qm9_cache_path(cache_dir)
    assert path == Path(cache_dir) / "qm9" / "qm9.npz" and path.is_file()
    assert os.listdir(path.parent) == ["qm9.npz"]  # no temp files left behind
    mtime = path.stat().st_mtime_ns
    moved = tmp_path / "moved"
    shutil.move(qm9_dir, moved)  # source gone: the checked cache is used as is
    s2, _ = qm9.load_qm9("U0", cache_dir=cache_dir, data_dir=qm9_dir)
    assert path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(s1.pos, s2.pos)
    np.testing.assert_array_equal(s1.y, s2.y)


def _corrupt_truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_garbage(path: Path) -> None:
    path.write_bytes(b"not a zip file at all")


def _corrupt_version(path: Path) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "format_version"}
    save_npz_atomic(path, arrays, format_version=999)


def _corrupt_shape(path: Path) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "format_version"}
    arrays["pos"] = arrays["pos"][:-1]
    save_npz_atomic(path, arrays, format_version=qm9.CACHE_FORMAT_VERSION)


def _corrupt_missing_key(path: Path) -> None:
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files if k not in ("format_version", "z")}
    save_npz_atomic(path, arrays, format_version=qm9.CACHE_FORMAT_VERSION)


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (_corrupt_truncate, "cannot read it"),
        (_corrupt_garbage, "cannot read it"),
        (_corrupt_version, "format_version is 999"),
        (_corrupt_shape, "'pos' has shape"),
        (_corrupt_missing_key, "missing arrays"),
    ],
)
def test_corrupt_cache_raises_naming_file(qm9_dir, cache_dir, corrupt, reason):
    qm9.load_qm9("U0", cache_dir=cache_dir, data_dir=qm9_dir)
    path = qm9.qm9_cache_path(cache_dir)
    corrupt(path)
    size = path.stat().st_size
    with pytest.raises(CacheError, match=reason) as info:
        qm9.load_qm9("U0", cache_dir=cache_dir, data_dir=qm9_dir)
    assert str(path) in str(info.value) and "Delete this file" in str(info.value)
    assert path.stat().st_size == size  # never silently rebuilt


def test_cache_from_other_source_raises(qm9_dir, cache_dir):
    qm9.load_qm9("U0", cache_dir=cache_dir, data_dir=qm9_dir)
    part = qm9_dir / "qm9_part1.csv"
    part.write_text(part.read_text() + part.read_text().splitlines()[1] + "\n")
    with pytest.raises(CacheError, match="other source files"):
        qm9.load_qm9("U0", cache_dir=cache_dir, data_dir=qm9_dir)


def test_malformed_csv_names_file(qm9_dir):
    part = qm9_dir / "qm9_part2.csv"
    text = part.read_text().replace("\"['O','H','H']\"", "\"['O','H']\"")
    part.write_text(text)
    with pytest.raises(ValueError, match=r"qm9_part2\.csv: row 2 \(Index 3\) lists 2 elements"):
        qm9.parse_qm9_csvs(qm9_dir)
    part.write_text(text.replace("XYZ_Ang", "XYZ"))
    with pytest.raises(ValueError, match=r"qm9_part2\.csv: missing QM9 columns \['XYZ_Ang'\]"):
        qm9.parse_qm9_csvs(qm9_dir)
    (qm9_dir / "qm9_part3.csv").unlink()
    with pytest.raises(FileNotFoundError, match="qm9_part3.csv"):
        qm9.parse_qm9_csvs(qm9_dir)


def test_cormorant_split_full_size():
    n = qm9.QM9_N_MOLECULES
    sp = qm9.cormorant_split(n)
    assert {k: len(v) for k, v in sp.items()} == {"train": 100_000, "val": 17_748,
                                                   "test": 13_083}
    perm = np.random.RandomState(0).permutation(n)
    np.testing.assert_array_equal(sp["train"], perm[:100_000])
    np.testing.assert_array_equal(sp["val"], perm[100_000:117_748])
    np.testing.assert_array_equal(sp["test"], perm[117_748:])
    allidx = np.concatenate(list(sp.values()))
    assert np.unique(allidx).shape[0] == n and allidx.min() == 0 and allidx.max() == n - 1
    sub = take_splits(sp, n_train=1000, n_test=50)
    np.testing.assert_array_equal(sub["train"], perm[:1000])
    assert len(sub["val"]) == 17_748 and len(sub["test"]) == 50
    with pytest.raises(ValueError, match="n_train = 100001 but the train split has 100000"):
        take_splits(sp, n_train=100_001)


def test_load_qm9_splits_on_fixture(qm9_dir, cache_dir):
    s, sp = qm9.load_qm9("U0", cache_dir=cache_dir, data_dir=qm9_dir, n_train=3)
    # 7 molecules: n_test = int(0.7) = 0, n_train = min(100000, int(5.6)) = 5, n_val = 2
    full = qm9.cormorant_split(7)
    assert {k: len(v) for k, v in full.items()} == {"train": 5, "val": 2, "test": 0}
    np.testing.assert_array_equal(sp["train"], full["train"][:3])
    np.testing.assert_array_equal(sp["val"], full["val"])
    assert len(s) == 7 and len(set(sp["train"]) | set(sp["val"])) == 5


def _real_data_dir():
    try:
        d = qm9.qm9pack_data_dir()
    except FileNotFoundError:
        return None
    return d if all((d / f).is_file() for f in qm9.QM9_CSV_FILES) else None


@pytest.mark.skipif(_real_data_dir() is None, reason="qm9pack wheel not installed")
def test_real_wheel_count_and_format(tmp_path):
    """Sanity check on the real files: 130,831 data rows; the first 400 rows of part 1
    parse identically with the vectorised parser and with literal_eval."""
    d = _real_data_dir()
    rows = 0
    for name in qm9.QM9_CSV_FILES:
        with open(d / name, "rb") as fh:
            rows += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 24), b"")) - 1
    assert rows == qm9.QM9_N_MOLECULES
    with open(d / "qm9_part1.csv") as fh:
        lines = [next(fh) for _ in range(401)]
    small = tmp_path / "small"
    small.mkdir()
    (small / "qm9_part1.csv").write_text("".join(lines))
    for name in qm9.QM9_CSV_FILES[1:]:
        (small / name).write_text(lines[0])
    raw = qm9.parse_qm9_csvs(small)
    import pandas as pd

    df = pd.read_csv(small / "qm9_part1.csv")
    ref_pos = np.concatenate([np.array(ast.literal_eval(x), dtype=float) for x in df.XYZ_Ang])
    symbols = [s for x in df.Elements for s in ast.literal_eval(x)]
    z_of = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}
    np.testing.assert_array_equal(raw["pos"], ref_pos)
    np.testing.assert_array_equal(raw["z"], [z_of[s] for s in symbols])
    np.testing.assert_array_equal(raw["index"], df.Index.to_numpy())
