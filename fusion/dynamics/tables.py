"""The combined dynamics table and figures over many runs (``fusion dynamics-table``).

``fusion dynamics-table`` (rule ``dynamics_table`` in ``workflow/rules/dynamics.smk``) turns the
``analysis.json`` of every run (written by :func:`fusion.dynamics.workflow.run_dynamics`) into
``dynamics.csv``/``dynamics.md`` (:func:`dynamics_table`) and the figures
``dynamics_population`` and ``dynamics_torsion`` (:func:`dynamics_figures`).

Units: times fs, energies eV, torsion angles degrees (as in :mod:`fusion.dynamics.hopping`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fusion.dynamics.workflow import STARTS, _read_json

__all__ = [
    "TABLE_COLUMNS",
    "dynamics_table",
    "dynamics_figures",
]

DRIFT_FLAG_EV = 0.05  # as fusion.dynamics.analysis.DRIFT_THRESHOLD_EV (tested equal)


# --------------------------------------------------------------------------- combined table

TABLE_COLUMNS = ("dataset", "model", "variant", "seed", "start", "n_states", "n_trajectories",
                 "n_exits", "n_exits_to_s0", "n_exits_to_s2",
                 "n_hops", "s1_lifetime_fs", "s1_lifetime_se_fs", "s1_lifetime_lower95_fs",
                 "s1_observed_fs", "n_on_s0", "n_on_s1", "n_on_s2", "n_trans",
                 "trans_fraction", "trans_wilson95_low", "trans_wilson95_high",
                 "first_exit_fs", "max_drift_ev", "n_drift_flagged")
# Counts per state, blank where the run has no such state (two-state models: no S2) or its
# analysis.json predates them.
STATE_COUNTS = ("n_exits_to_s0", "n_exits_to_s2", "n_on_s1", "n_on_s2")


def _load_analysis(path: Path) -> dict:
    analysis = _read_json(path)
    if analysis is None:
        raise FileNotFoundError(f"{path} not found or not a JSON object (expected the "
                                "analysis.json written by fusion dynamics)")
    for key in ("run", "per_start"):
        if key not in analysis:
            raise ValueError(f"{path}: no {key!r} (written by fusion dynamics; an analysis.json "
                             "from analyse_ensemble alone lacks it: rerun fusion dynamics)")
    return analysis


def _mean_over_seeds(rows: list[dict]) -> dict:
    """Row ``seed = "mean"`` of several seeds' rows of one (dataset, model, variant, start).

    Lifetime: mean over seeds, s.e. = sample std over seeds / sqrt(n seeds) (blank when a seed
    has no lifetime); counts summed; trans fraction and Wilson interval of the pooled counts.
    """
    from fusion.dynamics.analysis import lifetime_lower_bound, wilson_interval

    first = rows[0]
    mean = {key: first[key] for key in ("dataset", "model", "variant", "start")}
    mean["seed"] = "mean"
    for key in ("n_trajectories", "n_exits", "n_hops", "n_on_s0", "n_trans"):
        mean[key] = sum(int(r[key]) for r in rows)
    for key in STATE_COUNTS:
        counts = [r.get(key) for r in rows]
        mean[key] = None if None in counts else sum(int(c) for c in counts)
    n_states = {r.get("n_states") for r in rows}
    mean["n_states"] = n_states.pop() if len(n_states) == 1 else None
    lifetimes = [r["s1_lifetime_fs"] for r in rows]
    if all(t is not None for t in lifetimes):
        mean["s1_lifetime_fs"] = float(np.mean(lifetimes))
        mean["s1_lifetime_se_fs"] = float(np.std(lifetimes, ddof=1) / math.sqrt(len(rows)))
    else:
        mean["s1_lifetime_fs"] = mean["s1_lifetime_se_fs"] = None
    observed = [r.get("s1_observed_fs") for r in rows]
    if all(t is not None for t in observed) and sum(observed) > 0:  # pooled exits and time
        mean["s1_observed_fs"] = float(sum(observed))
        mean["s1_lifetime_lower95_fs"] = lifetime_lower_bound(mean["n_exits"], sum(observed))
    else:
        mean["s1_observed_fs"] = mean["s1_lifetime_lower95_fs"] = None
    firsts = [r.get("first_exit_fs") for r in rows if r.get("first_exit_fs") is not None]
    mean["first_exit_fs"] = min(firsts) if firsts else None
    drifts = [r.get("max_drift_ev") for r in rows if r.get("max_drift_ev") is not None]
    mean["max_drift_ev"] = max(drifts) if drifts else None
    mean["n_drift_flagged"] = sum(int(r.get("n_drift_flagged") or 0) for r in rows)
    if mean["n_on_s0"]:
        mean["trans_fraction"] = mean["n_trans"] / mean["n_on_s0"]
        mean["trans_wilson95_low"], mean["trans_wilson95_high"] = wilson_interval(
            mean["n_trans"], mean["n_on_s0"])
    else:
        mean["trans_fraction"] = mean["trans_wilson95_low"] = mean["trans_wilson95_high"] = None
    return mean


def _table_rows(analyses: list[dict]) -> list[dict]:
    from fusion.analysis.style import sort_key

    rows = []
    for analysis in analyses:
        run = analysis["run"]
        for numbers in analysis["per_start"]:
            exits_to = numbers.get("n_exits_to") or {}
            final = numbers.get("final_states") or {}
            rows.append({
                "dataset": run["dataset"], "model": run["model"], "variant": run["variant"],
                "seed": int(run["seed"]), "start": numbers["start"],
                "n_states": numbers.get("n_states"),
                "n_trajectories": numbers["n_trajectories"], "n_exits": numbers["n_exits"],
                "n_exits_to_s0": exits_to.get("S0"), "n_exits_to_s2": exits_to.get("S2"),
                "n_on_s1": final.get("S1"), "n_on_s2": final.get("S2"),
                "n_hops": numbers["n_hops"], "s1_lifetime_fs": numbers["lifetime_fs"],
                "s1_lifetime_se_fs": numbers["lifetime_stderr_fs"],
                "s1_lifetime_lower95_fs": numbers.get("lifetime_lower95_fs"),
                "s1_observed_fs": numbers.get("observed_fs"),
                "n_on_s0": numbers["n_on_s0"], "n_trans": numbers["n_trans"],
                "trans_fraction": numbers["fraction_trans"],
                "trans_wilson95_low": numbers["wilson95_low"],
                "trans_wilson95_high": numbers["wilson95_high"],
                "first_exit_fs": numbers.get("first_exit_fs"),
                "max_drift_ev": numbers.get("max_drift_ev"),
                "n_drift_flagged": numbers.get("n_drift_flagged")})
    start_rank = {s: i for i, s in enumerate(STARTS)}
    rows.sort(key=lambda r: (r["dataset"], sort_key(r["model"], r["variant"]),
                             start_rank.get(r["start"], len(STARTS)), r["start"], r["seed"]))
    seen = {(r["dataset"], r["model"], r["variant"], r["seed"], r["start"]) for r in rows}
    if len(seen) != len(rows):
        raise ValueError("two analysis files describe the same (dataset, model, variant, seed, "
                         "start); give each run once")
    out: list[dict] = []
    for row in rows:
        out.append(row)
        group = [r for r in rows if all(r[k] == row[k] for k in
                                        ("dataset", "model", "variant", "start"))]
        if len(group) > 1 and row is group[-1]:
            out.append(_mean_over_seeds(group))
    return out


def _fmt(value, digits: int) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def _count(value) -> str:
    return "–" if value is None else str(int(value))


def dynamics_table(analysis_files: Sequence[str | os.PathLike], out_dir: str | os.PathLike
                   ) -> tuple[Path, Path]:
    """``dynamics.csv`` and ``dynamics.md`` in ``out_dir`` from ``analysis.json`` files.

    One row per (dataset, model, variant, seed, start): S1 lifetime (fs) ± standard error,
    electronic states of the model, trajectories, exits from S1 and where they went (S0, and
    S2 for three-state models such as xxmd-stilbene; blank for a state the model lacks),
    accepted hops, trajectories ending on S0, S1 and S2 and the fraction of those on S0 ending
    trans with its 95 % Wilson interval; plus a ``seed = mean`` row per (dataset,
    model, variant, start) when there are several seeds (see :func:`_mean_over_seeds`).
    Returns the two paths.
    """
    import pandas as pd

    from fusion.analysis.style import label
    from fusion.train.checkpoint import atomic_write_text

    if not analysis_files:
        raise ValueError("dynamics-table needs at least one analysis.json")
    rows = _table_rows([_load_analysis(Path(p)) for p in analysis_files])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "dynamics.csv", out / "dynamics.md"
    frame = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    for key in ("n_states", *STATE_COUNTS):  # integers, blank where missing (not 3.0 / NaN)
        frame[key] = frame[key].astype("Int64")
    atomic_write_text(csv_path, frame.to_csv(index=False))
    lines = [
        "# Stilbene surface-hopping dynamics",
        "",
        "Trajectories start on S1 from thermal samples around each start (one row per start: "
        "cis and trans decay through different channels, so no lifetime pools them). S1 "
        "lifetime: exponential maximum-likelihood fit to the first exits from S1 (trajectories "
        "that stay are censored) ± standard error, and in brackets its one-sided 95 % lower "
        "bound 2T/χ²(2k+2) from the k exits in T fs on S1 (with no exit: T/3.0); exits: "
        "trajectories that left S1, → S0/S2 where they went first (hops go to adjacent states "
        "only: S2 exists for three-state models such as xxmd-stilbene, – where the model has "
        "no such state); end on S0/S1/S2: the state each trajectory ended on; first exit: the "
        "earliest hop out of S1 (induction time); trans fraction: trajectories ending on S0 "
        "with final C=C torsion >= 90°, with its 95 % Wilson interval; drift: the largest "
        f"|E_tot(t) − E_tot(0)| of any trajectory, and how many exceed {DRIFT_FLAG_EV} eV "
        "(flagged: their populations are not trustworthy). Rows `mean`: lifetime averaged over "
        "training seeds ± standard error over seeds; counts summed; trans fraction of the "
        "pooled counts.",
        "",
        "Experiment (for comparison, not reproduced by a short CPU ensemble on these "
        "surfaces): cis-stilbene S1 lifetime ≲ 1 ps (~0.3 ps in hexane), trans-stilbene tens of "
        "ps in solution (~70–100 ps in hexane, ~2.5 ns isolated at the origin), photo-"
        "isomerisation quantum yields ~0.35 cis→trans and ~0.5 trans→cis (hexane), with ~10 % "
        "of cis going to dihydrophenanthrene. A lifetime bound from an ensemble that is much "
        "shorter than these times says nothing about them; see docs/stilbene.md for what the "
        "reference surfaces can and cannot show.",
        "",
        "| dataset | model | seed | start | trajectories | exits | → S0/S2 | hops "
        "| first exit (fs) | S1 lifetime (fs) | end on S0/S1/S2 | trans fraction (95 % CI) "
        "| max drift (eV) | flagged |",
        "|:---|:---|---:|:---|---:|---:|---:|---:|---:|---:|---:|:---|---:|---:|",
    ]
    for r in rows:
        bound = r.get("s1_lifetime_lower95_fs")
        lifetime = ("not observed" if r["s1_lifetime_fs"] is None else
                    f"{r['s1_lifetime_fs']:.1f} ± {_fmt(r['s1_lifetime_se_fs'], 1)}")
        if bound is not None:
            lifetime += f" (> {bound:.0f} at 95 %)"
        trans = ("–" if r["trans_fraction"] is None else
                 f"{r['trans_fraction']:.2f} [{r['trans_wilson95_low']:.2f}, "
                 f"{r['trans_wilson95_high']:.2f}]")
        flagged = "–" if r.get("n_drift_flagged") is None else str(r["n_drift_flagged"])
        exits_to = "/".join(_count(r.get(k)) for k in ("n_exits_to_s0", "n_exits_to_s2"))
        final = "/".join(_count(r.get(k)) for k in ("n_on_s0", "n_on_s1", "n_on_s2"))
        lines.append(f"| {r['dataset']} | {label(r['model'], r['variant'])} | {r['seed']} | "
                     f"{r['start']} | {r['n_trajectories']} | {r['n_exits']} | {exits_to} | "
                     f"{r['n_hops']} | {_fmt(r.get('first_exit_fs'), 1)} | {lifetime} | "
                     f"{final} | {trans} | {_fmt(r.get('max_drift_ev'), 3)} | {flagged} |")
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    return csv_path, md_path


# --------------------------------------------------------------------------- combined figures


def _pooled(groups: list[dict], start: str) -> dict | None:
    """Time series of ``start`` pooled over several runs (trajectory-weighted mean; torsion
    std of the pooled trajectories). Runs are cut to the shortest common time axis."""
    parts = [g[start] for g in groups if start in g]
    if not parts:
        return None
    n = min(len(p["time_fs"]) for p in parts)
    weights = np.array([p["n_trajectories"] for p in parts], dtype=np.float64)[:, None]  # [R, 1]
    population = np.array([p["s1_population"][:n] for p in parts])  # [R, T]
    mean = np.array([p["torsion_mean_deg"][:n] for p in parts])  # [R, T] deg
    std = np.array([p["torsion_std_deg"][:n] for p in parts])  # [R, T] deg
    total = weights.sum()
    pooled_mean = (weights * mean).sum(0) / total
    second_moment = (weights * (std**2 + mean**2)).sum(0) / total
    return {"time_fs": np.asarray(parts[0]["time_fs"][:n]),
            "s1_population": (weights * population).sum(0) / total,
            "torsion_mean_deg": pooled_mean,
            "torsion_std_deg": np.sqrt(np.maximum(second_moment - pooled_mean**2, 0.0)),
            "n_trajectories": int(total)}


def dynamics_figures(analysis_files: Sequence[str | os.PathLike], out_dir: str | os.PathLike
                     ) -> list[Path]:
    """``dynamics_population.{png,svg}`` (S1 population vs time, one panel per start, one line
    per dataset/model/variant, pooled over training seeds) and ``dynamics_torsion.{png,svg}``
    (C=C torsion vs time, one panel per dataset/model/variant, mean ± std band per start over
    all trajectories) in ``out_dir``. Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fusion.analysis.style import label, sort_key, style_for
    from fusion.dynamics.analysis import save_png_svg

    analyses = [_load_analysis(Path(p)) for p in analysis_files]
    for path, analysis in zip(analysis_files, analyses):
        if "series" not in analysis:
            raise ValueError(f"{path}: no 'series' (written by fusion dynamics)")
    runs: dict[tuple[str, str, str], list[dict]] = {}
    for analysis in analyses:
        run = analysis["run"]
        runs.setdefault((run["dataset"], run["model"], run["variant"]), []).append(
            analysis["series"])
    keys = sorted(runs, key=lambda k: (k[0], sort_key(k[1], k[2])))
    several_datasets = len({k[0] for k in keys}) > 1
    starts = [s for s in STARTS if any(s in g for groups in runs.values() for g in groups)]

    def name(key) -> str:
        text = label(key[1], key[2])
        return f"{text} ({key[0]})" if several_datasets else text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    fig, axes = plt.subplots(1, len(starts), figsize=(4.5 * len(starts), 3.6), squeeze=False,
                             sharey=True)
    for ax, start in zip(axes[0], starts):
        for key in keys:
            pooled = _pooled(runs[key], start)
            if pooled is None:
                continue
            style = style_for(key[1], key[2])
            ax.plot(pooled["time_fs"], pooled["s1_population"], color=style.color,
                    linestyle=style.linestyle,
                    label=f"{name(key)}, {pooled['n_trajectories']} traj.")
        ax.set(title=f"start: {start}", xlabel="time (fs)", ylim=(0, 1.05))
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("S1 population (fraction of trajectories)")
    written += save_png_svg(fig, out / "dynamics_population")

    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False,
                             sharey=True)
    for ax, key in zip(axes[0], keys):
        for i, start in enumerate(starts):
            pooled = _pooled(runs[key], start)
            if pooled is None:
                continue
            t, mean, std = pooled["time_fs"], pooled["torsion_mean_deg"], pooled["torsion_std_deg"]
            ax.plot(t, mean, color=f"C{i}", label=f"{start} ({pooled['n_trajectories']} traj.)")
            ax.fill_between(t, mean - std, mean + std, color=f"C{i}", alpha=0.25, lw=0)
        ax.set(title=name(key), xlabel="time (fs)", ylim=(0, 180))
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("C=C torsion (deg), mean ± std")
    written += save_png_svg(fig, out / "dynamics_torsion")
    plt.close("all")
    return written
