"""Analysis of a surface-hopping ensemble: S1 lifetime, cis/trans branching, figures.

Reads the CSVs of :func:`fusion.dynamics.hopping.run_ensemble` (``trajectories.csv``,
``summary.csv``). Units: times fs, energies eV, torsion angles degrees.

**Analysis** (:func:`analyse_ensemble`): S1 population ``P_1(t)`` (fraction of
trajectories on the initial state; ``population.csv`` also has every state's); lifetime
``tau`` by the maximum-likelihood fit of an exponential decay to the first times each
trajectory leaves the initial state, with trajectories that never leave right-censored at
their end time::

    tau = (sum of exit times + sum of censored times) / n_exits,   std. error tau / sqrt(n_exits)

cis/trans branching per start: among trajectories that ended on S0 (``state 0``), the
fraction ending *trans* (final torsion >= 90°) with a Wilson score interval (95 %).
Figures ``torsion.{png,svg}`` and ``population.{png,svg}``; numbers in ``analysis.json``,
``population.csv``, ``branching.csv``.

**More than two states.** A trajectory started on S1 of a three-state model (xxMD's
S0/S1/S2) leaves S1 for S0 or for S2; both are exits from S1 (the lifetime is that of S1,
whatever the destination), counted per destination (``n_exits_to``), and the final states
are counted for every state (``final_states``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "DRIFT_THRESHOLD_EV",
    "exponential_lifetime",
    "lifetime_lower_bound",
    "wilson_interval",
    "summary_n_states",
    "ensemble_numbers",
    "analyse_ensemble",
    "save_png_svg",
]


def exponential_lifetime(exit_times_fs: Sequence[float], censored_times_fs: Sequence[float]
                         ) -> tuple[float, float]:
    """Maximum-likelihood lifetime (fs) and its standard error of an exponential decay from
    observed exit times and right-censored times (trajectories that never left)."""
    exits = np.asarray(exit_times_fs, dtype=np.float64)
    censored = np.asarray(censored_times_fs, dtype=np.float64)
    if exits.size == 0:
        raise ValueError("no trajectory left the initial state: the lifetime is only bounded "
                         f"below (> {censored.sum():.1f} fs of total observation)")
    tau = float((exits.sum() + censored.sum()) / exits.size)
    return tau, tau / math.sqrt(exits.size)


def lifetime_lower_bound(n_exits: int, observed_fs: float, confidence: float = 0.95) -> float:
    """One-sided lower confidence bound (fs) of an exponential lifetime, from ``n_exits``
    observed exits and the total observation time ``observed_fs`` (exit times of the
    trajectories that left plus the end times of those that stayed):
    ``2 T / chi2_confidence(2 k + 2)``. With no exit this is ``T / ln(1 / (1 - confidence))``
    (``T / 3.0`` at 95 %): what "no hop seen" still says about the lifetime.

    >>> round(lifetime_lower_bound(0, 2995.7322735539907), 6)
    1000.0
    """
    from scipy.stats import chi2

    if n_exits < 0 or not observed_fs > 0 or not 0 < confidence < 1:
        raise ValueError(f"need n_exits >= 0, observed time > 0 fs and 0 < confidence < 1, got "
                         f"{n_exits}, {observed_fs}, {confidence}")
    return float(2.0 * observed_fs / chi2.ppf(confidence, 2 * n_exits + 2))


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054
                    ) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (default 95 %)."""
    if trials <= 0 or not 0 <= successes <= trials:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes}/{trials}")
    p = successes / trials
    denom = 1.0 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return max(0.0, centre - half), min(1.0, centre + half)


DRIFT_THRESHOLD_EV = 0.05  # max |E_tot(t) - E_tot(0)| above this: trajectory flagged


def summary_n_states(summary) -> int:
    """Number of electronic states of the trajectories in ``summary`` (pandas): its
    ``n_states`` column; a summary written before that column (two-state runs only) gives the
    states it shows, at least 2."""
    if "n_states" in summary and summary["n_states"].notna().any():
        return int(summary["n_states"].max())
    seen = [summary["final_state"].max(), 1]
    if "first_exit_to" in summary and summary["first_exit_to"].notna().any():
        seen.append(summary["first_exit_to"].max())
    return int(max(seen)) + 1


