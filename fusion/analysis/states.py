"""Per-state errors of multi-state runs (stilbene S0/S1): ``results/tables/states.*``.

Reads the tidy ``summary.csv`` (:func:`fusion.analysis.aggregate.summary_table`), whose
multi-state runs carry test metrics ``mae_S<k>``, ``forces_mae_S<k>`` and ``gap_mae_S<k>``
(error of the gap ``E_Sk - E_S0``; see :class:`fusion.train.metrics.ErrorSums`), and writes
one row per (dataset, model, variant, quantity), quantity = each state and each gap, with
mean and sample std (ddof 1) over seeds.

>>> import pandas as pd
>>> rows = [dict(dataset="d", model="mace", variant="baseline", seed=s, n_params=10,
...              split="test", metric=m, value=v, unit="meV")
...         for s, (a, b) in enumerate([(1.0, 3.0), (3.0, 5.0)])
...         for m, v in (("mae_S0", a), ("mae_S1", b), ("gap_mae_S1", b - a))]
>>> table = states_table(pd.DataFrame(rows))
>>> table[["quantity", "energy_mae_mean", "energy_mae_std"]].values.tolist()
[['S0', 2.0, 1.4142135623730951], ['S1', 4.0, 1.4142135623730951], ['S1 − S0', 2.0, 0.0]]
"""

from __future__ import annotations

import html
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.analysis import aggregate as agg
from fusion.analysis.style import sort_key

COLUMNS = ["dataset", "model", "variant", "n_params", "n_seeds", "quantity",
           "energy_mae_mean", "energy_mae_std", "energy_unit",
           "forces_mae_mean", "forces_mae_std", "forces_unit"]


def _mean_std(values: pd.Series) -> tuple[float, float]:
    v = values.to_numpy(dtype=float)
    if v.size == 0:
        return np.nan, np.nan
    return float(v.mean()), agg._std(v)


def states_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, variant, quantity) of the runs with per-state test
    metrics; an empty frame (with :data:`COLUMNS`) when there are none."""
    test = summary[summary["split"] == "test"]
    found = test["metric"].str.extract(agg.STATE_METRIC)
    test = test.assign(kind=found[0], state=pd.to_numeric(found[1])).dropna(subset=["kind"])
    rows = []
    for (dataset, model, variant), runs in test.groupby(["dataset", "model", "variant"],
                                                         sort=False):
        states = sorted(int(s) for s in runs["state"].unique())
        quantities = [(f"S{s}", "mae", "forces_mae", s) for s in states]
        quantities += [(f"S{s} − S0", "gap_mae", None, s) for s in states if s]
        for name, energy_kind, forces_kind, state in quantities:
            at = runs[runs["state"] == state]
            energy = at[at["kind"] == energy_kind]
            forces = at[at["kind"] == forces_kind] if forces_kind else at.iloc[:0]
            e_mean, e_std = _mean_std(energy["value"])
            f_mean, f_std = _mean_std(forces["value"])
            rows.append({
                "dataset": dataset, "model": model, "variant": variant,
                "n_params": int(runs["n_params"].iloc[0]), "n_seeds": int(energy["seed"].nunique()),
                "quantity": name,
                "energy_mae_mean": e_mean, "energy_mae_std": e_std,
                "energy_unit": energy["unit"].iloc[0] if len(energy) else None,
                "forces_mae_mean": f_mean, "forces_mae_std": f_std,
                "forces_unit": forces["unit"].iloc[0] if len(forces) else None,
            })
    table = pd.DataFrame(rows, columns=COLUMNS)
    if len(table):
        order = table.apply(lambda r: (r["dataset"], sort_key(r["model"], r["variant"])), axis=1)
        table = table.iloc[sorted(range(len(table)), key=lambda i: order.iloc[i])]
    return table.reset_index(drop=True)


def _cells(rec: dict) -> list[str]:
    dec = agg._decimals(rec["energy_mae_mean"])
    energy = agg._pm(rec["energy_mae_mean"], rec["energy_mae_std"], dec)
    if rec["energy_unit"]:
        energy += f" {rec['energy_unit']}"
    forces = "–"
    if rec["forces_unit"] and not pd.isna(rec["forces_mae_mean"]):
        fdec = agg._decimals(rec["forces_mae_mean"])
        forces = agg._pm(rec["forces_mae_mean"], rec["forces_mae_std"], fdec)
        forces += f" {rec['forces_unit']}"
    return [rec["dataset"], f"{rec['model']}/{rec['variant']}", f"{rec['n_params']:,}",
            str(rec["n_seeds"]), rec["quantity"], energy, forces]


HEADER = ["dataset", "model", "params", "seeds", "state", "energy MAE (test)",
          "forces MAE (test)"]


def states_markdown(table: pd.DataFrame) -> str:
    if not len(table):
        return "No multi-state runs in this study.\n"
    rows = [_cells(r) for r in table.to_dict("records")]
    return agg.markdown_table(HEADER, rows, align=["l", "l", "r", "r", "l", "r", "r"]) + "\n"


def states_html(table: pd.DataFrame) -> str:
    from fusion.analysis.front_page import _page

    title = "Per-state test errors (mean ± std over seeds)"
    if not len(table):
        return _page(title, "<p>No multi-state runs in this study.</p>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>"
        for r in table.to_dict("records")
    )
    note = ("<p>S1 − S0 is the error of the predicted excitation energy E(S1) − E(S0) of "
            "each test structure; forces MAE per Cartesian component.</p>")
    return _page(title, f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                        f"{note}")


def main_states(summary_csv: str | PathLike, out_dir: str | PathLike) -> dict[str, Path]:
    """``summary.csv`` -> ``states.csv``, ``states.md``, ``states.html`` in ``out_dir``."""
    table = states_table(agg.read_summary(summary_csv))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "states.csv", "md": out / "states.md", "html": out / "states.html"}
    table.to_csv(paths["csv"], index=False)
    paths["md"].write_text(states_markdown(table), encoding="utf-8")
    paths["html"].write_text(states_html(table), encoding="utf-8")
    return paths
