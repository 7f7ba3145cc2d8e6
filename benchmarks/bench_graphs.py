"""Graph preprocessing cost and the data-loading share of a MACE training epoch with forces.

For each dataset (default: xtb-md-ethanol, xtb-md-aspirin; the caches are generated if
missing) this measures, with 1 torch thread:

- ``neighbours_s_per_1000``: :func:`fusion.data.graphs.neighbour_lists` for 1,000
  structures (the frames are cycled to reach 1,000), r_max 5 Å;
- ``loader_init_s_per_1000``: ``GraphLoader(...)`` construction for 1,000 structures
  (element indices + neighbour lists);
- ``collate_s_per_1000``: building every batch of an epoch over 1,000 structures;
- one training epoch of mace/baseline (demo hyperparameters: 32x0e, max_ell 2,
  correlation 3, 2 interactions, r_max 5; float32; energies + forces, batch 10) over
  ``--n-train`` structures: ``epoch_s`` total, ``data_s`` time spent getting batches
  from the loader and copying them (``to_device``), and ``data_share = data_s /
  epoch_s`` (target < 0.10).

Each timing is the median of ``--repeats`` runs. Writes ``results/benchmarks/graphs.csv``.

    python benchmarks/bench_graphs.py [--datasets xtb-md-ethanol xtb-md-aspirin]
    # the study's model on real rMD17 aspirin (split 1, 950 training frames):
    python benchmarks/bench_graphs.py --datasets rmd17-aspirin --n-train 950 \
        --hparams '{"num_channels": 16, "max_L": 1, "max_ell": 2, "correlation": 3,
                    "num_interactions": 2, "r_max": 5.0}' --out results/benchmarks/graphs_rmd17.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

DEMO_HPARAMS = {"num_channels": 32, "max_L": 0, "max_ell": 2, "correlation": 3,
                "num_interactions": 2, "r_max": 5.0}


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_dataset(key: str, cache_dir: str, n_train: int, batch_size: int,
                  repeats: int, hparams: dict | None = None) -> dict:
    import torch

    from fusion.data.graphs import GraphLoader, neighbour_lists
    from fusion.data.registry import get_dataset
    from fusion.experiment import model_stats
    from fusion.models.registry import build_model
    from fusion.train.losses import compute_loss
    from fusion.train.trainer import to_device

    structures, splits = get_dataset(key, cache_dir=cache_dir)
    hparams = dict(hparams or DEMO_HPARAMS)
    r_max = hparams["r_max"]
    elements = structures.elements()
    thousand = np.resize(np.arange(len(structures)), 1000)  # [1000] frames, cycled
    neighbours = _median_time(lambda: neighbour_lists(structures, thousand, r_max), repeats)
    loader_init = _median_time(
        lambda: GraphLoader(structures, thousand, batch_size, r_max, elements), repeats)
    loader = GraphLoader(structures, thousand, batch_size, r_max, elements, shuffle=True)
    collate = _median_time(lambda: [None for _ in loader], repeats)

    train_idx = np.resize(splits["train"], n_train)
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    stats = model_stats(structures, train_idx, r_max)
    model = build_model("mace", "baseline", hparams, stats)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
    train_loader = GraphLoader(structures, train_idx, batch_size, r_max, stats.elements,
                               shuffle=True, dtype=torch.float32)
    epochs = []
    for epoch in range(repeats):
        train_loader.set_epoch(epoch)
        data_s = 0.0
        t_epoch = time.perf_counter()
        iterator = iter(train_loader)
        while True:
            t0 = time.perf_counter()
            try:
                raw = next(iterator)
            except StopIteration:
                data_s += time.perf_counter() - t0
                break
            batch = to_device(raw, torch.device("cpu"), torch.float32)
            data_s += time.perf_counter() - t0
            optimizer.zero_grad(set_to_none=True)
            out = model(batch, compute_forces=True)
            loss, _ = compute_loss(out, batch, energy_weight=1.0, forces_weight=10.0)
            loss.backward()
            optimizer.step()
        epochs.append((time.perf_counter() - t_epoch, data_s))
    epoch_s, data_s = sorted(epochs)[len(epochs) // 2]
    return {
        "dataset": key,
        "n_atoms": int(structures.n_atoms[0]),
        "edges_per_structure": round(neighbour_lists(structures, thousand[:100], r_max).n_edges
                                     / 100, 1),
        "neighbours_s_per_1000": round(neighbours, 4),
        "loader_init_s_per_1000": round(loader_init, 4),
        "collate_s_per_1000": round(collate, 4),
        "n_train": n_train,
        "batch_size": batch_size,
        "model": "mace/baseline " + " ".join(f"{k}={v}" for k, v in sorted(hparams.items())),
        "epoch_s": round(epoch_s, 3),
        "data_s": round(data_s, 4),
        "data_share": round(data_s / epoch_s, 4),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["xtb-md-ethanol", "xtb-md-aspirin"])
    parser.add_argument("--cache-dir", default="resources")
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="results/benchmarks/graphs.csv")
    parser.add_argument("--hparams", type=json.loads, default=None,
                        help="MACE hyperparameters as JSON (default: the demo's)")
    args = parser.parse_args(argv)

    import torch

    import fusion  # noqa: F401  (imports mace before e3nn)

    torch.set_num_threads(1)
    rows = [bench_dataset(key, args.cache_dir, args.n_train, args.batch_size, args.repeats,
                          args.hparams) for key in args.datasets]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(", ".join(f"{k}={v}" for k, v in row.items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
