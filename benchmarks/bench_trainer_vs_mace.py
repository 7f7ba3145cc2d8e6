"""Training throughput of our trainer vs mace-torch's ``mace_run_train``, side by side.

Same data (QM9 U0, the first ``--n-train`` molecules of the Cormorant split), same model
(demo size: 32x0e hidden features, l <= 2, correlation 3, 2 interactions) and the same
training settings, translated by :func:`fusion.crosscheck.mace_run_train_args`. The two
trainers alternate (ours, theirs, ours, theirs, ...) so that load from other processes on
the machine affects both alike. Throughput = structures trained per epoch x epochs /
training wall time (epochs with their validation and checkpointing; data preparation,
model building and the final evaluation excluded, for both).

Three more rows (``step:...``) time single training steps on the same batches, alternating:
our step (energy only, what our trainer does on QM9), mace-torch's ``take_step`` as
``mace_run_train`` runs it (energy + forces with ``create_graph``: it cannot switch forces
off, even with ``--forces_weight 0``), and the same ``take_step`` without forces. They show
how much of the difference is the forces rather than the trainers.

    python benchmarks/bench_trainer_vs_mace.py            # writes the CSV below
    python benchmarks/bench_trainer_vs_mace.py --profile  # plus a torch.profiler table

Output: ``results/benchmarks/trainer_vs_mace.csv`` with columns ``trainer, epochs,
n_train, seconds, structures_per_second, test_mae_meV``.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import fusion  # noqa: E402, F401  (torch loading flag before e3nn/mace)

COLUMNS = ("trainer", "epochs", "n_train", "seconds", "structures_per_second", "test_mae_meV")
HPARAMS = {"num_channels": 32, "max_L": 0, "max_ell": 2, "correlation": 3,
           "num_interactions": 2, "r_max": 5.0}


def make_spec(args, out_dir: Path) -> dict:
    return {
        "dataset": "qm9-U0", "model": "mace", "variant": "baseline", "seed": args.seed,
        "out_dir": str(out_dir), "cache_dir": args.cache_dir,
        "split": {"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test},
        "batch_size": args.batch_size, "eval_batch_size": 100, "threads": args.threads,
        "hparams": dict(HPARAMS),
        "training": {"epochs": args.epochs, "lr": 0.01, "optimizer": "amsgrad",
                     "scheduler": "plateau", "ema": True, "ema_decay": 0.99,
                     "grad_clip": 10.0, "dtype": "float32", "device": "cpu",
                     "progress": False},
    }


def run_ours(spec: dict) -> dict:
    from fusion.experiment import RunSpec, run_training

    metrics = run_training(RunSpec.from_dict(spec), log=lambda line: None)
    train = metrics["train"]
    seconds = train["seconds_per_epoch"] * train["epochs"]
    n = train["n_structures"]
    return {"trainer": "fusion", "epochs": train["epochs"], "n_train": n, "seconds": seconds,
            "structures_per_second": n * train["epochs"] / seconds,
            "test_mae_meV": metrics["test"]["mae"]}


def run_theirs(spec: dict, workdir: Path) -> dict:
    from fusion.crosscheck import run_crosscheck

    out_file = workdir / "crosscheck.log"
    workdir.mkdir(parents=True, exist_ok=True)
    with open(out_file, "w", encoding="utf-8") as f:
        result = run_crosscheck(spec, workdir, log=lambda line: f.write(line + "\n"))
    t = result["theirs"]
    return {"trainer": "mace_run_train", "epochs": t["epochs"],
            "n_train": t["structures_per_epoch"], "seconds": t["train_seconds"],
            "structures_per_second": t["structures_per_second"],
            "test_mae_meV": t["test_mae_meV"]}


def model_steps(spec: dict, n_steps: int) -> list[dict]:
    """Time single training steps on the same 32-molecule batches, alternating between:

    - ``step:fusion energy``: our trainer's step (to_device, forward without forces,
      MSE loss, backward, clipping, AMSGrad, EMA),
    - ``step:mace_run_train energy+forces``: mace-torch's ``take_step`` as
      ``mace_run_train`` runs it on energy-only data (forces with ``create_graph``,
      ``WeightedEnergyForcesLoss(1, 0)``, torch-ema),
    - ``step:mace take_step energy-only``: the same ``take_step`` without forces (possible
      through mace-torch's Python API, not through ``mace_run_train``),

    so the trainers' own overhead and the cost of the forces can be told apart.
    """
    import copy

    import torch
    from mace import data as mace_data
    from mace.modules.loss import WeightedEnergyForcesLoss, weighted_mean_squared_error_energy
    from mace.tools import AtomicNumberTable, torch_geometric
    from mace.tools.train import take_step
    from torch_ema import ExponentialMovingAverage

    from fusion.crosscheck import ENERGY_KEY, structures_to_atoms
    from fusion.data.graphs import GraphLoader
    from fusion.experiment import RunSpec, _load_split, model_stats
    from fusion.models.registry import build_model
    from fusion.train.losses import compute_loss
    from fusion.train.trainer import EMA, to_device

    class EnergyLoss(torch.nn.Module):
        def forward(self, ref, pred, ddp=None):
            return weighted_mean_squared_error_energy(ref, pred, ddp)

    rs = RunSpec.from_dict(spec)
    r_max = HPARAMS["r_max"]
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_num_threads(rs.threads)
    torch.set_default_dtype(torch.float32)
    try:
        structures, splits = _load_split(rs)
        stats = model_stats(structures, splits["train"], r_max)
        idx = splits["train"]
        ours = list(GraphLoader(structures, idx, rs.batch_size, r_max, stats.elements,
                                drop_last=True))
        keys = mace_data.KeySpecification(info_keys={"energy": ENERGY_KEY}, arrays_keys={})
        configs = mace_data.config_from_atoms_list(
            structures_to_atoms(structures, idx), key_specification=keys, head_name="Default")
        table = AtomicNumberTable(list(stats.elements))
        dataset = [mace_data.AtomicData.from_config(c, z_table=table, cutoff=r_max,
                                                    heads=["Default"]) for c in configs]
        theirs = list(torch_geometric.dataloader.DataLoader(dataset, batch_size=rs.batch_size,
                                                            shuffle=False, drop_last=True))
        torch.manual_seed(0)
        base = build_model("mace", "baseline", rs.hparams, stats)
        device = torch.device("cpu")

        def fusion_step():
            model = copy.deepcopy(base)
            params = list(model.parameters())
            opt = torch.optim.Adam(params, lr=0.01, amsgrad=True)
            ema = EMA(params, 0.99)

            def step(i):
                batch = to_device(ours[i % len(ours)], device, torch.float32)
                opt.zero_grad(set_to_none=True)
                loss, _ = compute_loss(model(batch, compute_forces=False), batch)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 10.0)
                opt.step()
                ema.update()
            return step

        def mace_step(forces: bool):
            model = copy.deepcopy(base).mace
            opt = torch.optim.Adam(model.parameters(), lr=0.01, amsgrad=True)
            ema = ExponentialMovingAverage(model.parameters(), decay=0.99)
            loss_fn = WeightedEnergyForcesLoss(1.0, 0.0) if forces else EnergyLoss()
            outputs = {"forces": forces, "virials": False, "stress": False}

            def step(i):
                take_step(model, loss_fn, theirs[i % len(theirs)], opt, ema, outputs, 10.0,
                          device)
            return step

        steps = {"step:fusion energy": fusion_step(),
                 "step:mace_run_train energy+forces": mace_step(True),
                 "step:mace take_step energy-only": mace_step(False)}
        times = {name: [] for name in steps}
        for i in range(n_steps + 1):  # the first round is warm-up
            for name, step in steps.items():
                t0 = time.perf_counter()
                step(i)
                if i:
                    times[name].append(time.perf_counter() - t0)
        rows = []
        for name, ts in times.items():
            seconds = sum(ts)
            n = len(ts) * rs.batch_size
            rows.append({"trainer": name, "epochs": 1, "n_train": n, "seconds": seconds,
                         "structures_per_second": n / seconds, "test_mae_meV": None})
        return rows
    finally:
        torch.set_default_dtype(old_dtype)
        torch.set_num_threads(old_threads)


def profile_ours(spec: dict, out_dir: Path, rows: int = 25) -> str:
    """torch.profiler table (top ops by self CPU time) of one epoch of our trainer."""
    from torch.profiler import ProfilerActivity, profile

    spec = dict(spec, out_dir=str(out_dir), training=dict(spec["training"], epochs=1))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run_ours(spec)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-val", type=int, default=100)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-steps", type=int, default=10,
                        help="steps timed in each step:... row (0: skip them)")
    parser.add_argument("--cache-dir", default="resources")
    parser.add_argument("--out", default="results/benchmarks/trainer_vs_mace.csv")
    parser.add_argument("--workdir", default=None, help="default: a temporary folder")
    parser.add_argument("--profile", action="store_true",
                        help="also print a torch.profiler table of one epoch of ours")
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory(prefix="bench_trainer_vs_mace_")
    root = Path(args.workdir or tmp.name)
    results = []
    for r in range(args.repeats):
        spec = make_spec(args, root / f"ours-{r}")
        for name in ("fusion", "mace_run_train"):
            row = run_ours(spec) if name == "fusion" else run_theirs(spec, root / f"theirs-{r}")
            results.append(row)
            print(f"repeat {r} {name:>14}: {row['structures_per_second']:7.1f} structures/s "
                  f"({row['seconds']:.1f} s, {row['epochs']} epochs x {row['n_train']}), "
                  f"test MAE {row['test_mae_meV']:.1f} meV", flush=True)
    if args.model_steps:
        for row in model_steps(make_spec(args, root / "steps"), args.model_steps):
            results.append(row)
            print(f"{row['trainer']:>34}: {row['structures_per_second']:7.1f} structures/s",
                  flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(results)

    def median(trainer: str, key: str = "structures_per_second") -> float:
        return statistics.median(r[key] for r in results if r["trainer"] == trainer)

    ours, theirs = median("fusion"), median("mace_run_train")
    print(f"median throughput: ours {ours:.1f}, mace_run_train {theirs:.1f} structures/s; "
          f"ratio ours/theirs = {ours / theirs:.2f}")
    print(f"median test MAE: ours {median('fusion', 'test_mae_meV'):.1f} meV, "
          f"mace_run_train {median('mace_run_train', 'test_mae_meV'):.1f} meV")
    if args.model_steps:
        ours_step = median("step:fusion energy")
        theirs_step = median("step:mace_run_train energy+forces")
        energy_step = median("step:mace take_step energy-only")
        print(f"single steps: ours {ours_step:.1f}, mace_run_train's {theirs_step:.1f}, "
              f"mace take_step without forces {energy_step:.1f} structures/s; forces cost "
              f"x{energy_step / theirs_step:.2f}, trainer overhead ours/theirs "
              f"x{ours_step / energy_step:.2f}")
    print(f"wrote {out}")
    if args.profile:
        print(profile_ours(make_spec(args, root / "profile"), root / "profile"))
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
