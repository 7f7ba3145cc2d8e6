"""Time QM9 preprocessing (all 130,831 molecules from qm9pack's CSVs) and cache loading.

Steps, each on a fresh cache in a temporary directory:

- ``preprocess``: parse qm9_part1-3.csv and write ``qm9/qm9.npz`` (:func:`preprocess_qm9`),
- ``load_cache``: read and check the cache (:func:`qm9_raw`),
- ``load_structures``: cache -> ``Structures`` for qm9-U0 with the Cormorant split,
- ``neighbour_lists``: radius graphs (r_max = 5 Å) of all molecules.

Writes ``results/benchmarks/qm9_preprocess.csv`` (columns: step, seconds, n_molecules,
machine) and prints it. Usage: ``python benchmarks/bench_qm9_preprocess.py [--out PATH]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from fusion.data.graphs import neighbour_lists
from fusion.data.qm9 import load_qm9, preprocess_qm9, qm9_raw


def machine() -> str:
    """Short machine description: hostname, CPU architecture, usable cores."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return f"{platform.node()} {platform.machine()} {cores} cores"


def run(out: Path) -> pd.DataFrame:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        raw = preprocess_qm9(cache_dir=tmp)
        rows.append(("preprocess", time.perf_counter() - t0, len(raw["n_atoms"])))

        t0 = time.perf_counter()
        raw = qm9_raw(cache_dir=tmp)
        rows.append(("load_cache", time.perf_counter() - t0, len(raw["n_atoms"])))

        t0 = time.perf_counter()
        structures, _ = load_qm9("U0", cache_dir=tmp)
        rows.append(("load_structures", time.perf_counter() - t0, len(structures)))

        t0 = time.perf_counter()
        neighbour_lists(structures, None, r_max=5.0)
        rows.append(("neighbour_lists", time.perf_counter() - t0, len(structures)))

    df = pd.DataFrame(rows, columns=["step", "seconds", "n_molecules"])
    df["seconds"] = df["seconds"].round(3)
    df["machine"] = machine()
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False)
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/qm9_preprocess.csv"))
    args = parser.parse_args()
    print(run(args.out).to_string(index=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
