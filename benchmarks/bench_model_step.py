"""Whole-model speed: MACE training steps with forces and MD force calls, side by side.

What a user of this suite pays for is the whole step, not one kernel. This benchmark times,
in one run and interleaved in rounds (so load from other processes hits every row alike):

- ``train``: one training step on forces as our trainer takes it (forward, forces by
  ``-dE/dpositions`` with ``create_graph``, energy + forces loss, backward, Adam step) on a
  batch of 10 ethanol-sized molecules (9 atoms);
- ``md-aspirin`` / ``md-stilbene``: one force evaluation for MD (eval mode, forces without
  ``create_graph``) on one 21-atom (aspirin) or 26-atom (stilbene) molecule;
- ``train-demo``: the CPU demo's MACE (``DEMO_HPARAMS``: 32x0e, ``max_ell`` 2) trained on
  energies only, as on QM9, on a batch of 32 QM9-sized molecules (20 atoms);

for these models, all with the same hyperparameters (``HPARAMS``: 64 channels, ``max_L`` 1,
``max_ell`` 3, correlation 3, two interactions, r_max 5 Å; the demo task: ``DEMO_HPARAMS``):

- ``mace/baseline (full, e3nn)``: mace-torch's MACE exactly as ``mace_run_train`` builds it
  (full product basis, e3nn interaction), the anchor's default;
- ``mace/baseline (reduced, e3nn)``: the same with ``use_reduced_cg`` (mace-torch's faster
  reduced product basis): the strongest mace-torch configuration on CPU, the reference for
  the ratios;
- ``mace/baseline (full, fusion conv)`` / ``(reduced, fusion conv)``: the same functions
  with our interaction kernel (:class:`fusion.blocks.conv.FusionConv`), what our trainer
  runs (``interaction_kernel: fusion``, the default);
- ``mace/fusion`` and ``mace/fusion-3body`` as the registry builds them (fast paths on).

in float32 and float64, on 1 and 2 threads. Geometries are rdkit ETKDG + MMFF conformers with
seeded 0.05 Å displacements (the cost depends on atoms and edges, not on labels).

``--breakdown`` adds three profiled steps per task and model, with the self CPU time of every
op attributed to the module that ran it: forward ops by their module; backward ops (the
forces pass and the parameter-gradient pass) through the autograd sequence numbers back to
the forward op, and so to its module.

    python benchmarks/bench_model_step.py                 # full grid, ~5 min on 2 cores
    python benchmarks/bench_model_step.py --quick         # float32, 1 thread, train only

Writes ``results/benchmarks/model_step.csv`` (one row per model x task x dtype x threads),
``model_step_breakdown.csv`` and ``model_step.png``/``.svg``.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import argparse
import csv
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

HPARAMS = {"num_channels": 64, "max_L": 1, "max_ell": 3, "correlation": 3,
           "num_interactions": 2, "r_max": 5.0}
# name -> (registry variant, extra hyperparameters)
MODELS = {
    "mace/baseline (full, e3nn)": ("baseline", {"interaction_kernel": "e3nn"}),
    "mace/baseline (reduced, e3nn)": ("baseline", {"use_reduced_cg": True,
                                                   "interaction_kernel": "e3nn"}),
    "mace/baseline (full, fusion conv)": ("baseline", {}),
    "mace/baseline (reduced, fusion conv)": ("baseline", {"use_reduced_cg": True}),
    "mace/fusion": ("fusion", {}),
    "mace/fusion-3body": ("fusion-3body", {}),
}
REFERENCE = "mace/baseline (reduced, e3nn)"
# The CPU demo's MACE (config/demo.yaml): scalars only, trained on QM9 energies.
DEMO_HPARAMS = {"num_channels": 32, "max_L": 0, "max_ell": 2, "correlation": 3,
                "num_interactions": 2, "r_max": 5.0}
MOLECULES = {"ethanol": "CCO", "aspirin": "CC(=O)Oc1ccccc1C(=O)O",
             "stilbene": "c1ccc(cc1)/C=C/c1ccccc1",
             "qm9-sized": "CC(C)C(=O)OCC"}  # 8 heavy atoms, 20 atoms (QM9 has <= 9 heavy)
# task -> (molecule, frames per batch, hyperparameters, forces in the loss)
TASKS = {
    "train": ("ethanol", 10, HPARAMS, True),
    "md-aspirin": ("aspirin", 1, HPARAMS, True),
    "md-stilbene": ("stilbene", 1, HPARAMS, True),
    "train-demo": ("qm9-sized", 32, DEMO_HPARAMS, False),
}
COLUMNS = ["task", "model", "mode", "device", "dtype", "threads", "n_params", "atoms", "edges",
           "ms_median", "ms_min", "per_second", "speedup_vs_reference", "reference", "rounds",
           "clock", "load"]
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
CLOCK = CLOCKS["wall"]


def conformer(smiles: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(atomic numbers [n], positions [n, 3] Å) of an MMFF-relaxed rdkit conformer."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    if AllChem.EmbedMolecule(mol, randomSeed=seed) != 0:
        raise RuntimeError(f"rdkit could not embed {smiles}")
    AllChem.MMFFOptimizeMolecule(mol)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return z, mol.GetConformer().GetPositions()


def structures(name: str, n_frames: int, seed: int = 0):
    from fusion.data.structures import Structures

    z, pos = conformer(MOLECULES[name], seed)
    rng = np.random.default_rng(seed)
    frames = pos[None] + 0.05 * rng.standard_normal((n_frames, *pos.shape))
    n = len(z)
    return Structures(z=np.tile(z, n_frames), pos=frames.reshape(-1, 3),
                      n_atoms=np.full(n_frames, n), y=np.zeros(n_frames),
                      forces=np.zeros((n_frames * n, 3)), meta={"name": name})


def batch_of(name: str, n_frames: int, elements, dtype) -> dict:
    from fusion.data.graphs import GraphLoader

    st = structures(name, n_frames)
    loader = GraphLoader(st, np.arange(n_frames), n_frames, HPARAMS["r_max"], elements,
                         dtype=dtype)
    return next(iter(loader))


def build(model_name: str, dtype, elements, hparams=HPARAMS):
    from fusion.models.registry import ModelStats, build_model, count_parameters

    variant, extra = MODELS[model_name]
    stats = ModelStats(elements=tuple(elements),
                       atomic_energies=np.array([-13.6, -1030.0, -1485.0])[: len(elements)],
                       avg_num_neighbors=12.0, scale=1.0)
    torch.manual_seed(0)
    model = build_model("mace", variant, {**hparams, **extra}, stats).to(dtype)
    return model, count_parameters(model)


def runner(model, batch: dict, task: str):
    """A callable doing one ``task`` on ``batch``."""
    from fusion.train.losses import compute_loss

    if task.startswith("train"):
        model.train()
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        forces = TASKS[task][3]

        def step():
            b = dict(batch)
            out = model(b, compute_forces=forces)
            loss, _ = compute_loss(out, b, energy_weight=1.0,
                                   forces_weight=100.0 if forces else 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            with record_function("optimizer"):
                opt.step()

        return step
    model.eval()

    def md():
        out = model(dict(batch), compute_forces=True)
        return out["forces"].detach()

    return md


def _edges(batch: dict) -> int:
    return int(batch["edge_index"].shape[1])


def time_grid(args) -> list[dict]:
    from fusion.train.provenance import cpu_name

    device = f"cpu: {cpu_name()}"
    elements = (1, 6, 8)
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            cases = []
            for task in args.tasks:
                molecule, n_frames, hparams, _ = TASKS[task]
                batch = batch_of(molecule, n_frames, elements, dtype)
                for name in args.models:
                    model, n_params = build(name, dtype, elements, hparams)
                    run = runner(model, batch, task)
                    for _ in range(2):  # warm-up (first calls allocate and build caches)
                        run()
                    cases.append({"task": task, "model": name, "run": run, "times": [],
                                  "n_params": n_params, "atoms": int(batch["positions"].shape[0]),
                                  "edges": _edges(batch)})
            for r in range(args.rounds):
                order = cases[r % len(cases):] + cases[: r % len(cases)]
                for case in order:
                    t = CLOCK()
                    case["run"]()
                    case["times"].append(CLOCK() - t)
            ref = {c["task"]: statistics.median(c["times"]) for c in cases
                   if c["model"] == REFERENCE}
            for c in cases:
                med = statistics.median(c["times"])
                rows.append({
                    "task": c["task"], "model": c["model"], "mode": c["model"],
                    "device": device, "dtype": dtype_name,
                    "threads": threads, "n_params": c["n_params"], "atoms": c["atoms"],
                    "edges": c["edges"], "ms_median": round(1e3 * med, 3),
                    "ms_min": round(1e3 * min(c["times"]), 3),
                    "per_second": round(1.0 / med, 3),
                    "speedup_vs_reference": (round(ref[c["task"]] / med, 3)
                                             if c["task"] in ref else ""),
                    "reference": REFERENCE, "rounds": args.rounds, "clock": args.clock,
                    "load": round(os.getloadavg()[0], 2),
                })
                print(f"{threads} thr {dtype_name:7s} {c['task']:11s} {c['model']:38s} "
                      f"{1e3 * med:8.1f} ms  x{rows[-1]['speedup_vs_reference']}", flush=True)
    return rows


# --------------------------------------------------------------------------------------
# Per-module breakdown
# --------------------------------------------------------------------------------------
def _module_labels(model) -> dict:
    """Modules to label -> label (innermost label wins for nested modules)."""
    labels = {}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("spherical_harmonics", "radial_embedding"):
            labels[module] = "edge embedding (sh, radial basis)"
        elif leaf == "conv_tp":
            labels[module] = "interaction TP + scatter"
        elif leaf == "conv_tp_weights":
            labels[module] = "interaction radial MLP"
        elif ".interactions." in f".{name}." and leaf.isdigit():
            labels[module] = "interaction linears, skip, scatter"
        elif ".products." in f".{name}." and leaf.isdigit():
            labels[module] = "product"
        elif ".readouts." in f".{name}." and leaf.isdigit():
            labels[module] = "readout"
        elif ".extra." in f".{name}." and leaf.isdigit():
            labels[module] = "3-body tree (MessageFusion)"
        elif ".extra." in f".{name}." and leaf == "message":
            labels[module] = "3-body messages (EdgeMessage)"
    return labels


def _label_forward(model) -> set[str]:
    """Wrap the labelled modules' forwards in ``record_function`` scopes; returns the labels."""
    labelled_modules = _module_labels(model)
    for module, label in labelled_modules.items():
        for method in ("forward", "components"):  # EdgeMessage.components: 3-body fast path
            if not hasattr(module, method):
                continue
            original = getattr(module, method)

            def labelled(*a, _f=original, _l=label, **k):
                with record_function(_l):
                    return _f(*a, **k)

            setattr(module, method, labelled)
    return set(labelled_modules.values())


