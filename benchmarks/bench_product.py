"""FusionProduct vs mace-torch's SymmetricContraction in both of its bases, in one run.

Scope: the product basis only - mace's ``SymmetricContraction(node_feats, node_attrs)`` with
its full basis (every chain path, ``use_reduced_cg=False``, mace_run_train's default) and with
its reduced basis (``use_reduced_cg=True``: cuequivariance's symmetric basis, as many weights
as ours) against ``FusionProduct.product_basis(node_feats, node_attrs)`` (same irreps,
correlation, elements; the e3nn Linear and skip that follow are identical in all three and
left out). FusionProduct uses its default independent path basis: the same function space
(``tests/blocks/test_mace_mapping.py`` maps both mace bases' weights onto it exactly).

Timing: the three interleaved in rounds (one call of each mace basis, then up to 20
FusionProduct calls, rotating which goes first), so load from other processes hits all alike;
``speedup_full`` / ``speedup_reduced`` = ratios of medians (``*_min``: of minima, the less
load-sensitive one).
``fwd`` runs under ``torch.no_grad``; ``fwd+bwd`` takes gradients of a random projection of the
output w.r.t. the features and all weights; ``train`` (opt-in: ``--modes train``) is the
second-order pattern of training on forces: gradient w.r.t. the features with
``create_graph``, then the gradient of its square norm w.r.t. the weights.
Peak memory: extra bytes allocated by torch during one call,
from the profiler's allocation events on CPU and ``torch.cuda.max_memory_allocated`` on CUDA.

    python benchmarks/bench_product.py            # full grid (~10 min on 2 CPU cores)
    python benchmarks/bench_product.py --quick    # one case, a minute
    python benchmarks/bench_product.py --device cuda
    python benchmarks/bench_product.py --threads 1 --clock cpu   # on a shared machine

Writes ``results/benchmarks/product.csv`` (one row per case) and ``product.png``/``.svg``.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import torch
from e3nn import o3
from mace.modules.symmetric_contraction import SymmetricContraction
from torch.profiler import ProfilerActivity, profile

from fusion.blocks.product import FusionProduct

KINDS = ("mace_full", "mace_reduced", "fusion")
COLUMNS = [
    "device",
    "threads",
    "clock",
    "load",
    "dtype",
    "nodes",
    "elements",
    "channels",
    "irreps_out",
    "lmax",
    "correlation",
    "mode",
    "baseline",
    "speedup",
    *(f"{k}_s" for k in KINDS),
    "speedup_full",
    "speedup_reduced",
    *(f"{k}_min_s" for k in KINDS),
    "speedup_full_min",
    "speedup_reduced_min",
    *(f"{k}_peak_mb" for k in KINDS),
    *(f"{k}_params" for k in KINDS),
    "repeats",
    "fusion_samples",
]


def _irreps(C: int, irs: str) -> o3.Irreps:
    return o3.Irreps("+".join(f"{C}x{ir}" for ir in irs.split("+")))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _runner(fn, x: torch.Tensor, attrs: torch.Tensor, mode: str, params: list):
    """A closure doing one forward (no grad) or forward+backward of ``fn``."""
    if mode == "fwd":

        def run():
            with torch.no_grad():
                return fn(x, attrs)

        return run
    xg = x.detach().clone().requires_grad_()
    proj = None

    def run():
        nonlocal proj
        out = fn(xg, attrs)
        if proj is None:
            proj = torch.randn_like(out)
        if mode == "fwd+bwd":
            return torch.autograd.grad(out, [xg, *params], proj)
        # "train": forces-style second order, as in MACE training with forces
        (gx,) = torch.autograd.grad((out * proj).sum(), xg, create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum(), params)

    return run


CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
CLOCK = "wall"


def _time(run, device) -> float:
    """Seconds of one call: wall clock, or (``--clock cpu``, one CPU thread) the CPU time of
    this thread, which time slices lost to other processes on a shared machine do not count."""
    clock = CLOCKS[CLOCK]
    _sync(device)
    t = clock()
    run()
    _sync(device)
    return clock() - t


def _peak_mb(run, device) -> float:
    """Extra memory allocated by torch at the peak of one call."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    )
    cur = peak = 0
    for _, nbytes in events:
        cur += nbytes
        peak = max(peak, cur)
    return peak / 2**20


