"""Aggregate ``metrics.json`` files into the study's tables.

Pipeline (see ``docs/results.md`` for how to read the outputs)::

    results/train/<dataset>/<model>/<variant>/seed-<seed>/metrics.json
        -> collect_metrics()    wide DataFrame, one row per run (validated)
        -> summary_table()      results/tables/summary.csv (tidy, one value per row)
        -> comparison_table()   results/tables/comparison.csv (one row per model variant)
        -> comparison_markdown() results/tables/comparison.md

``main_aggregate(metrics_paths, out_dir)`` does all of it and is what the workflow calls.

Statistics: means over seeds; ``std`` is the sample standard deviation (ddof=1), empty
for a single seed. Differences to the baseline are *paired*: for a fusion variant and the
baseline of the same model on the same dataset, only seeds present in both are used, and
the table gives the mean and std of the per-seed differences ``variant - baseline`` (and
of the per-seed relative differences ``100 (variant - baseline) / baseline``, in %).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from fusion.analysis import literature as lit
from fusion.analysis.style import label as style_label
from fusion.analysis.style import sort_key

SCHEMA_VERSION = 1
SUMMARY_COLUMNS = [
    "dataset",
    "model",
    "variant",
    "seed",
    "n_params",
    "split",
    "metric",
    "value",
    "unit",
]
ERROR_SPLITS = ("test", "val")
ERROR_METRICS = ("mae", "rmse", "mae_per_atom", "forces_mae", "forces_rmse")
# metrics.json "units" key that gives each error metric its unit
_UNIT_KEY = {
    "mae": "y",
    "rmse": "y",
    "mae_per_atom": "y_per_atom",
    "forces_mae": "forces",
    "forces_rmse": "forces",
}
# Per-state errors of multi-state runs (fusion.train.metrics.ErrorSums): mae_S0, forces_mae_S1,
# gap_mae_S1 (error of E_S1 - E_S0), ...
STATE_METRIC = re.compile(r"^(mae|rmse|forces_mae|forces_rmse|gap_mae|gap_rmse)_S(\d+)$")


def metric_unit_key(metric: str) -> str:
    """The ``metrics.json`` ``units`` key of an error metric (``y``, ``y_per_atom``, ``forces``)."""
    if metric in _UNIT_KEY:
        return _UNIT_KEY[metric]
    return "forces" if metric.startswith("forces") else "y"


# (split/section, metric, unit) of the cost metrics copied into the summary
COST_METRICS = (
    ("train", "seconds_per_epoch", "s"),
    ("train", "wall_seconds", "s"),
    ("inference", "structures_per_second", "1/s"),
)
COMPOSITION = "composition"
BASELINE = "baseline"
LITERATURE = "literature"
OURS = "this work"

_SEED_DIR = re.compile(r"^seed-(\d+)$")

# comparison.csv columns; "[y_unit]" / "[forces_unit]" mean "in the unit given in that
# column of the same row".
C_MAE = "test_mae_mean [y_unit]"
C_MAE_STD = "test_mae_std [y_unit]"
C_D = "delta_mae_vs_baseline_mean [y_unit]"
C_D_STD = "delta_mae_vs_baseline_std [y_unit]"
C_DP = "delta_mae_vs_baseline_mean [%]"
C_DP_STD = "delta_mae_vs_baseline_std [%]"
C_NPAIR = "n_paired_seeds"
C_F = "test_forces_mae_mean [forces_unit]"
C_F_STD = "test_forces_mae_std [forces_unit]"
C_FD = "delta_forces_mae_vs_baseline_mean [forces_unit]"
C_FD_STD = "delta_forces_mae_vs_baseline_std [forces_unit]"
C_FDP = "delta_forces_mae_vs_baseline_mean [%]"
C_FDP_STD = "delta_forces_mae_vs_baseline_std [%]"
C_SPE = "seconds_per_epoch_mean [s]"
C_SPS = "structures_per_second_mean [1/s]"
C_WALL = "train_wall_seconds_mean [s]"
C_RATIO = "composition_mae_over_model_mae [1]"
COMPARISON_COLUMNS = [
    "dataset",
    "model",
    "variant",
    "source",
    "n_params",
    "n_seeds",
    "seeds",
    "y_unit",
    C_MAE,
    C_MAE_STD,
    C_D,
    C_D_STD,
    C_DP,
    C_DP_STD,
    C_NPAIR,
    "forces_unit",
    C_F,
    C_F_STD,
    C_FD,
    C_FD_STD,
    C_FDP,
    C_FDP_STD,
    C_SPE,
    C_WALL,
    C_SPS,
    C_RATIO,
    "best",
]

PathArg = str | PathLike


# --------------------------------------------------------------------------- reading


def _fail(path: Path, key: str, problem: str) -> ValueError:
    return ValueError(
        f"{path}: key '{key}' {problem} (metrics.json schema_version "
        f"{SCHEMA_VERSION}, see docs/architecture.md)"
    )


def _get(section: Mapping, key: str, path: Path, prefix: str = ""):
    if key not in section:
        raise _fail(path, prefix + key, "is missing")
    return section[key]


def _section(record: Mapping, key: str, path: Path) -> Mapping:
    value = _get(record, key, path)
    if not isinstance(value, Mapping):
        raise _fail(path, key, f"must be an object, got {type(value).__name__}")
    return value


def _number(value, key: str, path: Path, optional: bool) -> float:
    if value is None:
        if optional:
            return math.nan
        raise _fail(path, key, "is null, expected a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, key, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise _fail(path, key, f"must be finite, got {value!r}")
    if value < 0:
        raise _fail(path, key, f"must be >= 0, got {value!r}")
    return float(value)


def _text(record: Mapping, key: str, path: Path) -> str:
    value = _get(record, key, path)
    if not isinstance(value, str) or not value:
        raise _fail(path, key, f"must be a non-empty string, got {value!r}")
    return value


def _integer(record: Mapping, key: str, path: Path) -> int:
    value = _get(record, key, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(path, key, f"must be a non-negative integer, got {value!r}")
    return value


def _state_metric_order(metric: str) -> tuple:
    found = STATE_METRIC.match(metric)
    if not found:
        return (1, metric)
    kind, state = found.groups()
    order = ("mae", "rmse", "forces_mae", "forces_rmse", "gap_mae", "gap_rmse")
    return (0, int(state), order.index(kind))


def state_metrics(columns: Iterable[str], split: str) -> list[str]:
    """Per-state metric names present as ``<split>_<metric>`` columns, in reading order."""
    names = [c[len(split) + 1:] for c in columns if c.startswith(f"{split}_")]
    return sorted((m for m in names if STATE_METRIC.match(m)), key=_state_metric_order)


def read_metrics(path: PathArg) -> dict:
    """Read and validate one ``metrics.json``; return one flat record.

    Raises ``ValueError`` naming the file and the offending key for unreadable JSON, a
    wrong ``schema_version``, a missing required key or a value of the wrong type.
    Required: ``schema_version`` (== 1), ``dataset``, ``model``, ``variant``, ``seed``,
    ``n_params``, ``units.y``, ``test.mae``, ``test.rmse``, and the objects ``train`` and
    ``inference``. Other metrics may be null or absent (they then produce no row;
    ``train.seconds_per_epoch`` is dropped when ``train.epochs`` is 0, as for the
    composition baseline's least-squares fit);
    a non-null metric needs its unit in ``units``. When the file lies in a directory
    ``.../<dataset>/<model>/<variant>/seed-<seed>/``, the path must agree with the content.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: metrics file does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(record, Mapping):
        raise ValueError(f"{path}: top level must be a JSON object, got {type(record).__name__}")
    version = _get(record, "schema_version", path)
    if version != SCHEMA_VERSION:
        raise _fail(path, "schema_version", f"is {version!r}, expected {SCHEMA_VERSION}")

    row: dict = {
        "dataset": _text(record, "dataset", path),
        "model": _text(record, "model", path),
        "variant": _text(record, "variant", path),
        "seed": _integer(record, "seed", path),
        "n_params": _integer(record, "n_params", path),
        "path": str(path),
    }
    units = _section(record, "units", path)
    for split in ERROR_SPLITS:
        if split == "val" and split not in record:
            section: Mapping = {}
        else:
            section = _section(record, split, path)
        for metric in ERROR_METRICS:
            key = f"{split}.{metric}"
            required = split == "test" and metric in ("mae", "rmse")
            if required:
                value = _number(_get(section, metric, path, f"{split}."), key, path, False)
            else:
                value = _number(section.get(metric), key, path, True)
            row[f"{split}_{metric}"] = value
        for metric in sorted(section, key=_state_metric_order):
            if STATE_METRIC.match(metric):
                key = f"{split}.{metric}"
                row[f"{split}_{metric}"] = _number(section[metric], key, path, True)
    for unit_key in ("y", "y_per_atom", "forces"):
        needed = any(
            not math.isnan(row[f"{s}_{m}"])
            for s in ERROR_SPLITS
            for m, k in _UNIT_KEY.items()
            if k == unit_key
        )
        unit = units.get(unit_key)
        if needed and (not isinstance(unit, str) or not unit):
            raise _fail(
                path,
                f"units.{unit_key}",
                f"must name the unit of the non-null {unit_key} metrics, got {unit!r}",
            )
        row[f"unit_{unit_key}"] = unit if isinstance(unit, str) else None
    for section_key, metric, _unit in COST_METRICS:
        section = _section(record, section_key, path)
        row[f"{section_key}_{metric}"] = _number(
            section.get(metric), f"{section_key}.{metric}", path, True
        )
    if record["train"].get("epochs") == 0:
        # a fit without epochs (composition baseline): no time per epoch to report
        row["train_seconds_per_epoch"] = math.nan

    _check_path_agrees(path, row)
    return row


def _check_path_agrees(path: Path, row: Mapping) -> None:
    parts = path.parent.parts
    match = _SEED_DIR.match(parts[-1]) if parts else None
    if match is None or len(parts) < 4:
        return
    expected = {
        "dataset": parts[-4],
        "model": parts[-3],
        "variant": parts[-2],
        "seed": int(match.group(1)),
    }
    for key, value in expected.items():
        if row[key] != value:
            raise _fail(
                path,
                key,
                f"is {row[key]!r} but the file lies under {key} {value!r} in the results layout",
            )


def find_metrics(root: PathArg) -> list[Path]:
    """All ``metrics.json`` below ``root`` (sorted)."""
    return sorted(Path(root).rglob("metrics.json"))


def _as_paths(paths: PathArg | Iterable[PathArg]) -> list[Path]:
    if isinstance(paths, (str, PathLike)):
        single = Path(paths)
        return find_metrics(single) if single.is_dir() else [single]
    return [Path(p) for p in paths]


def collect_metrics(paths: PathArg | Iterable[PathArg]) -> pd.DataFrame:
    """Read and validate metrics files; one row per run.

    ``paths``: metrics.json paths, or one directory to search recursively. Columns:
    ``dataset, model, variant, seed, n_params, path``, ``<split>_<metric>`` for split in
    test/val and metric in ``ERROR_METRICS`` (NaN when null or absent), ``unit_y``,
    ``unit_y_per_atom``, ``unit_forces``, ``train_seconds_per_epoch``,
    ``inference_structures_per_second``. A malformed file raises ``ValueError`` naming it;
    two files for the same (dataset, model, variant, seed) raise too; no file at all raises.
    """
    files = _as_paths(paths)
    if not files:
        raise ValueError(
            "no metrics.json files given: nothing to aggregate (did training "
            "write results/train/<dataset>/<model>/<variant>/seed-<seed>/"
            "metrics.json?)"
        )
    rows = [read_metrics(f) for f in files]
    df = pd.DataFrame(rows)
    key = ["dataset", "model", "variant", "seed"]
    dup = df[df.duplicated(key, keep=False)]
    if not dup.empty:
        first = dup.iloc[0]
        same = dup[(dup[key] == first[key]).all(axis=1)]["path"].tolist()
        raise ValueError(
            f"two metrics files for dataset={first['dataset']!r} "
            f"model={first['model']!r} variant={first['variant']!r} "
            f"seed={first['seed']}: {same}"
        )
    return df.sort_values(key, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- summary


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Tidy table (``SUMMARY_COLUMNS``): one row per run, split and available metric.

    Splits ``test``/``val`` carry the error metrics in their reported units; split ``train``
    carries ``seconds_per_epoch`` (s) and split ``inference`` ``structures_per_second``
    (1/s). Null metrics produce no row.
    """
    if df is None or len(df) == 0:
        raise ValueError("summary_table: no runs to summarise (empty metrics DataFrame)")
    rows = []
    for rec in df.to_dict("records"):
        base = {k: rec[k] for k in ("dataset", "model", "variant", "seed", "n_params")}
        for split in ERROR_SPLITS:
            for metric in (*ERROR_METRICS, *state_metrics(rec, split)):
                value = rec.get(f"{split}_{metric}")
                if value is None or pd.isna(value):
                    continue
                rows.append(
                    {
                        **base,
                        "split": split,
                        "metric": metric,
                        "value": float(value),
                        "unit": rec[f"unit_{metric_unit_key(metric)}"],
                    }
                )
        for section, metric, unit in COST_METRICS:
            value = rec.get(f"{section}_{metric}")
            if value is None or pd.isna(value):
                continue
            rows.append(
                {**base, "split": section, "metric": metric, "value": float(value), "unit": unit}
            )
    out = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    out["seed"] = out["seed"].astype("int64")
    out["n_params"] = out["n_params"].astype("int64")
    split_rank = {s: i for i, s in enumerate(("test", "val", "train", "inference"))}
    state = sorted({m for m in out["metric"] if STATE_METRIC.match(m)}, key=_state_metric_order)
    metric_rank = {m: i for i, m in enumerate(ERROR_METRICS + tuple(state)
                                              + tuple(c[1] for c in COST_METRICS))}
    out = out.sort_values(
        ["dataset", "model", "variant", "seed", "split", "metric"],
        key=lambda col: (
            col.map(split_rank)
            if col.name == "split"
            else col.map(metric_rank)
            if col.name == "metric"
            else col
        ),
        kind="stable",
    )
    return out.reset_index(drop=True)


def read_summary(path: PathArg) -> pd.DataFrame:
    """Read ``summary.csv`` back, checking its columns."""
    path = Path(path)
    df = pd.read_csv(path)
    missing = [c for c in SUMMARY_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path}: not a summary table, columns {missing} missing (expected {SUMMARY_COLUMNS})"
        )
    return df


# --------------------------------------------------------------------------- comparison


def _values(summary: pd.DataFrame, split: str, metric: str) -> pd.DataFrame:
    sub = summary[(summary["split"] == split) & (summary["metric"] == metric)]
    return sub[["dataset", "model", "variant", "seed", "value", "unit"]]


def _std(values: np.ndarray) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def _paired(variant: pd.Series, baseline: pd.Series) -> dict:
    """Paired differences over the seeds common to ``variant`` and ``baseline``."""
    seeds = sorted(set(variant.index) & set(baseline.index))
    if not seeds:
        return {"n": 0, "mean": math.nan, "std": math.nan, "pct": math.nan, "pct_std": math.nan}
    v = variant.loc[seeds].to_numpy(float)
    b = baseline.loc[seeds].to_numpy(float)
    diff = v - b
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = 100.0 * diff / b
    return {
        "n": len(seeds),
        "mean": float(diff.mean()),
        "std": _std(diff),
        "pct": float(rel.mean()),
        "pct_std": _std(rel),
    }


def _single_unit(units: pd.Series, what: str) -> str | None:
    found = sorted({u for u in units if isinstance(u, str)})
    if len(found) > 1:
        raise ValueError(
            f"{what}: runs report different units {found}; refusing to average "
            "them (check the metrics.json files of that dataset)"
        )
    return found[0] if found else None


def comparison_table(summary: pd.DataFrame, literature: bool = True) -> pd.DataFrame:
    """One row per (dataset, model, variant): means over seeds and deltas to baseline.

    ``summary`` is the tidy table from :func:`summary_table` (or ``summary.csv``). Columns
    are ``COMPARISON_COLUMNS``; unit placeholders in the headers refer to the ``y_unit`` and
    ``forces_unit`` columns of the same row. ``source`` is ``"this work"`` for our runs.
    With ``literature=True``, published values (``fusion.analysis.literature``) for
    datasets present in ``summary`` are appended as rows with variant ``"literature"``; they
    never take part in deltas, ratios or the ``best`` mark. ``best`` marks our row(s) with
    the lowest mean test MAE per dataset (the composition baseline included).
    """
    if summary is None or len(summary) == 0:
        raise ValueError("comparison_table: the summary table is empty")
    missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"comparison_table: summary lacks columns {missing}")
    mae = _values(summary, "test", "mae")
    if mae.empty:
        raise ValueError("comparison_table: the summary has no test MAE rows")
    forces = _values(summary, "test", "forces_mae")
    spe = _values(summary, "train", "seconds_per_epoch")
    wall = _values(summary, "train", "wall_seconds")
    sps = _values(summary, "inference", "structures_per_second")
    group = ["dataset", "model", "variant"]

    def series(table: pd.DataFrame, key: tuple) -> pd.Series:
        sel = table[(table[group] == pd.Series(key, index=group)).all(axis=1)]
        return sel.set_index("seed")["value"].sort_index()

    keys = sorted(
        {tuple(k) for k in mae[group].itertuples(index=False)},
        key=lambda k: (k[0],) + sort_key(k[1], k[2]),
    )
    rows = []
    for dataset in sorted({k[0] for k in keys}):
        y_unit = _single_unit(
            mae[mae["dataset"] == dataset]["unit"], f"dataset {dataset!r}, test MAE"
        )
        f_unit = _single_unit(
            forces[forces["dataset"] == dataset]["unit"], f"dataset {dataset!r}, test forces MAE"
        )
        comp = series(mae, (dataset, COMPOSITION, BASELINE))
        comp_mean = float(comp.mean()) if len(comp) else math.nan
        for key in (k for k in keys if k[0] == dataset):
            _, model, variant = key
            values = series(mae, key)
            sel = summary[(summary[group] == pd.Series(key, index=group)).all(axis=1)]
            n_params = sorted(set(sel["n_params"].astype(int)))
            if len(n_params) > 1:
                raise ValueError(
                    f"dataset={dataset!r} model={model!r} variant={variant!r}: "
                    f"seeds have different parameter counts {n_params}; results "
                    "from different configurations are mixed (stale runs?)"
                )
            row = {
                "dataset": dataset,
                "model": model,
                "variant": variant,
                "source": OURS,
                "n_params": n_params[0],
                "n_seeds": len(values),
                "seeds": ";".join(str(s) for s in values.index),
                "y_unit": y_unit,
                C_MAE: float(values.mean()),
                C_MAE_STD: _std(values.to_numpy(float)),
                "forces_unit": f_unit,
            }
            fvals = series(forces, key)
            if len(fvals):
                row[C_F] = float(fvals.mean())
                row[C_F_STD] = _std(fvals.to_numpy(float))
            if variant != BASELINE:
                base_key = (dataset, model, BASELINE)
                base = series(mae, base_key)
                if len(base):
                    d = _paired(values, base)
                    row.update(
                        {
                            C_D: d["mean"],
                            C_D_STD: d["std"],
                            C_DP: d["pct"],
                            C_DP_STD: d["pct_std"],
                            C_NPAIR: d["n"],
                        }
                    )
                fbase = series(forces, base_key)
                if len(fvals) and len(fbase):
                    d = _paired(fvals, fbase)
                    row.update(
                        {
                            C_FD: d["mean"],
                            C_FD_STD: d["std"],
                            C_FDP: d["pct"],
                            C_FDP_STD: d["pct_std"],
                        }
                    )
            s = series(spe, key)
            row[C_SPE] = float(s.mean()) if len(s) else math.nan
            s = series(wall, key)
            row[C_WALL] = float(s.mean()) if len(s) else math.nan
            s = series(sps, key)
            row[C_SPS] = float(s.mean()) if len(s) else math.nan
            row[C_RATIO] = comp_mean / row[C_MAE] if row[C_MAE] > 0 else math.nan
            rows.append(row)
        if literature:
            rows.extend(_literature_rows(dataset, y_unit, f_unit or "meV/Å"))

    out = pd.DataFrame(rows)
    for col in COMPARISON_COLUMNS:
        if col not in out.columns:
            out[col] = math.nan
    out = out[COMPARISON_COLUMNS]
    for col in ("n_params", "n_seeds", C_NPAIR):
        out[col] = out[col].astype("Int64")
    ours = out["source"] == OURS
    best_value = out[ours].groupby("dataset")[C_MAE].transform("min")
    out["best"] = False
    out.loc[ours, "best"] = out.loc[ours, C_MAE] == best_value
    out["best"] = out["best"].astype(bool)
    return out.reset_index(drop=True)


def _convert_literature(entry, to_unit: str | None, dataset: str) -> tuple[float, str]:
    value, unit = entry.value, entry.unit
    if to_unit is None:
        return value, unit
    converted = lit.convert(value, unit, to_unit)
    if converted is None:
        warnings.warn(
            f"literature value for {dataset!r} is in {unit!r}, our results "
            f"in {to_unit!r}; shown in its own unit",
            stacklevel=4,
        )
        return value, unit
    return converted, to_unit


def _literature_rows(
    dataset: str, y_unit: str | None, f_unit: str | None = None
) -> list[dict]:
    """One row per published (model, paper) for ``dataset``: energy MAE and force MAE."""
    rows: dict[tuple[str, str], dict] = {}
    for entry in lit.literature_for(dataset):
        if entry.metric not in ("mae", "forces_mae"):  # RMSE anchors: study tables only
            continue
        row = rows.setdefault(
            (entry.model, entry.citation),
            {
                "dataset": dataset,
                "model": entry.model,
                "variant": LITERATURE,
                "source": entry.source,
                "best": False,
            },
        )
        if entry.metric == "forces_mae":
            row[C_F], row["forces_unit"] = _convert_literature(entry, f_unit, dataset)
        else:
            row[C_MAE], row["y_unit"] = _convert_literature(entry, y_unit, dataset)
    return list(rows.values())


# --------------------------------------------------------------------------- markdown


def _decimals(reference: float, significant: int = 3) -> int:
    if not math.isfinite(reference) or reference == 0:
        return 2
    return int(min(6, max(0, significant - 1 - math.floor(math.log10(abs(reference))))))


def _num(x, decimals: int, signed: bool = False) -> str:
    if x is None or pd.isna(x):
        return "–"
    text = f"{x:+.{decimals}f}" if signed else f"{x:.{decimals}f}"
    return text.replace("-", "−")


def _pm(mean, std, decimals: int, signed: bool = False) -> str:
    if mean is None or pd.isna(mean):
        return "–"
    text = _num(mean, decimals, signed)
    if std is not None and not pd.isna(std):
        text += f" ± {_num(std, decimals)}"
    return text


def _sig(x, significant: int = 3) -> str:
    if x is None or pd.isna(x):
        return "–"
    return f"{x:.{significant}g}"


def markdown_table(
    header: list[str],
    rows: list[list[str]],
    align: list[str] | None = None,
    bold: list[bool] | None = None,
) -> str:
    """A GitHub-flavoured markdown table (no dependency on ``tabulate``).

    ``align``: per column ``"l"`` or ``"r"``; ``bold``: per row, wrap its cells in ``**``.
    """
    align = align or ["l"] * len(header)
    bold = bold or [False] * len(rows)

    def cell(text: str, strong: bool) -> str:
        text = str(text).replace("|", "\\|").replace("\n", " ")
        return f"**{text}**" if strong and text not in ("", "–") else text

    lines = [
        "| " + " | ".join(cell(h, False) for h in header) + " |",
        "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|",
    ]
    for r, strong in zip(rows, bold):
        lines.append("| " + " | ".join(cell(c, strong) for c in r) + " |")
    return "\n".join(lines)


def comparison_markdown(comparison: pd.DataFrame) -> str:
    """Render the comparison table as markdown: one section per dataset, best row in bold."""
    if comparison is None or len(comparison) == 0:
        raise ValueError("comparison_markdown: the comparison table is empty")
    parts = [
        "# Model comparison",
        "",
        "Generated by `fusion.analysis.aggregate` from `results/tables/summary.csv`; do not "
        "edit. Errors are test-set MAE, mean ± sample std over seeds. Δ vs baseline is paired: "
        "mean ± std of the per-seed differences (variant − same model's baseline, common "
        "seeds only); negative means the variant is more accurate. Bold: lowest test MAE of "
        "our runs on that dataset. Rows marked *published* are literature values, not "
        "produced by this workflow. See `docs/results.md`.",
    ]
    for dataset, block in comparison.groupby("dataset", sort=True):
        ours = block[block["source"] == OURS]
        y_unit = _single_unit(ours["y_unit"], dataset) if len(ours) else None
        y_unit = y_unit or _single_unit(block["y_unit"], dataset) or "?"
        f_unit = _single_unit(ours["forces_unit"], dataset) if len(ours) else None
        has_forces = ours[C_F].notna().any()
        header = [
            "model",
            "variant",
            "params",
            "seeds",
            f"test MAE [{y_unit}]",
            f"Δ vs baseline [{y_unit}]",
            "Δ vs baseline [%]",
        ]
        align = ["l", "l", "r", "r", "r", "r", "r"]
        if has_forces:
            header += [f"forces MAE [{f_unit}]", f"Δ forces vs baseline [{f_unit}]", "Δ forces [%]"]
            align += ["r", "r", "r"]
        header += ["time/epoch [s]", "composition MAE / model MAE", "source"]
        align += ["r", "r", "l"]
        rows, bold = [], []
        for rec in block.to_dict("records"):
            dec = _decimals(rec[C_MAE])
            published = rec["source"] != OURS
            name = style_label(rec["model"], rec["variant"])
            if published:
                name = f"{name.replace(' (published)', '')} *published*"
                mae_text = _num(rec[C_MAE], dec)
                if rec["y_unit"] != y_unit:
                    mae_text += f" {rec['y_unit']}"
            else:
                mae_text = _pm(rec[C_MAE], rec[C_MAE_STD], dec)
            npair = rec[C_NPAIR]
            delta = _pm(rec[C_D], rec[C_D_STD], dec, signed=True)
            if delta != "–" and not pd.isna(npair) and npair != rec["n_seeds"]:
                delta += f" (n={npair})"
            row = [
                name,
                rec["variant"],
                "–" if pd.isna(rec["n_params"]) else f"{int(rec['n_params']):,}",
                "–" if pd.isna(rec["n_seeds"]) else str(int(rec["n_seeds"])),
                mae_text,
                delta,
                _pm(rec[C_DP], rec[C_DP_STD], 1, signed=True),
            ]
            if has_forces:
                fdec = _decimals(rec[C_F])
                row += [
                    _pm(rec[C_F], rec[C_F_STD], fdec),
                    _pm(rec[C_FD], rec[C_FD_STD], fdec, signed=True),
                    _pm(rec[C_FDP], rec[C_FDP_STD], 1, signed=True),
                ]
            ratio = rec[C_RATIO]
            row += [
                _sig(rec[C_SPE]),
                "–" if pd.isna(ratio) else f"{ratio:.2f}×",
                rec["source"] if published else OURS,
            ]
            rows.append(row)
            bold.append(bool(rec["best"]))
        parts += ["", f"## {dataset}", "", markdown_table(header, rows, align, bold)]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- entry point


def main_aggregate(
    metrics_paths: PathArg | Iterable[PathArg],
    out_dir: PathArg,
    literature: bool = True,
    model_pages: Iterable[str] = (),
    study_page: PathArg | None = None,
) -> dict[str, Path]:
    """Aggregate metrics files into ``out_dir`` (the workflow uses ``results/tables``).

    ``metrics_paths``: the metrics.json files (e.g. Snakemake's ``input``), or one
    directory to search recursively. Writes ``summary.csv``, ``comparison.csv``,
    ``comparison.md``, the front page ``front_page.{csv,md,html,rst}``, the provenance table
    ``provenance.{csv,html}`` and, for each model in ``model_pages``, ``models/<model>.html``
    (that model's rows of the front page; a model without results gets a page saying so).
    ``study_page``: the committed study's ``study.rst``; when it exists, the landing page
    (``front_page.rst``) shows it first.
    Returns the paths under the keys ``summary``, ``comparison``, ``comparison_md``,
    ``front_page``, ``front_page_md``, ``front_page_html``, ``front_page_rst``,
    ``provenance``, ``provenance_html`` and ``model:<model>``.
    Raises ``ValueError`` on malformed or missing input.
    """
    from fusion.analysis import front_page as fp

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = collect_metrics(metrics_paths)
    summary = summary_table(runs)
    comparison = comparison_table(summary, literature=literature)
    front = fp.front_page_table(comparison)
    provenance = fp.provenance_table(runs["path"])
    paths = {
        "summary": out / "summary.csv",
        "comparison": out / "comparison.csv",
        "comparison_md": out / "comparison.md",
        "front_page": out / "front_page.csv",
        "front_page_md": out / "front_page.md",
        "front_page_html": out / "front_page.html",
        "front_page_rst": out / "front_page.rst",
        "provenance": out / "provenance.csv",
        "provenance_html": out / "provenance.html",
    }
    summary.to_csv(paths["summary"], index=False)
    comparison.to_csv(paths["comparison"], index=False)
    paths["comparison_md"].write_text(comparison_markdown(comparison), encoding="utf-8")
    front.to_csv(paths["front_page"], index=False)
    paths["front_page_md"].write_text(fp.front_page_markdown(front), encoding="utf-8")
    paths["front_page_html"].write_text(fp.front_page_html(front), encoding="utf-8")
    preface = ""
    if study_page is not None and Path(study_page).is_file():
        preface = Path(study_page).read_text(encoding="utf-8")
    paths["front_page_rst"].write_text(fp.front_page_rst(front, len(runs), preface),
                                       encoding="utf-8")
    provenance.to_csv(paths["provenance"], index=False)
    paths["provenance_html"].write_text(fp.provenance_html(provenance), encoding="utf-8")
    for model in model_pages:
        path = out / "models" / f"{model}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = front[front["model"] == model]
        title = f"{fp.agg_label(model)}: every variant on every dataset"
        if len(rows):
            text = fp.front_page_html(rows.reset_index(drop=True), title=title)
        else:
            text = fp._page(title, "<p>No results of this model in this run.</p>")
        path.write_text(text, encoding="utf-8")
        paths[f"model:{model}"] = path
    return paths
