"""The report's front page: one table of every result, literature beside it, and provenance.

``front_page_table(comparison)`` turns ``comparison.csv`` into one row per (dataset, target,
model, variant), where the target is the graph-level quantity (a QM9 target such as ``U0``,
or ``energy`` for force-field datasets) or ``forces``. Columns (``FRONT_PAGE_COLUMNS``):
test MAE mean ± sample std over seeds in ``unit`` (meV, meV/Å, or the QM9 target's unit),
trainable parameters, training wall time per run (s, mean over seeds), the paired change vs
the same model's baseline in % (mean ± std of per-seed relative differences, seeds common to
both), and ``best`` (lowest mean among our rows of that dataset and target). Rows with
``source`` other than ``"this work"`` are published literature values.

``provenance_table(metrics_paths)`` gives one row per run: config (the run spec), git commit,
package versions, device, CPU, GPU, host and wall time, from each ``metrics.json``'s
``provenance`` block (older files without a field show ``None``).

Renderers: ``*_markdown`` (GitHub markdown), ``*_html`` (a standalone page without scripts,
shown inside the Snakemake report) and ``front_page_rst`` (the report's landing page).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from fusion.analysis import aggregate as agg
from fusion.analysis import literature as lit
from fusion.analysis.style import label as style_label
from fusion.analysis.style import sort_key, style_for

FRONT_PAGE_COLUMNS = [
    "dataset",
    "target",
    "model",
    "variant",
    "source",
    "n_params",
    "n_seeds",
    "unit",
    "test_mae_mean",
    "test_mae_std",
    "delta_vs_baseline_mean [%]",
    "delta_vs_baseline_std [%]",
    "n_paired_seeds",
    "train_wall_seconds_mean [s]",
    "best",
]
PROVENANCE_COLUMNS = [
    "dataset",
    "model",
    "variant",
    "seed",
    "git_commit",
    "git_dirty",
    "device",
    "cpu",
    "gpu",
    "hostname",
    "threads",
    "python",
    "torch",
    "e3nn",
    "mace-torch",
    "started",
    "finished",
    "wall_seconds",
    "config",
]
FORCES = "forces"


def graph_target(dataset: str) -> str:
    """Name of a dataset's graph-level target: the QM9 target (``U0``), ``energy``, or for
    data labelled with several electronic states ``energy (S0, S1)`` (errors pooled over the
    states; per-state errors are in ``states.md``).

    >>> graph_target("qm9-U0"), graph_target("xtb-md-ethanol"), graph_target("stilbene-tddft")
    ('U0', 'energy', 'energy (S0, S1)')
    """
    from fusion.data.registry import dataset_keys, dataset_states

    states = dataset_states(dataset) if dataset in dataset_keys() else []
    if len(states) > 1:
        return f"energy ({', '.join(states)})"
    return lit.qm9_target(dataset) or "energy"


def front_page_table(comparison: pd.DataFrame) -> pd.DataFrame:
    """Long table (``FRONT_PAGE_COLUMNS``) from ``comparison_table``'s output."""
    if comparison is None or len(comparison) == 0:
        raise ValueError("front_page_table: the comparison table is empty")
    missing = [c for c in agg.COMPARISON_COLUMNS if c not in comparison.columns]
    if missing:
        raise ValueError(f"front_page_table: comparison table lacks columns {missing}")
    rows = []
    metrics = (
        ("graph", "y_unit", agg.C_MAE, agg.C_MAE_STD, agg.C_DP, agg.C_DP_STD),
        (FORCES, "forces_unit", agg.C_F, agg.C_F_STD, agg.C_FDP, agg.C_FDP_STD),
    )
    for rec in comparison.to_dict("records"):
        ours = rec["source"] == agg.OURS
        for kind, unit_col, mean, std, dpct, dpct_std in metrics:
            if rec.get(mean) is None or pd.isna(rec.get(mean)):
                continue
            rows.append(
                {
                    "dataset": rec["dataset"],
                    "target": FORCES if kind == FORCES else graph_target(rec["dataset"]),
                    "model": rec["model"],
                    "variant": rec["variant"],
                    "source": rec["source"],
                    "n_params": rec["n_params"],
                    "n_seeds": rec["n_seeds"],
                    "unit": rec[unit_col],
                    "test_mae_mean": rec[mean],
                    "test_mae_std": rec[std],
                    "delta_vs_baseline_mean [%]": rec[dpct],
                    "delta_vs_baseline_std [%]": rec[dpct_std],
                    "n_paired_seeds": rec[agg.C_NPAIR],
                    "train_wall_seconds_mean [s]": rec.get(agg.C_WALL, math.nan),
                    "best": False,
                    "_ours": ours,
                }
            )
    out = pd.DataFrame(rows)
    target_rank = out["target"].map(lambda t: 1 if t == FORCES else 0)
    out = (
        out.assign(_target_rank=target_rank)
        .assign(
            _order=[
                (not o,) + sort_key(m, v)
                for o, m, v in zip(out["_ours"], out["model"], out["variant"])
            ]
        )
        .sort_values(["dataset", "_target_rank", "_order"], kind="stable")
    )
    ours = out["_ours"]
    best = out[ours].groupby(["dataset", "target"])["test_mae_mean"].transform("min")
    out.loc[ours, "best"] = out.loc[ours, "test_mae_mean"] == best
    out["best"] = out["best"].astype(bool)
    out = out.drop(columns=["_ours", "_target_rank", "_order"])
    for col in ("n_params", "n_seeds", "n_paired_seeds"):
        out[col] = out[col].astype("Int64")
    return out[FRONT_PAGE_COLUMNS].reset_index(drop=True)


