"""Seconds per labelled stilbene frame (S0 + S1 energies and analytic forces, pyscf TDA).

Times :func:`fusion.data.stilbene.excited_state_labels` on the first ``--frames`` frames of the
``stilbene-tddft`` schedule (frame 0 cis, 1 trans, then 90°, 45°, ...; 300 K displacements)
with pyscf on ``--threads`` threads, for each ``--methods`` x ``--bases`` pair, and reports how
many frames fit in ``--budget`` seconds (default 180 s) at the median time per frame.

    python benchmarks/bench_stilbene_generation.py                   # hf/sto-3g, 2 frames
    python benchmarks/bench_stilbene_generation.py --methods hf b3lyp --bases sto-3g 3-21g

Writes ``results/benchmarks/stilbene_generation.csv`` (one row per frame, with the summary
columns repeated per (method, basis)).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["hf"])
    parser.add_argument("--bases", nargs="+", default=["sto-3g"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=180.0, help="seconds")
    parser.add_argument("--out", default="results/benchmarks/stilbene_generation.csv")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    from pyscf import gto, lib

    from fusion.data.stilbene import (
        STILBENE_SMILES,
        STILBENE_TORSION_SMARTS,
        TorsionGeometryBuilder,
        excited_state_labels,
        frame_torsion_target,
    )

    lib.num_threads(args.threads)
    builder = TorsionGeometryBuilder(STILBENE_SMILES, STILBENE_TORSION_SMARTS, seed=0)
    frames = [builder.frame(i, 0, 300.0) for i in range(args.frames)]
    rows = []
    for method in args.methods:
        for basis in args.bases:
            nao = gto.M(atom=[(int(z), tuple(p)) for z, p in zip(builder.z, frames[0])],
                        basis=basis, verbose=0).nao
            times = []
            for i, pos in enumerate(frames):
                started = time.perf_counter()
                energies, _ = excited_state_labels(builder.z, pos, basis, method)
                seconds = time.perf_counter() - started
                times.append(seconds)
                print(f"{method}/{basis} frame {i} (torsion {frame_torsion_target(i):.0f} deg): "
                      f"{seconds:.1f} s, S1-S0 {energies[1] - energies[0]:.3f} eV", flush=True)
                rows.append({"method": method, "basis": basis, "n_atoms": len(builder.z),
                             "nao": nao, "threads": args.threads, "frame": i,
                             "torsion_target_deg": frame_torsion_target(i),
                             "seconds": round(seconds, 3),
                             "gap_ev": round(float(energies[1] - energies[0]), 4)})
            median = statistics.median(times)
            for row in rows[-len(frames):]:
                row["median_seconds_per_frame"] = round(median, 3)
                row["frames_in_budget"] = int(args.budget // median)
                row["budget_seconds"] = args.budget
            print(f"{method}/{basis}: median {median:.1f} s/frame -> "
                  f"{int(args.budget // median)} frames in {args.budget:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) + ["host"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "host": platform.node()})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
