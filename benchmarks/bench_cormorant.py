"""Training throughput of cormorant/baseline and cormorant/fusion on CPU (molecules/second).

One training step = forward + backward + AMSGrad step (the trainer's MSE on the energy) on a
batch of 25 QM9 molecules (qm9-U0, the first ``--n-train`` molecules of the Cormorant split,
graphs within the model's hard cutoff ``r_max``), float32, the default (published)
architecture unless ``--hparams`` is given. Batches are built once; only the steps are timed.
The variants alternate round by round so load from other processes affects both alike;
the reported time per batch is the median over all timed steps (after ``--warmup`` steps),
and the minimum is kept too. ``cpu_seconds_per_batch_median`` is the process CPU time per
step (``time.process_time``): on a machine shared with other jobs the wall time includes
waiting for a core, the CPU time does not (with 1 thread it is what the step takes on an idle
core; with 2 threads it is the sum over both).

The reference implementation needs about 11 s per batch of 25 molecules on this kind of
2-core machine at its default QM9 architecture (211,452 parameters; figure from issue 6,
not measured here): ``speedup_vs_reference = 11 s / our median seconds per batch``.

    python benchmarks/bench_cormorant.py                 # 1 and 2 threads, both variants
    python benchmarks/bench_cormorant.py --threads 1 --rounds 3

Output: ``results/benchmarks/cormorant_speed.csv`` with columns ``variant, threads,
n_params, batch_size, steps, seconds_per_batch_median, seconds_per_batch_min,
cpu_seconds_per_batch_median, molecules_per_second, molecules_per_cpu_second,
speedup_vs_reference, speedup_vs_reference_cpu, mean_atoms, mean_edges, load_average``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

import fusion  # noqa: F401  (torch loading flag before e3nn/mace)

REFERENCE_SECONDS_PER_BATCH = 11.0
COLUMNS = ("variant", "threads", "n_params", "batch_size", "steps", "seconds_per_batch_median",
           "seconds_per_batch_min", "cpu_seconds_per_batch_median", "molecules_per_second",
           "molecules_per_cpu_second", "speedup_vs_reference", "speedup_vs_reference_cpu",
           "mean_atoms", "mean_edges", "load_average")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", nargs="+", default=["baseline", "fusion"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--batches", type=int, default=3, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--hparams", default="{}", help="JSON hyperparameters (default: published)")
    p.add_argument("--cache-dir", default="resources")
    p.add_argument("--out", default="results/benchmarks/cormorant_speed.csv")
    return p.parse_args(argv)


def main(argv=None) -> int:
    import torch

    from fusion.data.graphs import GraphLoader
    from fusion.data.registry import get_dataset
    from fusion.experiment import model_stats
    from fusion.models.registry import build_model, count_parameters

    args = parse_args(argv)
    hparams = json.loads(args.hparams)
    torch.set_default_dtype(torch.float32)
    structures, splits = get_dataset("qm9-U0", cache_dir=args.cache_dir, n_train=args.n_train,
                                     n_val=10, n_test=10)
    r_max = float(hparams.get("r_max", 1.73))
    stats = model_stats(structures, splits["train"], r_max)
    loader = GraphLoader(structures, splits["train"], args.batch_size, r_max, stats.elements,
                         shuffle=True, seed=0)
    batches = list(loader)[: args.warmup + args.batches]
    if len(batches) < args.warmup + args.batches:
        raise ValueError(f"--n-train {args.n_train} gives only {len(batches)} batches; need "
                         f"--warmup + --batches = {args.warmup + args.batches}")
    mean_atoms = statistics.mean(b["positions"].shape[0] for b in batches)
    mean_edges = statistics.mean(b["edge_index"].shape[1] for b in batches)

    setups = {}
    for variant in args.variants:
        torch.manual_seed(0)
        model = build_model("cormorant", variant, hparams, stats).train()
        opt = torch.optim.Adam(model.parameters(), lr=5e-4, amsgrad=True)
        setups[variant] = (model, opt, count_parameters(model))
        print(f"cormorant/{variant}: {setups[variant][2]:,} parameters", flush=True)

    def step(model, opt, batch):
        out = model(batch, compute_forces=False)
        loss = torch.mean((out["energy"] - batch["y"]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        times = {v: [] for v in args.variants}
        cpu = {v: [] for v in args.variants}
        for v in args.variants:  # warm-up at this thread count
            model, opt, _ = setups[v]
            for b in batches[: args.warmup]:
                step(model, opt, b)
        for _ in range(args.rounds):
            for v in args.variants:
                model, opt, _ = setups[v]
                for b in batches[args.warmup :]:
                    t0, c0 = time.perf_counter(), time.process_time()
                    step(model, opt, b)
                    times[v].append(time.perf_counter() - t0)
                    cpu[v].append(time.process_time() - c0)
        for v in args.variants:
            med, best = statistics.median(times[v]), min(times[v])
            cpu_med = statistics.median(cpu[v])
            row = {
                "variant": v, "threads": threads, "n_params": setups[v][2],
                "batch_size": args.batch_size, "steps": len(times[v]),
                "seconds_per_batch_median": round(med, 4),
                "seconds_per_batch_min": round(best, 4),
                "cpu_seconds_per_batch_median": round(cpu_med, 4),
                "molecules_per_second": round(args.batch_size / med, 2),
                "molecules_per_cpu_second": round(args.batch_size / cpu_med, 2),
                "speedup_vs_reference": round(REFERENCE_SECONDS_PER_BATCH / med, 1),
                "speedup_vs_reference_cpu": round(REFERENCE_SECONDS_PER_BATCH / cpu_med, 1),
                "mean_atoms": round(mean_atoms, 1), "mean_edges": round(mean_edges, 1),
                "load_average": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            print(", ".join(f"{k}={row[k]}" for k in COLUMNS), flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