# --------------------------------------------------------------------------- cell text


def _name(rec: dict) -> str:
    if rec["source"] != agg.OURS:
        return f"{agg_label(rec['model'])} (literature)"
    return style_label(rec["model"], rec["variant"])


def agg_label(model: str) -> str:
    return style_label(model, agg.BASELINE).replace(" baseline", "")


def _cells(rec: dict) -> dict[str, str]:
    """Display text of one front-page row."""
    published = rec["source"] != agg.OURS
    dec = agg._decimals(rec["test_mae_mean"])
    std = rec["test_mae_std"]
    if std is not None and not pd.isna(std) and std > 0:
        dec = min(6, max(dec, agg._decimals(std, 1)))  # the std keeps one significant digit
    error = (
        agg._num(rec["test_mae_mean"], dec)
        if published
        else agg._pm(rec["test_mae_mean"], rec["test_mae_std"], dec)
    )
    delta = agg._pm(
        rec["delta_vs_baseline_mean [%]"], rec["delta_vs_baseline_std [%]"], 1, signed=True
    )
    if delta != "–":
        delta += " %"
        npair, nseeds = rec["n_paired_seeds"], rec["n_seeds"]
        if not pd.isna(npair) and not pd.isna(nseeds) and npair != nseeds:
            delta += f" (n={int(npair)})"
    wall = rec["train_wall_seconds_mean [s]"]
    return {
        "dataset": rec["dataset"],
        "target": rec["target"],
        "model": _name(rec),
        "error": f"{error} {rec['unit']}",
        "delta": delta,
        "params": "–" if pd.isna(rec["n_params"]) else f"{int(rec['n_params']):,}",
        "seeds": "–" if pd.isna(rec["n_seeds"]) else str(int(rec["n_seeds"])),
        "time": "–" if wall is None or pd.isna(wall) else _duration(float(wall)),
        "source": rec["source"] if published else agg.OURS,
    }


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


HEADER = {
    "dataset": "dataset",
    "target": "target",
    "model": "model / variant",
    "error": "test MAE (mean ± std)",
    "delta": "Δ vs own baseline",
    "params": "params",
    "seeds": "seeds",
    "time": "train time / run",
    "source": "source",
}
NOTE = (
    "Test-set MAE, mean ± sample std over seeds. Δ vs own baseline: paired by seed, "
    "mean ± std of 100·(variant − baseline)/baseline over the seeds both have; negative = "
    "the variant is more accurate. ★ = lowest mean error of our runs for that dataset and "
    "target. Rows marked (literature) are published numbers, not produced by this "
    "workflow; they used the authors' code, data sizes and training budgets."
)


def front_page_markdown(front: pd.DataFrame) -> str:
    """Markdown: one table, best rows bold with ★, literature rows labelled."""
    if front is None or len(front) == 0:
        raise ValueError("front_page_markdown: the front-page table is empty")
    keys = list(HEADER)
    rows, bold = [], []
    for rec in front.to_dict("records"):
        cells = _cells(rec)
        if rec["best"]:
            cells["model"] = "★ " + cells["model"]
        rows.append([cells[k] for k in keys])
        bold.append(bool(rec["best"]))
    align = ["l", "l", "l", "r", "r", "r", "r", "r", "l"]
    table = agg.markdown_table([HEADER[k] for k in keys], rows, align, bold)
    return "# Results at a glance\n\n" + NOTE + "\n\n" + table + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;font-size:14px;margin:12px;
