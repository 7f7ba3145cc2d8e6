"""GFN2-xTB feature generation cost (and optionally UNiTE training seconds per epoch).

Features: the first ``--n-molecules`` molecules of Cormorant's QM9 training split, one
thread; times the tblite single point alone and the whole feature pipeline
(:func:`fusion.data.xtb_features.molecule_features`: xTB + basis change + CG
decomposition + sparsification), and reports seconds per 1,000 molecules, mean atoms and
mean kept atom pairs.

Training (``--train``): one epoch of ``unite/<variant>`` through the trainer on
``qm9xtb-demo-U0`` (the cache must exist: ``fusion prepare qm9xtb-demo``), float32, one
thread, ``--n-train`` molecules, validation on 200.

Writes (appends rows to) ``results/benchmarks/xtb_features.csv``::

    python benchmarks/bench_xtb_features.py --n-molecules 200
    python benchmarks/bench_xtb_features.py --skip-features --train --n-train 1000 \\
        --channels 8
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_avg() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def bench_features(cache_dir: str, n_molecules: int, threshold: float) -> list[dict]:
    from fusion.data import qm9
    from fusion.data import xtb_features as xf

    raw = qm9.qm9_raw(cache_dir)
    rows = qm9.cormorant_split(raw["n_atoms"].shape[0])["train"][:n_molecules]
    offsets = np.concatenate([[0], np.cumsum(raw["n_atoms"])])
    mols = [(raw["z"][offsets[r]:offsets[r + 1]], raw["pos"][offsets[r]:offsets[r + 1]])
            for r in rows]
    xf.run_xtb(*mols[0])  # warm-up: library load, element tables
    xf.molecule_features(*mols[0], lmax=1, threshold=threshold)
    load_before = load_avg()
    t0 = time.perf_counter()
    for z, pos in mols:
        xf.run_xtb(z, pos)
    t_xtb = time.perf_counter() - t0
    t0 = time.perf_counter()
    edges = []
    for z, pos in mols:
        edges.append(xf.molecule_features(z, pos, lmax=1, threshold=threshold).edge.shape[0])
    t_all = time.perf_counter() - t0
    n_atoms = np.array([len(z) for z, _ in mols])
    common = {"n_molecules": len(mols), "mean_atoms": float(n_atoms.mean()),
              "mean_pairs_kept": float(np.mean(edges)),
              "mean_pairs_total": float(np.mean(n_atoms * (n_atoms - 1) / 2)),
              "threshold": threshold, "threads": 1, "load_avg_before": load_before,
              "load_avg_after": load_avg()}
    return [
        {"measure": "xtb_singlepoint", "seconds": t_xtb,
         "seconds_per_1000": t_xtb / len(mols) * 1000, **common},
        {"measure": "features_total", "seconds": t_all,
         "seconds_per_1000": t_all / len(mols) * 1000, **common},
    ]


def bench_train(cache_dir: str, variant: str, n_train: int, batch_size: int,
                channels: int) -> dict:
    import torch

    from fusion.data.registry import get_dataset
    from fusion.experiment import model_stats
    from fusion.models.registry import build_model, count_parameters
    from fusion.train.trainer import train

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    structures, splits = get_dataset("qm9xtb-demo-U0", cache_dir, n_train=n_train, n_val=200,
                                     n_test=200)
    stats = model_stats(structures, splits["train"], 5.0)
    model = build_model("unite", variant, {"num_channels": channels}, stats)
    make = structures.meta["make_loader"]

    def loader(split, shuffle, bs):
        return make(structures, splits[split], batch_size=bs, elements=stats.elements,
                    shuffle=shuffle, seed=0, dtype=torch.float32)

    load_before = load_avg()
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train(model, loader("train", True, batch_size), loader("val", False, 128),
                        loader("test", False, 128),
                        {"epochs": 1, "lr": 0.005, "forces_weight": 0.0, "progress": False,
                         "dtype": "float32", "threads": 1}, tmp, log=lambda s: None)
    return {"measure": f"train_epoch_unite_{variant}", "seconds":
            metrics["train"]["seconds_per_epoch"], "n_molecules": n_train,
            "batch_size": batch_size, "num_channels": channels,
            "n_params": count_parameters(model), "threads": 1,
            "load_avg_before": load_before, "load_avg_after": load_avg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", default="resources")
    parser.add_argument("--n-molecules", type=int, default=200)
    parser.add_argument("--threshold", type=float, default=1e-5)
    parser.add_argument("--skip-features", action="store_true")
    parser.add_argument("--train", action="store_true")
    parser.add_argument("--variant", default="baseline")
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--out", default=str(ROOT / "results/benchmarks/xtb_features.csv"))
    args = parser.parse_args()
    rows = []
    if not args.skip_features:
        rows += bench_features(args.cache_dir, args.n_molecules, args.threshold)
    if args.train:
        rows.append(bench_train(args.cache_dir, args.variant, args.n_train, args.batch_size,
                                args.channels))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    for row in rows:
        row.update({"date": stamp, "host_cpu": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count()})
    new = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pd.concat([pd.read_csv(out), new], ignore_index=True) if out.exists() else new
    table.to_csv(out, index=False)
    print(new.to_string(index=False))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
