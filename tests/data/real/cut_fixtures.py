"""Cut the small real-data fixtures of tests/data/real/ from the real benchmark files.

Run once, by hand, with a folder holding the real files (a clone of andersx/rmd17-npz and
davkovacs/BOTNet-datasets, or ``resources/downloads`` after ``fusion data import``):

    python tests/data/real/cut_fixtures.py resources/downloads

Each fixture keeps the real file's format and its first frames (the real values, not
rounded); ``SOURCES.json`` records for every fixture the real file it was cut from, that
file's sha256 (checked here against fusion.data.sources) and the frames kept.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
# rMD17 ethanol, all five pairs: 52 train frames (2 train + the last-50 validation rule) and
# 3 test frames per file.
RMD17 = {f"rmd17-npz/rmd17_ethanol_{kind}_0{k}.npz": (52 if kind == "train" else 3)
         for k in range(1, 6) for kind in ("train", "test")}
# acac: frames kept per file (isolated atoms: all).
ACAC = {"dataset_acac/train_300K.xyz": 12, "dataset_acac/test_MD_300K.xyz": 3,
        "dataset_acac/test_MD_600K.xyz": 3, "dataset_acac/test_H_transfer.xyz": 2,
        "dataset_acac/test_dihedral.xyz": 2, "dataset_acac/isolated_atoms.xyz": None}


def _xyz_frames(text: str, n: int | None) -> str:
    lines, out, i, kept = text.splitlines(), [], 0, 0
    while i < len(lines) and (n is None or kept < n):
        count = int(lines[i])
        out += lines[i:i + 2 + count]
        i += 2 + count
        kept += 1
    return "\n".join(out) + "\n"


def main(source: Path) -> None:
    sys.path.insert(0, str(HERE.parents[2]))
    from fusion.data.download import sha256_of
    from fusion.data.sources import PINNED

    record = {}
    for relpath, n in {**RMD17, **ACAC}.items():
        real = source / relpath
        sha = sha256_of(real)
        assert sha == PINNED[relpath].sha256, f"{real} is not the pinned file"
        target = HERE / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if relpath.endswith(".npz"):
            with np.load(real) as npz:
                arrays = {k: npz[k] if npz[k].ndim == 1 and k == "nuclear_charges"
                          else npz[k][:n] for k in npz.files}
            np.savez_compressed(target, **arrays)
        else:
            target.write_text(_xyz_frames(real.read_text(), n))
        record[relpath] = {"source_sha256": sha, "frames": "all" if n is None else f"first {n}"}
    (HERE / "SOURCES.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