color:#222}
table{border-collapse:collapse;width:100%}
th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{background:#f3f3f3;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.best td{font-weight:600;background:#fff8d6}
tr.lit td{color:#555;font-style:italic;background:#f6f6fb}
span.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}
span.tag{font-size:11px;border:1px solid #889;border-radius:3px;padding:0 3px;margin-left:4px}
p.note{color:#444;max-width:70em}
details pre{white-space:pre-wrap;font-size:12px;margin:0}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h2>{html.escape(title)}</h2>{body}</body></html>\n"
    )


def front_page_html(front: pd.DataFrame, title: str = "Results at a glance") -> str:
    """Standalone HTML page (no scripts) of the front-page table."""
    if front is None or len(front) == 0:
        raise ValueError("front_page_html: the front-page table is empty")
    keys = list(HEADER)
    numeric = {"error", "delta", "params", "seeds", "time"}
    lines = ["<table><thead><tr>"]
    lines += [f"<th>{html.escape(HEADER[k])}</th>" for k in keys]
    lines.append("</tr></thead><tbody>")
    for rec in front.to_dict("records"):
        cells = {k: html.escape(v) for k, v in _cells(rec).items()}
        published = rec["source"] != agg.OURS
        color = style_for(rec["model"], rec["variant"]).color
        cells["model"] = f"<span class='swatch' style='background:{color}'></span>" + (
            cells["model"]
        )
        if published:
            cells["model"] += "<span class='tag'>literature</span>"
        if rec["best"]:
            cells["model"] = "★ " + cells["model"]
        css = "best" if rec["best"] else ("lit" if published else "")
        lines.append(f"<tr class='{css}'>")
        lines += [
            f"<td class='num'>{cells[k]}</td>" if k in numeric else f"<td>{cells[k]}</td>"
            for k in keys
        ]
        lines.append("</tr>")
    lines.append("</tbody></table>")
    body = f"<p class='note'>{html.escape(NOTE)}</p>" + "".join(lines)
    return _page(title, body)


def _rst_cell(text: str) -> str:
    escaped = text.replace("\\", "\\\\")
    for char in "*`|_[]":
        escaped = escaped.replace(char, "\\" + char)
    return escaped or "–"


def front_page_rst(front: pd.DataFrame, n_runs: int, preface: str = "") -> str:
    """reStructuredText for the report's landing page: the study's question in one table.

    One row per dataset, target and model family that has fusion variants: the baseline's
    error and parameters next to each fusion variant's, and the paired change. Snakemake
    centres the landing page beside the workflow graph in a narrow column, and a page taller
    than the window loses its top, so everything else (composition, literature, train
    times, families without a fusion variant) is in the "1 Front page" table.
    """
    if front is None or len(front) == 0:
        raise ValueError("front_page_rst: the front-page table is empty")
    ours = front[front["source"] == agg.OURS]
    # ``preface``: the committed study's tables (results/study/tables/study.rst), shown first.
    out = [] if not preface else [
        "**The committed study** (real benchmark data, ``make study``; results/study/):",
        "", preface.rstrip(), "", "**This run:**", ""]
    out += [
        "**fusion-bench: results at a glance.** Does a **fusion block** lower an equivariant "
        f"network's test error without adding parameters? From {n_runs} training runs: each "
        "fusion variant against its own baseline (test MAE, mean ± std over seeds; Δ paired "
        "by seed, negative = fusion better).",
        "",
    ]
    rows = []
    for (dataset, target, model), group in ours.groupby(
        ["dataset", "target", "model"], sort=False
    ):
        base = group[group["variant"] == agg.BASELINE]
        if base.empty:
            continue
        base_cells = _cells(base.iloc[0].to_dict())
        for rec in group[group["variant"] != agg.BASELINE].to_dict("records"):
            cells = _cells(rec)
            rows.append([
                dataset, target, f"{agg_label(model)}: {rec['variant']}",
                f"{base_cells['error']} ({base_cells['params']})",
                f"{cells['error']} ({cells['params']})",
                cells["delta"],
            ])
    if rows:
        out += [".. list-table::", "   :header-rows: 1", ""]
        header = ["dataset", "target", "model: variant", "baseline (params)",
                  "fusion (params)", "Δ"]
        for cells in [header, *rows]:
            cells = [_rst_cell(str(c)) for c in cells]
            out.append("   * - " + cells[0])
            out.extend("     - " + c for c in cells[1:])
        out.append("")
    else:
        out += ["No fusion variant was trained in this study; see *1 Front page*.", ""]
    out += [
        "**How to read it.** " + _rst_cell(NOTE),
        "",
        "**Where to go next** (menu on the left): *1 Front page*: every model and variant "
        "with the composition baseline, literature values, train times and ★ for the best; "
        "*2 Dataset …*: error vs parameters and learning curves per dataset, per-molecule "
        "errors; *3 Model …*: every variant of one model family; *4 Kernels*: kernel speed "
        "benchmarks; *5 Dynamics*: stilbene datasets; *6 Provenance*: git commit, package "
        "versions, device and wall time of every run; *7 All numbers*: the tidy and "
        "comparison tables.",
    ]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- provenance


def provenance_table(metrics_paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run (``PROVENANCE_COLUMNS``) from the metrics files' provenance blocks.

    ``wall_seconds`` (s) is the provenance block's, else ``train.wall_seconds``; ``config``
    is the run's ``hyperparameters`` (the run spec) as compact JSON. A file that is not valid
    JSON or has no ``provenance`` object raises ``ValueError`` naming it.
    """
    rows = []
    for path in map(Path, metrics_paths):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read metrics file ({exc})") from None
        prov = record.get("provenance")
        if not isinstance(prov, dict):
            raise ValueError(
                f"{path}: key 'provenance' must be an object (see fusion/train/provenance.py), "
                f"got {type(prov).__name__}"
            )
        versions = prov.get("versions") if isinstance(prov.get("versions"), dict) else {}
        wall = prov.get("wall_seconds")
        if wall is None and isinstance(record.get("train"), dict):
            wall = record["train"].get("wall_seconds")
        rows.append(
            {
                "dataset": record.get("dataset"),
                "model": record.get("model"),
                "variant": record.get("variant"),
                "seed": record.get("seed"),
                "git_commit": prov.get("git_commit") or None,
                "git_dirty": prov.get("git_dirty"),
                "device": prov.get("device") or None,
                "cpu": prov.get("cpu"),
                "gpu": prov.get("gpu"),
                "hostname": prov.get("hostname") or None,
                "threads": prov.get("threads"),
                "python": versions.get("python"),
                "torch": versions.get("torch"),
                "e3nn": versions.get("e3nn"),
                "mace-torch": versions.get("mace-torch"),
                "started": prov.get("started") or None,
                "finished": prov.get("finished") or None,
                "wall_seconds": wall,
                "config": json.dumps(record.get("hyperparameters", {}), sort_keys=True),
            }
        )
    if not rows:
        raise ValueError("provenance_table: no metrics files given")
    out = pd.DataFrame(rows, columns=PROVENANCE_COLUMNS)
    order = [(str(d),) + sort_key(str(m), str(v)) + (s,) for d, m, v, s in zip(
        out["dataset"], out["model"], out["variant"], out["seed"]
    )]
    return out.assign(_o=order).sort_values("_o", kind="stable").drop(columns="_o").reset_index(
        drop=True
    )


def provenance_html(prov: pd.DataFrame) -> str:
    """Standalone HTML page of the provenance table; each run's config folds out."""
    if prov is None or len(prov) == 0:
        raise ValueError("provenance_html: the provenance table is empty")
    shown = [c for c in PROVENANCE_COLUMNS if c != "config"]
    lines = ["<table><thead><tr>"]
    lines += [f"<th>{html.escape(c)}</th>" for c in shown + ["config"]]
    lines.append("</tr></thead><tbody>")
    for rec in prov.to_dict("records"):
        lines.append("<tr>")
        for col in shown:
            value = rec[col]
            if col == "git_commit" and isinstance(value, str):
                value = value[:12]
            if col == "wall_seconds" and value is not None and not pd.isna(value):
                value = _duration(float(value))
            text = "–" if value is None or (isinstance(value, float) and pd.isna(value)) else value
            lines.append(f"<td>{html.escape(str(text))}</td>")
        config = json.dumps(json.loads(rec["config"]), indent=1, sort_keys=True)
        lines.append(
            f"<td><details><summary>run spec</summary><pre>{html.escape(config)}</pre>"
            "</details></td></tr>"
        )
    lines.append("</tbody></table>")
    note = (
        "One row per training run: the git commit of the code (dirty = uncommitted changes), "
        "package versions, the device (GPU name, else CPU model), host, torch threads, start "
        "and end (UTC) and wall time of the whole run process (imports, data, training, "
        "evaluation; the front page's train time is the training loop alone); 'run spec' is the "
        "exact configuration the run was trained with. '–': not recorded by the code that "
        "wrote that metrics.json."
    )
    return _page("Provenance of every run", f"<p class='note'>{html.escape(note)}</p>" + "".join(
        lines
    ))