def attribute(events, labels: set[str]) -> dict[tuple[str, str], float]:
    """(label, phase) -> self CPU ms, for the ``record_function`` scopes named in ``labels``
    (everything else: "other"). Phase: "forward" or "backward" (forces + params)."""
    forward_of_seq = {}
    cache: dict[int, tuple[str, bool]] = {}

    def scope(e) -> tuple[str, bool]:
        """(label, in backward) of an event."""
        key = id(e)
        if key in cache:
            return cache[key]
        result = ("other", False)
        p = e
        while p is not None:
            if p.name in labels:
                result = (p.name, False)
                break
            if p.name.startswith("autograd::engine::evaluate_function"):
                fwd = forward_of_seq.get(p.sequence_nr)
                result = (scope(fwd)[0] if fwd is not None else "other", True)
                break
            p = p.cpu_parent
        cache[key] = result
        return result

    for e in events:  # forward ops own their sequence number (first event carrying it)
        if e.sequence_nr >= 0 and not e.name.startswith("autograd::") \
                and e.sequence_nr not in forward_of_seq and "Backward" not in e.name:
            forward_of_seq[e.sequence_nr] = e
    totals: dict[tuple[str, str], float] = defaultdict(float)
    for e in events:
        label, backward = scope(e)
        totals[(label, "backward" if backward else "forward")] += e.self_cpu_time_total / 1e3
    return totals