def bench_case(C, outs, corr, dtype, mode, args, device) -> dict:
    torch.manual_seed(0)
    E, N, lmax = args.elements, args.nodes, 3
    irs = "+".join(f"{l}{'e' if l % 2 == 0 else 'o'}" for l in range(lmax + 1))
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # mace builds its U matrices in the default dtype
    try:
        maces = {
            f"mace_{name}": SymmetricContraction(
                _irreps(C, irs), _irreps(C, outs), corr, num_elements=E, use_reduced_cg=reduced
            ).to(device=device, dtype=dtype)
            for name, reduced in (("full", False), ("reduced", True))
        }
    finally:
        torch.set_default_dtype(old)
    fus = FusionProduct(_irreps(C, irs), _irreps(C, outs), corr, num_elements=E)
    fus = fus.to(device=device, dtype=dtype)
    params = {k: [p for p in m.parameters() if p.requires_grad] for k, m in maces.items()}
    params["fusion"] = [p for n, p in fus.named_parameters() if not n.startswith("linear.")]

    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, C, (lmax + 1) ** 2, generator=g).to(device=device, dtype=dtype)
    elem = torch.randint(0, E, (N,), generator=g)
    attrs = torch.nn.functional.one_hot(elem, E).to(device=device, dtype=dtype)
    fns = {**maces, "fusion": fus.product_basis}
    runs = {k: _runner(fns[k], x, attrs, mode, params[k]) for k in KINDS}
    warm = {k: _time(run, device) for k, run in runs.items()}  # warm-up (allocator, lazy init)
    # Interleaved rounds: one call of each mace basis and k fusion calls (k ~ the reduced
    # basis' time ratio, <= 20), so the cheap side gets as many samples as its cost allows;
    # the order rotates per round.
    k = max(1, min(20, round(warm["mace_reduced"] / max(warm["fusion"], 1e-9))))
    times = {key: [] for key in runs}
    for rep in range(args.repeats):
        order = KINDS[rep % 3 :] + KINDS[: rep % 3]
        for key in order:
            for _ in range(k if key == "fusion" else 1):
                times[key].append(_time(runs[key], device))
    peaks = {key: _peak_mb(run, device) for key, run in runs.items()}
    med = {key: statistics.median(t) for key, t in times.items()}
    low = {key: min(t) for key, t in times.items()}
    row = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "clock": CLOCK,
        "load": f"{os.getloadavg()[0]:.1f}",  # 1-min load average: other processes' share
        "dtype": str(dtype).replace("torch.", ""),
        "nodes": N,
        "elements": E,
        "channels": C,
        "irreps_out": outs,
        "lmax": lmax,
        "correlation": corr,
        "mode": mode,
        # the report's kernel figure reads "speedup": against the stronger anchor
        "baseline": "mace-torch SymmetricContraction, reduced basis (use_reduced_cg=True)",
        "speedup": f"{med['mace_reduced'] / med['fusion']:.2f}",
        "speedup_full": f"{med['mace_full'] / med['fusion']:.2f}",
        "speedup_reduced": f"{med['mace_reduced'] / med['fusion']:.2f}",
        "speedup_full_min": f"{low['mace_full'] / low['fusion']:.2f}",
        "speedup_reduced_min": f"{low['mace_reduced'] / low['fusion']:.2f}",
        "repeats": args.repeats,
        "fusion_samples": len(times["fusion"]),
    }
    for key in KINDS:
        row[f"{key}_s"] = f"{med[key]:.5f}"
        row[f"{key}_min_s"] = f"{low[key]:.5f}"
        row[f"{key}_peak_mb"] = f"{peaks[key]:.1f}"
        row[f"{key}_params"] = sum(p.numel() for p in params[key])
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        f"{r['channels']}ch {r['irreps_out']}\nnu={r['correlation']} {r['dtype']} {r['mode']}"
        for r in rows
    ]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.55 * len(rows) + 4), 5.5))
    xs = range(len(rows))
    w = 0.4
    ax = axes[0]
    for off, key, name in ((-w / 2, "speedup_full", "full"), (w / 2, "speedup_reduced", "reduced")):
        ax.bar([i + off for i in xs], [float(r[key]) for r in rows], w,
               label=f"vs mace {name} basis")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("FusionProduct speedup over mace-torch SymmetricContraction (x)")
    ax.set_title(
        f"{rows[0]['nodes']} nodes, {rows[0]['elements']} elements, lmax "
        f"{rows[0]['lmax']}, {rows[0]['device']}, {rows[0]['threads']} thread(s)"
    )
    ax.legend()
    ax = axes[1]
    w = 0.27
    for off, key in ((-w, "mace_full"), (0.0, "mace_reduced"), (w, "fusion")):
        ax.bar([i + off for i in xs], [float(r[f"{key}_peak_mb"]) for r in rows], w,
               label=key.replace("_", " "))
    ax.set_yscale("log")
    ax.set_ylabel("peak extra memory of one call (MiB)")
    ax.legend()
    for ax in axes:
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=90, fontsize=7)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(path.with_suffix(f".{ext}"), dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one case (64ch 0e+1o, nu 3, f32)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--elements", type=int, default=3)
    ap.add_argument(
        "--cases",
        nargs="+",
        default=["64:0e+1o", "128:0e+1o+2e"],
        help="CHANNELS:OUTPUT_IRREPS (default: the two cases of DESIGN.md's speed notes)",
    )
    ap.add_argument("--correlations", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], help="fwd, fwd+bwd, train")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: perf_counter; cpu: this thread's CPU time (needs --threads 1 on CPU; robust "
        "when other processes share the cores)",
    )
    ap.add_argument("--out", default="results/benchmarks/product.csv")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from --out")
    args = ap.parse_args(argv)
    if args.plot_only:
        with open(args.out) as f:
            plot(list(csv.DictReader(f)), Path(args.out))
        return
    if args.quick:
        args.cases, args.correlations, args.dtypes, args.repeats = ["64:0e+1o"], [3], ["float32"], 3
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and (args.device != "cpu" or torch.get_num_threads() != 1):
        raise SystemExit("--clock cpu measures one thread: use it with --threads 1 on CPU")
    global CLOCK
    CLOCK = args.clock
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but torch.cuda.is_available() is False")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    print(f"threads={torch.get_num_threads()} device={device} load={os.getloadavg()[0]:.1f}")
    for case in args.cases:
        C, outs = case.split(":")
        for corr in args.correlations:
            for dt in args.dtypes:
                for mode in args.modes:
                    row = bench_case(int(C), outs, corr, getattr(torch, dt), mode, args, device)
                    rows.append(row)
                    print(
                        f"{C:>4}ch {outs:<10} nu={corr} {dt:<8} {mode:<8} "
                        f"mace full {row['mace_full_s']}s reduced {row['mace_reduced_s']}s "
                        f"fusion {row['fusion_s']}s  x{row['speedup_full']} (full) "
                        f"x{row['speedup_reduced']} (reduced)  mem "
                        f"{row['mace_full_peak_mb']}/{row['mace_reduced_peak_mb']}/"
                        f"{row['fusion_peak_mb']} MiB  params {row['mace_full_params']}/"
                        f"{row['mace_reduced_params']}/{row['fusion_params']}",
                        flush=True,
                    )
                    with out.open("w", newline="") as f:  # rewritten each case: partial runs
                        wr = csv.DictWriter(f, fieldnames=COLUMNS)  # keep what is done
                        wr.writeheader()
                        wr.writerows(rows)
    plot(rows, out)
    print(f"wrote {out} and {out.with_suffix('.png')}/.svg")


if __name__ == "__main__":
    main()
