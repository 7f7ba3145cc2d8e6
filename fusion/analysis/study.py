"""The committed study (``results/study/``): real benchmarks next to published numbers.

``fusion study`` (run by ``make study`` after the workflow of ``config/study.yaml``) copies
each run's ``metrics.json`` and ``log.csv`` (no weights) into ``results/study/train/``,
aggregates them into ``results/study/tables/`` (summary, comparison, front page), draws
``results/study/figures/`` and writes the two study tables, ``study.{md,csv,rst,html}``:

- **rMD17** (the author's split files; seeds 0-2 = splits 1-3): per molecule and variant,
  energy and force test MAE (meV, meV/Å; mean ± std over splits), parameters, the paired
  change against mace/baseline, and MACE's published row (Batatia et al. 2022, Table 1).
- **acac** (train 300 K): per test set and variant, energy and force test RMSE (the metric
  the MACE paper reports, Table 3), paired changes, published rows where they exist.

Each table ends with one sentence, computed from the numbers, on how far our baseline is
from the published one, and one on whether the fusion variants win (paired over splits or
seeds: "better" only when the mean paired change is below zero by more than its standard
deviation).
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.analysis import literature as lit
from fusion.analysis.aggregate import BASELINE, COMPOSITION, _paired, _std, read_summary

__all__ = ["grid_runs", "rmd17_table", "acac_table", "study_markdown", "publish_study"]

# What a published row lacks against ours, said once under each table.
WHY_FAR = ("the published MACE has 256 channels, L = 2 messages and ~2.8M parameters, trained "
           "for ~1,000+ epochs on a GPU in float64; ours have {params} parameters ({model}), "
           "trained for {epochs} epochs in float32 on 2 CPU cores")


def grid_runs(config: Mapping) -> list[tuple[str, str, str, int]]:
    """(dataset, model, variant, seed) of every run a workflow config asks for, with the
    composition baseline at seed 0 (as the workflow's ``grid()``)."""
    runs = []
    overrides = config.get("dataset_overrides", {}) or {}
    for dataset in config["datasets"]:
        layer = overrides.get(dataset, {}) or {}
        models = layer.get("models", config["models"])
        seeds = layer.get("seeds", config["seeds"])
        runs += [(dataset, m, v, int(s)) for m, vs in models.items() for v in vs for s in seeds]
    if config.get("composition", True):
        runs += [(d, COMPOSITION, BASELINE, 0) for d in config["datasets"]]
    return runs


def _errors(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    sel = summary[(summary["split"] == "test") & (summary["metric"] == metric)]
    return sel[["dataset", "model", "variant", "seed", "n_params", "value"]]


def _series(table: pd.DataFrame, dataset: str, model: str, variant: str) -> pd.Series:
    sel = table[(table["dataset"] == dataset) & (table["model"] == model)
                & (table["variant"] == variant)]
    return sel.set_index("seed")["value"].sort_index()


def _rows(summary: pd.DataFrame, datasets: list[str], energy: str, forces: str,
          label) -> list[dict]:
    e_table, f_table = _errors(summary, energy), _errors(summary, forces)
    rows = []
    for dataset in datasets:
        sel = e_table[e_table["dataset"] == dataset]
        pairs = sorted({(m, v) for m, v in zip(sel["model"], sel["variant"])
                        if m != COMPOSITION}, key=lambda mv: (mv[1] != BASELINE, mv[1]))
        for model, variant in pairs:
            e = _series(e_table, dataset, model, variant)
            f = _series(f_table, dataset, model, variant).dropna()
            params = sel[(sel["model"] == model) & (sel["variant"] == variant)]["n_params"]
            row = {"benchmark": label(dataset), "dataset": dataset, "model": model,
                   "variant": variant, "source": "this work", "n_params": int(params.iloc[0]),
                   "n_runs": len(e), "energy": float(e.mean()), "energy_std": _std(e.values),
                   "forces": float(f.mean()) if len(f) else math.nan,
                   "forces_std": _std(f.values) if len(f) else math.nan}
            if variant != BASELINE:
                d_e = _paired(e, _series(e_table, dataset, model, BASELINE))
                d_f = _paired(f, _series(f_table, dataset, model, BASELINE).dropna())
                row.update({"energy_change_pct": d_e["pct"], "energy_change_pct_std":
                            d_e["pct_std"], "forces_change_pct": d_f["pct"],
                            "forces_change_pct_std": d_f["pct_std"], "n_pairs": d_e["n"]})
            rows.append(row)
        published: dict[str, dict] = {}
        for entry in lit.literature_for(dataset):
            if entry.metric not in (energy, forces):
                continue
            row = published.setdefault(entry.citation, {
                "benchmark": label(dataset), "dataset": dataset, "model": entry.model,
                "variant": "published", "source": f"{entry.citation}: {entry.note}"})
            row["forces" if entry.metric == forces else "energy"] = entry.value
        rows += list(published.values())
    return rows


def rmd17_table(summary: pd.DataFrame) -> pd.DataFrame:
    """rMD17 rows (test MAE; see module docstring). Empty without rMD17 results."""
    datasets = sorted(d for d in summary["dataset"].unique() if lit.rmd17_molecule(d))
    return pd.DataFrame(_rows(summary, datasets, "mae", "forces_mae",
                              lambda d: f"rMD17 {lit.rmd17_molecule(d)}"))


def acac_table(summary: pd.DataFrame) -> pd.DataFrame:
    """acac rows (test RMSE; see module docstring). Empty without acac results."""
    order = ["acac-300K", "acac-600K", "acac-H-transfer", "acac-dihedral"]
    present = set(summary["dataset"])
    datasets = [d for d in order if d in present]
    return pd.DataFrame(_rows(summary, datasets, "rmse", "forces_rmse",
                              lambda d: f"acac test {d.removeprefix('acac-')}"))


def _pm(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return ""
    digits = 1 if abs(mean) >= 10 else 2
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if np.isfinite(std) else "")


def _change(row: Mapping, key: str) -> str:
    mean, std = row.get(f"{key}_change_pct", math.nan), row.get(f"{key}_change_pct_std", math.nan)
    if not isinstance(mean, float) or not np.isfinite(mean):
        return ""
    return f"{mean:+.1f} ± {std:.1f} %" if np.isfinite(std) else f"{mean:+.1f} %"


def _markdown(table: pd.DataFrame, metric: str) -> list[str]:
    head = (f"| benchmark | model | params | runs | energy {metric} (meV) | forces {metric} "
            "(meV/Å) | Δ energy | Δ forces |")
    out = [head, "|---|---|---|---|---|---|---|---|"]
    for row in table.to_dict("records"):
        ours = row["source"] == "this work"
        name = f"{row['model']}/{row['variant']}" if ours else f"{row['model']} ({row['source']})"
        params = f"{int(row['n_params']):,}" if ours else ""
        runs = str(int(row["n_runs"])) if ours else ""
        out.append(f"| {row['benchmark']} | {name} | {params} | {runs} | "
                   f"{_pm(row['energy'], row.get('energy_std', math.nan))} | "
                   f"{_pm(row.get('forces', math.nan), row.get('forces_std', math.nan))} | "
                   f"{_change(row, 'energy')} | {_change(row, 'forces')} |")
    return out


def _verdicts(table: pd.DataFrame) -> list[str]:
    """One sentence per fusion variant: better, worse or within noise, paired."""
    out = []
    ours = table[(table["source"] == "this work") & (table["variant"] != BASELINE)]
    for variant, group in ours.groupby("variant", sort=True):
        for key, what in (("energy", "energy"), ("forces", "force")):
            col, std = f"{key}_change_pct", f"{key}_change_pct_std"
            if col not in group or group[col].isna().all():
                continue
            better = group[(group[col] < 0) & (group[col].abs() > group[std])]["benchmark"]
            worse = group[(group[col] > 0) & (group[col].abs() > group[std])]["benchmark"]
            mean = group[col].mean()
            out.append(f"mace/{variant}, {what} error: {mean:+.1f} % on average against the "
                       f"baseline; better beyond one paired std on {len(better)} of "
                       f"{len(group)} ({', '.join(better) or 'none'}), worse on {len(worse)} "
                       f"({', '.join(worse) or 'none'}).")
    return out


def _gap(table: pd.DataFrame) -> str:
    """Our baseline's errors as multiples of the published ones (range over rows)."""
    ratios = []
    for _, group in table.groupby("dataset"):
        base = group[(group["source"] == "this work") & (group["variant"] == BASELINE)]
        pub = group[group["variant"] == "published"]
        if base.empty or pub.empty:
            continue
        for key in ("energy", "forces"):
            a, b = base.iloc[0].get(key, math.nan), pub.iloc[0].get(key, math.nan)
            if np.isfinite(a) and np.isfinite(b) and b > 0:
                ratios.append(a / b)
    if not ratios:
        return "No published number exists for these test sets."
    return (f"Our baseline's errors are {min(ratios):.0f}-{max(ratios):.0f}x the published "
            "MACE's")


def study_markdown(summary: pd.DataFrame, epochs: Mapping[str, int] | None = None,
                   model: str = "") -> str:
    """Both study tables as markdown with their sentences (see module docstring).
    ``epochs``: training epochs per dataset; ``model``: our model's size in words."""
    epochs = dict(epochs or {})
    out = []
    for title, table, metric in (
        ("rMD17 (the author's split files; mean ± std over splits 1-3; test MAE)",
         rmd17_table(summary), "MAE"),
        ("Acetylacetone (trained on 300 K; mean ± std over seeds; test RMSE, as published)",
         acac_table(summary), "RMSE"),
    ):
        if table.empty:
            continue
        datasets = [d for d in table["dataset"].unique()]
        n_epochs = sorted({epochs[d] for d in datasets if d in epochs})
        ours = table[table["source"] == "this work"]["n_params"]
        params = (f"{int(ours.min()):,}-{int(ours.max()):,}" if ours.min() != ours.max()
                  else f"{int(ours.min()):,}")
        why = WHY_FAR.format(epochs="/".join(str(e) for e in n_epochs) or "a few",
                             params=params, model=model or "see config")
        out += [f"### {title}", "", *_markdown(table, metric), "",
                f"{_gap(table)}: {why}. Δ: paired change against mace/baseline (negative = "
                "fusion better)."]
        out += [""] + [f"- {line}" for line in _verdicts(table)] + [""]
    return "\n".join(out) + "\n"


def _html(markdown: str) -> str:
    import html

    body, in_table = [], False
    for line in markdown.splitlines():
        if line.startswith("|"):
            if set(line.replace("|", "").strip()) <= {"-"}:
                continue
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            tag = "th" if not in_table else "td"
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("### "):
            body.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("- "):
            body.append(f"<p>• {html.escape(line[2:])}</p>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:70em} table{border-collapse:collapse} "
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} "
             "td:first-child,td:nth-child(2){text-align:left}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>fusion-bench study"
            f"</title><style>{style}</style></head><body><h2>Study: real benchmarks</h2>"
            + "\n".join(body) + "</body></html>\n")


def _rst(markdown: str) -> str:
    """The study tables for the report's landing page (list-tables, as the front page)."""
    out, rows = [], []

    def flush():
        if rows:
            out.extend([".. list-table::", "   :header-rows: 1", ""])
            for cells in rows:
                out.append("   * - " + (cells[0] or " "))
                out.extend("     - " + (c or " ") for c in cells[1:])
            out.append("")
            rows.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            if not set(line.replace("|", "").strip()) <= {"-"}:
                rows.append([c.strip().replace("*", "\\*") for c in line.strip("|").split("|")])
            continue
        flush()
        if line.startswith("### "):
            out += [f"**{line[4:]}**", ""]
        elif line.strip():
            out += [line.replace("*", "\\*"), ""]
    flush()
    return "\n".join(out) + "\n"


def publish_study(config: Mapping, results: str | Path, out_dir: str | Path,
                  wall_seconds: float | None = None, log=print) -> dict[str, Path]:
    """Copy the study's runs from ``results`` into ``out_dir`` and write its tables and
    figures (module docstring). Every run of the config must be finished: a missing
    ``metrics.json`` is an error listing them (nothing is copied then)."""
    from fusion.analysis.aggregate import main_aggregate
    from fusion.analysis.figures import main_figures
    from fusion.data.registry import dataset_card
    from fusion.train.provenance import provenance

    results, out = Path(results), Path(out_dir)
    runs = grid_runs(config)
    folder = {run: Path("train", run[0], run[1], run[2], f"seed-{run[3]}") for run in runs}
    missing = [str(results / f / "metrics.json") for f in folder.values()
               if not (results / f / "metrics.json").is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} run(s) of the study are not finished, e.g. "
                                f"{missing[0]}; run the workflow first")
    if (out / "train").exists():
        shutil.rmtree(out / "train")
    metrics, logs = [], []
    for run, rel in folder.items():
        (out / rel).mkdir(parents=True, exist_ok=True)
        for name in ("metrics.json", "log.csv"):
            if (results / rel / name).is_file():
                shutil.copy2(results / rel / name, out / rel / name)
        metrics.append(out / rel / "metrics.json")
        if run[1] != COMPOSITION and (out / rel / "log.csv").is_file():
            logs.append(out / rel / "log.csv")
    paths = main_aggregate(metrics, out / "tables")
    summary = read_summary(paths["summary"])
    epochs = {}
    for dataset in config["datasets"]:
        source = dataset_card(dataset).get("trained_as", dataset)
        layer = (config.get("dataset_overrides", {}) or {}).get(source, {}) or {}
        epochs[dataset] = layer.get("training", {}).get("epochs",
                                                        config["training"].get("epochs"))
    hp = config.get("hparams", {}).get("mace", {}).get(BASELINE, {})
    model = (f"mace-torch MACE, {hp.get('num_channels', '?')} channels, L = "
             f"{hp.get('max_L', '?')} messages" if hp else "")
    text = study_markdown(summary, epochs, model)
    tables = {"study_md": out / "tables" / "study.md", "study_html": out / "tables" / "study.html",
              "study_rst": out / "tables" / "study.rst", "study_csv": out / "tables" / "study.csv"}
    tables["study_md"].write_text(text, encoding="utf-8")
    tables["study_html"].write_text(_html(text), encoding="utf-8")
    tables["study_rst"].write_text(_rst(text), encoding="utf-8")
    pd.concat([rmd17_table(summary), acac_table(summary)]).to_csv(tables["study_csv"],
                                                                 index=False)
    main_figures(paths["summary"], logs, out / "figures")
    record = {"config": config, "n_runs": len(runs), "wall_seconds": wall_seconds,
              "publisher": provenance()}
    (out / "study.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
    log(f"study: {len(runs)} runs -> {out}; tables {tables['study_md']}")
    return {**paths, **tables}


def publish_from_files(config_path: str | Path, results: str | Path, out_dir: str | Path,
                       wall_seconds: float | None = None) -> dict[str, Path]:
    """:func:`publish_study` with the config read from a YAML file."""
    import yaml

    config = yaml.safe_load(Path(config_path).read_text())
    return publish_study(config, results, out_dir, wall_seconds)


