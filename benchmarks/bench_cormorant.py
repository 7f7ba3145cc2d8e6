"""Training speed of the reference Cormorant and of ours, side by side, on the same batches.

One training step = forward + backward + AMSGrad step on a batch of 25 QM9 molecules
(qm9-U0, the first ``--n-train`` molecules of the Cormorant split, fixed batches built
once), float32, the default (published) architecture unless ``--hparams`` is given. Codes:

- ``reference``: risilab/cormorant's ``CormorantQM9`` (commit 6a4b637, imported from
  ``--reference-src``; never copied into this repository) at its command-line defaults, MSE
  on the standardised target as its training script;
- ``ours``: ``cormorant/<variant>`` through ``model(batch)`` (the trainer's path: padding
  the graph batch, energies), MSE on the energy.

Both evaluate every atom pair of every molecule on the same padded layout (``B x A_max^2``
pairs, ``i = j`` included; ``pairs_padded``) of which ``pairs_real`` (``sum n_atoms^2``) are
pairs of real atoms: equal work. The codes and variants alternate round by round, so load
from other processes affects all alike; the time per batch is the median over the timed
steps (after ``--warmup`` steps per thread count). ``cpu_seconds_per_batch_median`` is the
process CPU time per step. ``speedup_vs_reference`` = the reference's median / ours at the
same thread count, from this run; ``speedup_vs_reference_cpu`` the same ratio of CPU times
(on a machine shared with other jobs the wall time includes waiting for a core; the CPU time
does not).

    python benchmarks/bench_cormorant.py --reference-src /path/to/cormorant/src
    python benchmarks/bench_cormorant.py --threads 1 --batches 2     # ours only

Output: ``results/benchmarks/cormorant_speed.csv`` (columns :data:`COLUMNS`).
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

COLUMNS = ("code", "variant", "threads", "device", "n_params", "batch_size", "steps",
           "seconds_per_batch_median", "seconds_per_batch_min", "cpu_seconds_per_batch_median",
           "molecules_per_second", "speedup_vs_reference", "speedup_vs_reference_cpu",
           "pairs_padded", "pairs_real",
           "mean_atoms", "load_average")
ELEMENTS = (1, 6, 7, 8, 9)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference-src", default=None,
                   help="directory holding the reference's 'cormorant' package (its src/); "
                        "without it only ours is timed")
    p.add_argument("--variants", nargs="+", default=["baseline", "fusion"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--batches", type=int, default=3, help="timed steps per round")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--hparams", default="{}", help="JSON hyperparameters of ours")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cache-dir", default="resources")
    p.add_argument("--out", default="results/benchmarks/cormorant_speed.csv")
    return p.parse_args(argv)


def reference_model(src: str, torch, device):
    sys.path.insert(0, str(Path(src).resolve()))
    from cormorant.models import CormorantQM9

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_cormorant_fixture import REFERENCE_ARGS

    torch.manual_seed(0)
    return CormorantQM9(**REFERENCE_ARGS, device=torch.device(device), dtype=torch.float32)


def to_reference(batch, torch):
    """Our graph batch -> the reference's padded batch (same molecules, same order)."""
    from fusion.models.cormorant import pad_batch

    pos, onehot, mask, _ = pad_batch(batch, batch["positions"])
    charges = (onehot * torch.tensor(ELEMENTS, dtype=onehot.dtype, device=onehot.device)).sum(-1)
    return {"positions": pos, "one_hot": onehot.bool(), "charges": charges.long(),
            "atom_mask": mask, "edge_mask": mask.unsqueeze(1) & mask.unsqueeze(2)}