def ensemble_numbers(summary, trans_threshold_deg: float = 90.0,
                     drift_threshold_ev: float = DRIFT_THRESHOLD_EV,
                     initial_state: int = 1) -> dict:
    """Exits, lifetime and cis/trans branching of trajectories (rows of ``summary.csv``).

    ``n_states`` (:func:`summary_n_states`); ``n_trajectories``; ``n_exits`` (left the
    initial state) and ``n_exits_to`` (``{"S0": k, "S2": k}``: how many of those first exits
    went to each adjacent state; the states the surfaces have only, None for a summary without
    ``first_exit_to``); ``final_states`` (``{"S0": k, "S1": k, ...}``, trajectories ending
    on each state, every state of the surfaces); ``lifetime_fs``,
    ``lifetime_stderr_fs`` (:func:`exponential_lifetime`; None without exits, then
    ``lifetime_note`` says why); ``observed_fs`` (total time on the initial state) and
    ``lifetime_lower95_fs`` (:func:`lifetime_lower_bound`); ``n_on_s0``, ``n_trans`` (final
    torsion >= ``trans_threshold_deg``), ``fraction_trans`` and its 95 % Wilson interval
    ``wilson95_low``/``wilson95_high`` (None when no trajectory ended on S0);
    ``first_exit_fs`` (induction: the earliest exit, None without exits); ``max_drift_ev``
    (largest total-energy drift of any trajectory) and ``n_drift_flagged`` (trajectories whose
    drift exceeds ``drift_threshold_ev``).
    """
    exited = summary["first_exit_fs"].notna()
    exits, stays = summary.loc[exited, "first_exit_fs"], summary.loc[~exited, "end_fs"]
    observed = float(exits.sum() + stays.sum())  # fs on the initial state
    n_states = summary_n_states(summary)
    neighbours = [b for b in (initial_state - 1, initial_state + 1) if 0 <= b < n_states]
    exits_to = None
    if "first_exit_to" in summary:
        exits_to = {f"S{b}": int((summary.loc[exited, "first_exit_to"] == b).sum())
                    for b in neighbours}
    out: dict = {"n_states": n_states, "n_trajectories": int(len(summary)),
                 "n_exits": int(exited.sum()), "n_exits_to": exits_to,
                 "final_states": {f"S{k}": int((summary["final_state"] == k).sum())
                                  for k in range(n_states)},
                 "lifetime_fs": None, "lifetime_stderr_fs": None, "observed_fs": observed,
                 "lifetime_lower95_fs": lifetime_lower_bound(int(exited.sum()), observed)
                 if observed > 0 else None}
    try:
        out["lifetime_fs"], out["lifetime_stderr_fs"] = exponential_lifetime(exits, stays)
    except ValueError as err:
        out["lifetime_note"] = str(err)
    ended = summary[summary["final_state"] == 0]
    n_trans = int((ended["final_torsion_deg"] >= trans_threshold_deg).sum())
    n_on_s0 = int(len(ended))
    low, high = wilson_interval(n_trans, n_on_s0) if n_on_s0 else (None, None)
    out.update(n_on_s0=n_on_s0, n_trans=n_trans,
               fraction_trans=n_trans / n_on_s0 if n_on_s0 else None,
               wilson95_low=low, wilson95_high=high,
               first_exit_fs=float(exits.min()) if len(exits) else None)
    if "max_energy_drift_ev" in summary:
        drift = summary["max_energy_drift_ev"].astype(float)
        out.update(max_drift_ev=float(drift.max()),
                   n_drift_flagged=int((drift > drift_threshold_ev).sum()))
    return out


def analyse_ensemble(out_dir: str | os.PathLike, initial_state: int = 1,
                     trans_threshold_deg: float = 90.0, figures: bool = True) -> dict:
    """Population decay, lifetime and cis/trans branching of an ensemble in ``out_dir``
    (as written by :func:`~fusion.dynamics.hopping.run_ensemble`); writes ``analysis.json``,
    ``population.csv`` (``population``: fraction on ``initial_state``; ``population_s<k>``: on
    state k, every state), ``branching.csv`` and (``figures``) ``torsion``/``population`` PNG +
    SVG."""
    import pandas as pd

    from fusion.train.checkpoint import atomic_write_text

    out = Path(out_dir)
    for name in ("trajectories.csv", "summary.csv"):
        if not (out / name).exists():
            raise FileNotFoundError(f"{out / name} not found: run run_ensemble first")
    traj = pd.read_csv(out / "trajectories.csv")
    summary = pd.read_csv(out / "summary.csv")
    n_states = summary_n_states(summary)
    on_state = {f"population_s{k}": traj["state"] == k for k in range(n_states)}
    population = (traj.assign(population=traj["state"] == initial_state, **on_state)
                  .groupby("time_fs")[["population", *on_state]].mean().reset_index())
    population.to_csv(out / "population.csv", index=False)
    whole = ensemble_numbers(summary, trans_threshold_deg, initial_state=initial_state)
    result: dict = {"n_trajectories": whole["n_trajectories"], "initial_state": initial_state,
                    "n_states": n_states, "n_exits": whole["n_exits"],
                    "n_exits_to": whole["n_exits_to"], "final_states": whole["final_states"],
                    "lifetime_fs": whole["lifetime_fs"],
                    "lifetime_stderr_fs": whole["lifetime_stderr_fs"]}
    if "lifetime_note" in whole:
        result["lifetime_note"] = whole["lifetime_note"]
    result["lifetime_lower95_fs"] = whole["lifetime_lower95_fs"]
    if summary["start"].nunique() > 1:
        # cis and trans decay through different channels: no pooled single exponential
        result.update(lifetime_fs=None, lifetime_stderr_fs=None, lifetime_lower95_fs=None,
                      lifetime_note="several starts: lifetimes are per start only "
                                    "(lifetime_per_start)")
    result["lifetime_per_start"] = {
        str(start): {k: v for k, v in ensemble_numbers(
            group, trans_threshold_deg, initial_state=initial_state).items()
            if k.startswith(("lifetime", "n_exits", "first_exit", "observed"))}
        for start, group in summary.groupby("start", sort=False)}
    rows = []
    for start, group in summary.groupby("start", sort=False):
        numbers = ensemble_numbers(group, trans_threshold_deg, initial_state=initial_state)
        nan_if_none = {k: float("nan") if numbers[k] is None else numbers[k]
                       for k in ("fraction_trans", "wilson95_low", "wilson95_high")}
        rows.append({"start": start, "n_trajectories": numbers["n_trajectories"],
                     "n_on_s0": numbers["n_on_s0"], "n_trans": numbers["n_trans"],
                     "n_cis": numbers["n_on_s0"] - numbers["n_trans"], **nan_if_none})
    branching = pd.DataFrame(rows)
    branching.to_csv(out / "branching.csv", index=False)
    result["branching"] = rows
    if figures:
        result["figures"] = _figures(out, traj, population, result)
    atomic_write_text(out / "analysis.json", json.dumps(result, indent=1, default=float))
    return result


