"""Seconds per surface-hopping step of stilbene (26 atoms) with a two-state MACE.

Builds ``mace/<variant>`` with the demo hyperparameters (config/demo.yaml: 32x0e, l <= 2,
correlation 3, 2 interactions, r_max 5 Å) plus ``n_states: 2`` (untrained weights: the cost
does not depend on them), wraps it in :class:`fusion.dynamics.calculator.FusionCalculator`
and times :func:`fusion.dynamics.hopping.run_trajectory` (velocity Verlet + gap tracking, one
model evaluation with both states' forces per step) from the cis Franck–Condon geometry,
after one warm-up step, on ``--threads`` torch threads. Reports how many trajectory steps
fit in ``--budget`` seconds (default 180 s).

    OMP_NUM_THREADS=1 python benchmarks/bench_dynamics_step.py
    python benchmarks/bench_dynamics_step.py --variants baseline --dtypes float32 float64

Writes ``results/benchmarks/dynamics_step.csv`` (one row per variant x dtype).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

DEMO_MACE = {"num_channels": 32, "max_L": 0, "max_ell": 2, "correlation": 3,
             "num_interactions": 2, "r_max": 5.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["baseline", "fusion"])
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget", type=float, default=180.0, help="seconds")
    parser.add_argument("--out", default="results/benchmarks/dynamics_step.csv")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import numpy as np
    import torch

    from fusion.dynamics.calculator import FusionCalculator
    from fusion.dynamics.hopping import (
        ase_surfaces,
        franck_condon_sample,
        run_trajectory,
        stilbene_starts,
    )
    from fusion.models.registry import ModelStats, build_model, count_parameters

    torch.set_num_threads(args.threads)
    starts, torsion_atoms = stilbene_starts(0)
    atoms = starts["cis"]
    masses = atoms.get_masses()
    stats = ModelStats(elements=(1, 6), atomic_energies=np.array([-13.6, -1030.0]),
                       avg_num_neighbors=12.0, scale=1.0)
    rows = []
    for variant in args.variants:
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            old = torch.get_default_dtype()
            torch.set_default_dtype(dtype)
            try:
                torch.manual_seed(0)
                module = build_model("mace", variant, {**DEMO_MACE, "n_states": 2}, stats)
            finally:
                torch.set_default_dtype(old)
            calc = FusionCalculator(module, stats.elements, DEMO_MACE["r_max"], dtype=dtype)
            surfaces = ase_surfaces(calc, atoms)
            rng = np.random.default_rng([0, 0, 0])
            x0, v0 = franck_condon_sample(atoms.positions, masses, 300.0, rng)
            run_trajectory(surfaces, x0, v0, masses, 1, 1, 0.5, rng=rng)  # warm-up
            started = time.perf_counter()
            run_trajectory(surfaces, x0, v0, masses, 1, args.steps, 0.5, rng=rng,
                           torsion_atoms=torsion_atoms)
            seconds = (time.perf_counter() - started) / args.steps
            row = {"model": "mace", "variant": variant, "n_states": 2, "dtype": dtype_name,
                   "n_params": count_parameters(module), "n_atoms": len(atoms),
                   "threads": args.threads, "steps_timed": args.steps,
                   "seconds_per_step": round(seconds, 5),
                   "steps_in_budget": int(args.budget // seconds), "budget_s": args.budget,
                   "cpu": platform.processor() or platform.machine(),
                   "torch": torch.__version__}
            rows.append(row)
            print(f"mace/{variant} {dtype_name} ({row['n_params']:,} params): "
                  f"{seconds * 1000:.1f} ms/step, {row['steps_in_budget']} steps in "
                  f"{args.budget:.0f} s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
