"""FusionProduct vs mace-torch's SymmetricContraction, side by side in one run.

Scope: the product basis only - mace's ``SymmetricContraction(node_feats, node_attrs)`` against
``FusionProduct.product_basis(node_feats, node_attrs)`` (same irreps, correlation, elements;
the e3nn Linear and skip that follow are identical in both blocks and left out). FusionProduct
uses its default independent path basis: the same function space with about a third of the
weights (``tests/blocks/test_mace_mapping.py`` maps mace's weights onto it exactly).

Timing: baseline and ours interleaved in rounds (one baseline call, then up to 20 FusionProduct
calls, alternating which goes first), so load from other processes hits both alike;
``speedup`` = ratio of medians (``speedup_min``: of minima, the less load-sensitive one).
``fwd`` runs under ``torch.no_grad``; ``fwd+bwd`` takes gradients of a random projection of the
output w.r.t. the features and all weights; ``train`` (opt-in: ``--modes train``) is the
second-order pattern of training on forces: gradient w.r.t. the features with
``create_graph``, then the gradient of its square norm w.r.t. the weights.
Peak memory: extra bytes allocated by torch during one call,
from the profiler's allocation events on CPU and ``torch.cuda.max_memory_allocated`` on CUDA.

    python benchmarks/bench_product.py            # full grid (~10 min on 2 CPU cores)
    python benchmarks/bench_product.py --quick    # one case, a minute
    python benchmarks/bench_product.py --device cuda

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

COLUMNS = [
    "device",
    "threads",
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
    "baseline_s",
    "fusion_s",
    "speedup",
    "baseline_min_s",
    "fusion_min_s",
    "speedup_min",
    "baseline_peak_mb",
    "fusion_peak_mb",
    "baseline_params",
    "fusion_params",
    "param_ratio",
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


def _time(run, device) -> float:
    _sync(device)
    t = time.perf_counter()
    run()
    _sync(device)
    return time.perf_counter() - t


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
        mace = SymmetricContraction(_irreps(C, irs), _irreps(C, outs), corr, num_elements=E)
    finally:
        torch.set_default_dtype(old)
    mace = mace.to(device=device, dtype=dtype)
    fus = FusionProduct(_irreps(C, irs), _irreps(C, outs), corr, num_elements=E)
    fus = fus.to(device=device, dtype=dtype)
    mace_params = [p for p in mace.parameters() if p.requires_grad]
    fus_params = [p for n, p in fus.named_parameters() if not n.startswith("linear.")]

    g = torch.Generator().manual_seed(1)
    x = torch.randn(N, C, (lmax + 1) ** 2, generator=g).to(device=device, dtype=dtype)
    elem = torch.randint(0, E, (N,), generator=g)
    attrs = torch.nn.functional.one_hot(elem, E).to(device=device, dtype=dtype)
    runs = {
        "baseline": _runner(mace, x, attrs, mode, mace_params),
        "fusion": _runner(fus.product_basis, x, attrs, mode, fus_params),
    }
    warm = {k: _time(run, device) for k, run in runs.items()}  # warm-up (allocator, lazy init)
    # Interleaved rounds: one baseline call and k fusion calls (k ~ their time ratio, <= 20), so
    # the cheap side gets as many samples as its cost allows; the order alternates per round.
    k = max(1, min(20, round(warm["baseline"] / max(warm["fusion"], 1e-9))))
    times = {key: [] for key in runs}
    for rep in range(args.repeats):
        for key in ["baseline", "fusion"] if rep % 2 == 0 else ["fusion", "baseline"]:
            for _ in range(k if key == "fusion" else 1):
                times[key].append(_time(runs[key], device))
    peaks = {key: _peak_mb(run, device) for key, run in runs.items()}
    tb, tf = statistics.median(times["baseline"]), statistics.median(times["fusion"])
    mb, mf = min(times["baseline"]), min(times["fusion"])
    nb, nf = sum(p.numel() for p in mace_params), sum(p.numel() for p in fus_params)
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "load": f"{os.getloadavg()[0]:.1f}",  # 1-min load average: other processes' share
        "dtype": str(dtype).replace("torch.", ""),
        "nodes": N,
        "elements": E,
        "channels": C,
        "irreps_out": outs,
        "lmax": lmax,
        "correlation": corr,
        "mode": mode,
        "baseline": "mace-torch SymmetricContraction",
        "baseline_s": f"{tb:.5f}",
        "fusion_s": f"{tf:.5f}",
        "speedup": f"{tb / tf:.2f}",
        "baseline_min_s": f"{mb:.5f}",
        "fusion_min_s": f"{mf:.5f}",
        "speedup_min": f"{mb / mf:.2f}",
        "baseline_peak_mb": f"{peaks['baseline']:.1f}",
        "fusion_peak_mb": f"{peaks['fusion']:.1f}",
        "baseline_params": nb,
        "fusion_params": nf,
        "param_ratio": f"{nf / nb:.3f}",
        "repeats": args.repeats,
        "fusion_samples": len(times["fusion"]),
    }


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        f"{r['channels']}ch {r['irreps_out']}\nnu={r['correlation']} {r['dtype']} {r['mode']}"
        for r in rows
    ]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 0.55 * len(rows) + 4), 5.5))
    colors = ["tab:blue" if r["mode"] == "fwd" else "tab:orange" for r in rows]
    ax = axes[0]
    ax.bar(range(len(rows)), [float(r["speedup"]) for r in rows], color=colors)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_ylabel("speedup over mace-torch SymmetricContraction (x)")
    ax.set_title(
        f"FusionProduct, {rows[0]['nodes']} nodes, {rows[0]['elements']} elements, lmax "
        f"{rows[0]['lmax']}, {rows[0]['device']}, {rows[0]['threads']} thread(s)"
    )
    from matplotlib.patches import Patch

    ax.legend(
        handles=[Patch(color="tab:blue", label="fwd"), Patch(color="tab:orange", label="fwd+bwd")]
    )
    ax = axes[1]
    w = 0.4
    xs = range(len(rows))
    ax.bar([i - w / 2 for i in xs], [float(r["baseline_peak_mb"]) for r in rows], w, label="mace")
    ax.bar([i + w / 2 for i in xs], [float(r["fusion_peak_mb"]) for r in rows], w, label="fusion")
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
                        f"mace {row['baseline_s']}s  fusion {row['fusion_s']}s  "
                        f"x{row['speedup']:>6}  mem {row['baseline_peak_mb']}/"
                        f"{row['fusion_peak_mb']} MiB  params {row['baseline_params']}/"
                        f"{row['fusion_params']}",
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