def _figures(out: Path, traj, population, result: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    initial = result.get("initial_state", 1)
    n_states = int(result.get("n_states", 2))
    # states other than the initial one that some trajectory visits, with their markers
    others = [k for k in range(n_states) if k != initial and (traj["state"] == k).any()]
    markers = {k: "." if k < initial else "x" for k in others}
    fig, ax = plt.subplots(figsize=(6, 4))
    colours = {}
    for (start, j), group in traj.groupby(["start", "trajectory"], sort=False):
        colour = colours.setdefault(start, f"C{len(colours)}")
        ax.plot(group["time_fs"], group["torsion_deg"], color=colour, lw=0.8, alpha=0.7,
                label=start if j == 0 else None)
        for k in others:
            on = group[group["state"] == k]
            ax.plot(on["time_fs"], on["torsion_deg"], markers[k], color=colour, ms=1.5)
    marked = "; ".join(f"{'dots' if markers[k] == '.' else 'crosses'}: on S{k}" for k in others)
    ax.set(xlabel="time (fs)", ylabel="C=C torsion (deg)", ylim=(0, 180),
           title="torsion (line: all" + (f"; {marked})" if marked else ")"))
    ax.legend()
    paths += save_png_svg(fig, out / "torsion")
    fig, ax = plt.subplots(figsize=(6, 4))
    per_start = result.get("lifetime_per_start", {})
    styles = {k: ":" if k < initial else "-." for k in others}
    for k, (start, group) in enumerate(traj.groupby("start", sort=False)):
        pop = group.assign(on=group["state"] == initial).groupby("time_fs")["on"].mean()
        numbers = per_start.get(str(start), {})
        text = f"{start}: {numbers.get('n_exits', 0)} of {group['trajectory'].nunique()} left"
        tau, bound = numbers.get("lifetime_fs"), numbers.get("lifetime_lower95_fs")
        if tau is not None:
            text += f", tau {tau:.0f} fs"
            t = pop.index.to_numpy()
            ax.plot(t, np.exp(-t / tau), "--", color=f"C{k}", lw=0.8)
        elif bound is not None:
            text += f", tau > {bound:.0f} fs (95 %)"
        ax.plot(pop.index, pop.to_numpy(), color=f"C{k}", label=text)
        for state in others:  # where the population went
            on = group.assign(on=group["state"] == state).groupby("time_fs")["on"].mean()
            ax.plot(on.index, on.to_numpy(), styles[state], color=f"C{k}", lw=0.8,
                    label=f"{start}: on S{state}")
    ax.set(xlabel="time (fs)", ylabel="fraction of trajectories", ylim=(0, 1.05),
           title=f"S{initial} population per start"
           + (" (thin lines: the other states)" if others else ""))
    ax.legend(fontsize=7)
    paths += save_png_svg(fig, out / "population")
    plt.close("all")
    return paths


def save_png_svg(fig, stem: Path) -> list[str]:
    """``fig`` laid out and saved as ``<stem>.png`` and ``.svg`` (the suite's figure style)."""
    from fusion.analysis.figures import save_figure

    fig.tight_layout()
    return [str(path) for path in save_figure(fig, stem)]