def main(argv=None) -> int:
    import torch

    from fusion.data.graphs import GraphLoader
    from fusion.data.registry import get_dataset
    from fusion.experiment import model_stats
    from fusion.models.registry import build_model, count_parameters

    args = parse_args(argv)
    hparams = json.loads(args.hparams)
    torch.set_default_dtype(torch.float32)
    device = torch.device(args.device)
    structures, splits = get_dataset("qm9-U0", cache_dir=args.cache_dir, n_train=args.n_train,
                                     n_val=10, n_test=10)
    stats = model_stats(structures, splits["train"], 1.73)
    if tuple(stats.elements) != ELEMENTS:
        raise ValueError(f"expected QM9's elements {ELEMENTS}, got {stats.elements}")
    loader = GraphLoader(structures, splits["train"], args.batch_size, 1.73, stats.elements,
                         shuffle=True, seed=0)
    need = args.warmup + args.batches
    batches = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in b.items()}
               for b in list(loader)[:need]]
    if len(batches) < need:
        raise ValueError(f"--n-train {args.n_train} gives only {len(batches)} batches; need "
                         f"--warmup + --batches = {need}")
    counts = [(b["ptr"][1:] - b["ptr"][:-1]).tolist() for b in batches]
    pairs_padded = statistics.mean(len(c) * max(c) ** 2 for c in counts)
    pairs_real = statistics.mean(sum(n * n for n in c) for c in counts)
    mean_atoms = statistics.mean(sum(c) for c in counts)
    y_mean = statistics.mean(float(b["y"].mean()) for b in batches)
    y_std = max(statistics.mean(float(b["y"].std()) for b in batches), 1e-6)

    setups = {}  # (code, variant) -> (model, optimizer, n_params, step)
    if args.reference_src:
        ref = reference_model(args.reference_src, torch, args.device).train()
        ref_batches = [to_reference(b, torch) for b in batches]
        opt = torch.optim.Adam(ref.parameters(), lr=1e-3, amsgrad=True)

        def ref_step(i, model=ref, opt=opt):
            pred = model(ref_batches[i])
            loss = torch.nn.functional.mse_loss(pred, (batches[i]["y"] - y_mean) / y_std)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        setups[("reference", "CormorantQM9")] = (ref, count_parameters(ref), ref_step)
    for variant in args.variants:
        torch.manual_seed(0)
        model = build_model("cormorant", variant, hparams, stats).to(device).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)

        def step(i, model=model, opt=opt):
            out = model(batches[i], compute_forces=False)
            loss = torch.mean((out["energy"] - batches[i]["y"]) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        setups[("ours", variant)] = (model, count_parameters(model), step)
    for (code, variant), (_, n, _) in setups.items():
        print(f"{code} {variant}: {n:,} parameters", flush=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        times = {k: [] for k in setups}
        cpu = {k: [] for k in setups}
        for _, _, step in setups.values():
            for i in range(args.warmup):
                step(i)
        for _ in range(args.rounds):
            for key, (_, _, step) in setups.items():
                for i in range(args.warmup, need):
                    sync()
                    t0, c0 = time.perf_counter(), time.process_time()
                    step(i)
                    sync()
                    times[key].append(time.perf_counter() - t0)
                    cpu[key].append(time.process_time() - c0)
        ref_key = ("reference", "CormorantQM9")
        ref_med = statistics.median(times[ref_key]) if ref_key in times else None
        ref_cpu = statistics.median(cpu[ref_key]) if ref_key in cpu else None
        for key, (_, n, _) in setups.items():
            med = statistics.median(times[key])
            row = {
                "code": key[0], "variant": key[1], "threads": threads, "device": device.type,
                "n_params": n, "batch_size": args.batch_size, "steps": len(times[key]),
                "seconds_per_batch_median": round(med, 4),
                "seconds_per_batch_min": round(min(times[key]), 4),
                "cpu_seconds_per_batch_median": round(statistics.median(cpu[key]), 4),
                "molecules_per_second": round(args.batch_size / med, 2),
                "speedup_vs_reference": round(ref_med / med, 2) if ref_med else "",
                "speedup_vs_reference_cpu": (round(ref_cpu / statistics.median(cpu[key]), 2)
                                             if ref_cpu else ""),
                "pairs_padded": round(pairs_padded, 1), "pairs_real": round(pairs_real, 1),
                "mean_atoms": round(mean_atoms, 1),
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