def breakdown(args) -> list[dict]:
    elements = (1, 6, 8)
    torch.set_num_threads(1)
    rows = []
    for task in args.tasks:
        molecule, n_frames, hparams, _ = TASKS[task]
        batch = batch_of(molecule, n_frames, elements, torch.float32)
        for name in args.models:
            model, _ = build(name, torch.float32, elements, hparams)
            labels = _label_forward(model) | {"optimizer"}
            run = runner(model, batch, task)
            for _ in range(2):
                run()
            n = 3
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(n):
                    run()
            totals = attribute(prof.events(), labels)
            for (label, phase), ms in sorted(totals.items()):
                rows.append({"task": task, "model": name, "part": label, "phase": phase,
                             "ms_per_step": round(ms / n, 2)})
            total = sum(totals.values()) / n
            print(f"{task} {name}: {total:.0f} ms/step profiled")
            for (label, phase), ms in sorted(totals.items(), key=lambda kv: -kv[1])[:8]:
                print(f"   {label:38s} {phase:8s} {ms / n:7.1f} ms")
    return rows


def write_csv(path: Path, rows: list[dict], columns) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def plot(rows: list[dict], stem: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({(r["dtype"], r["threads"]) for r in rows})
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False,
                             sharey=True)
    width = 0.8 / len(models)
    for ax, (dtype, threads) in zip(axes[0], groups):
        for k, model in enumerate(models):
            ys = []
            for task in tasks:
                match = [r for r in rows if (r["dtype"], r["threads"], r["task"], r["model"])
                         == (dtype, threads, task, model)]
                ys.append(float(match[0]["speedup_vs_reference"]) if match else np.nan)
            ax.bar(np.arange(len(tasks)) + (k - (len(models) - 1) / 2) * width, ys, width,
                   label=model)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(tasks)), tasks)
        ax.set_title(f"{dtype}, {threads} thread(s)")
    axes[0][0].set_ylabel(f"speed vs {REFERENCE}")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle("MACE steps per second relative to mace-torch (reduced basis), one run")
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(stem.with_suffix(f".{ext}"), dpi=150, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="float32, 1 thread, train, 5 rounds")
    ap.add_argument("--breakdown", action="store_true", help="also profile one step per model")
    ap.add_argument("--no-grid", action="store_true", help="only the breakdown")
    ap.add_argument("--clock", choices=list(CLOCKS), default="wall",
                    help="wall: perf_counter; cpu: this thread's CPU time (1 thread only; "
                    "robust to other processes on a shared machine)")
    ap.add_argument("--out", default="results/benchmarks/model_step.csv")
    args = ap.parse_args(argv)
    if args.quick:
        args.dtypes, args.threads, args.tasks, args.rounds = ["float32"], [1], ["train"], 5
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    if args.clock == "cpu" and args.threads != [1]:
        raise SystemExit("--clock cpu measures one thread: use it with --threads 1")
    out = Path(args.out)
    if args.breakdown:
        rows = breakdown(args)
        write_csv(out.with_name(out.stem + "_breakdown.csv"), rows,
                  ["task", "model", "part", "phase", "ms_per_step"])
    if not args.no_grid:
        rows = time_grid(args)
        write_csv(out, rows, COLUMNS)
        plot(rows, out.with_suffix(""))
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
