"""Figures of the study: error vs parameter count, learning curves.

Every figure is written as PNG (for the HTML report) and SVG (for papers), sized for a
report page (panels ~4 x 3.2 in, 10-11 pt text), in the colours of
:mod:`fusion.analysis.style`. Matplotlib runs headless: figures are built with
``matplotlib.figure.Figure`` (Agg canvas) and never touch pyplot or the global backend.
A figure without data raises ``ValueError`` instead of writing an empty plot.

``main_figures(summary_csv, log_paths, out_dir)`` is what the workflow calls.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from fusion.analysis import literature as lit
from fusion.analysis.aggregate import BASELINE, COMPOSITION, read_summary
from fusion.analysis.style import label, sort_key, style_for

PathArg = str | PathLike

LOG_COLUMNS = ("epoch", "val_mae")
_LOG_PATH = re.compile(r"seed-(\d+)$")

_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "fusion-bench",  # deterministic SVG ids
    "svg.fonttype": "none",  # text stays text in the SVG
}


def _grid(n_panels: int, panel_w: float = 4.2, panel_h: float = 3.3) -> tuple[Figure, list]:
    ncols = min(n_panels, 3)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel_w * ncols, panel_h * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def _compact(value: float) -> str:
    """Tick text without powers of ten: 0.05, 2, 40, 300, 20k, 1.5M."""
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e4:
        return f"{value / 1e3:g}k"
    return f"{value:g}"


def _log_axis(axis) -> None:
    """Log scale labelled at 1, 2, 5 x 10^k in plain numbers (readable at report size)."""
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: _compact(v)))
    axis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    axis.set_minor_formatter(NullFormatter())


def save_figure(fig: Figure, out_path: PathArg) -> list[Path]:
    """Save ``fig`` as ``<out_path stem>.png`` (150 dpi) and ``.svg``; return both paths."""
    out = Path(out_path)
    if out.suffix.lower() in (".png", ".svg", ".pdf"):
        out = out.with_suffix("")
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = [out.with_name(out.name + ".png"), out.with_name(out.name + ".svg")]
    with mpl.rc_context(_RC):
        fig.savefig(paths[0], dpi=150, metadata={"Software": None})
        fig.savefig(paths[1], metadata={"Date": None, "Creator": None})
    return paths


def _legend(fig: Figure, axes: list) -> None:
    handles, labels = {}, {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles[lab], labels[lab] = h, lab
    if handles:
        fig.legend(
            list(handles.values()),
            list(labels.values()),
            loc="outside lower center",
            ncols=min(len(handles), 4),
            frameon=False,
        )


# --------------------------------------------------------------------------- error vs params


def error_vs_params(
    summary: pd.DataFrame,
    out_path: PathArg,
    metric: str = "mae",
    split: str = "test",
    datasets: Iterable[str] | None = None,
) -> list[Path]:
    """Test error vs trainable parameters, one panel per dataset; returns PNG and SVG paths.

    ``summary``: the tidy table (``summary.csv``). Each (model, variant) is a marker at its
    parameter count with mean ± sample std over seeds as error bar; the composition
    baseline is a grey dashed horizontal line; arrows go from each model's baseline to
    each of its other variants. Both axes logarithmic (the composition baseline is often
    ~5x above the models). ``metric``/``split`` pick the error
    (default test MAE; ``"forces_mae"`` for force fields); ``datasets`` restricts the panels.
    """
    sel = summary[(summary["split"] == split) & (summary["metric"] == metric)]
    if datasets is not None:
        sel = sel[sel["dataset"].isin(list(datasets))]
    if sel.empty:
        raise ValueError(
            f"error_vs_params: no {split} {metric} values in the summary table; nothing to plot"
        )
    panels = [(d, metric) for d in sorted(sel["dataset"].unique())]
    return _error_panels(summary, panels, out_path, split)


def _error_panels(
    summary: pd.DataFrame, panels: list[tuple[str, str]], out_path: PathArg, split: str
) -> list[Path]:
    """One error-vs-parameters panel per (dataset, metric) in ``panels``."""
    sel = summary[(summary["split"] == split) & summary["metric"].isin({m for _, m in panels})]
    agg = (
        sel.groupby(["dataset", "metric", "model", "variant"])
        .agg(
            n_params=("n_params", "first"),
            mean=("value", "mean"),
            std=("value", lambda v: v.std(ddof=1) if len(v) > 1 else 0.0),
            n=("value", "size"),
            unit=("unit", "first"),
        )
        .reset_index()
    )
    with mpl.rc_context(_RC):
        fig, axes = _grid(len(panels))
        for ax, (dataset, metric) in zip(axes, panels):
            block = agg[(agg["dataset"] == dataset) & (agg["metric"] == metric)]
            if block.empty:
                raise ValueError(f"error_vs_params: no {split} {metric} values for {dataset!r}")
            unit = block["unit"].iloc[0]
            models = block[block["model"] != COMPOSITION]
            points = {}
            for rec in sorted(
                models.to_dict("records"), key=lambda r: sort_key(r["model"], r["variant"])
            ):
                st = style_for(rec["model"], rec["variant"])
                ax.errorbar(
                    rec["n_params"],
                    rec["mean"],
                    yerr=rec["std"],
                    fmt=st.marker,
                    color=st.color,
                    markersize=7,
                    capsize=3,
                    elinewidth=1.2,
                    label=st.label,
                    zorder=3,
                )
                points[(rec["model"], rec["variant"])] = (rec["n_params"], rec["mean"])
            for (model, variant), (x, y) in points.items():
                base = points.get((model, BASELINE))
                if variant == BASELINE or base is None:
                    continue
                ax.annotate(
                    "",
                    xy=(x, y),
                    xytext=base,
                    zorder=2,
                    arrowprops={
                        "arrowstyle": "->",
                        "color": style_for(model, variant).color,
                        "lw": 1.2,
                        "shrinkA": 5,
                        "shrinkB": 5,
                    },
                )
            comp = block[block["model"] == COMPOSITION]
            if not comp.empty:
                st = style_for(COMPOSITION, BASELINE)
                ax.axhline(
                    comp["mean"].iloc[0],
                    color=st.color,
                    linestyle="--",
                    lw=1.2,
                    label=st.label,
                    zorder=1,
                )
                ax.annotate(
                    f"composition {comp['mean'].iloc[0]:.3g} {unit}",
                    xy=(0.99, comp["mean"].iloc[0]),
                    xycoords=("axes fraction", "data"),
                    xytext=(0, -3),
                    textcoords="offset points",
                    ha="right",
                    va="top",
                    fontsize=8,
                    color=st.color,
                )
            if not models.empty:
                ax.set_xscale("log")
                _log_axis(ax.xaxis)
                xs = models["n_params"].to_numpy(float)
                ax.set_xlim(xs.min() / 1.6, xs.max() * 1.6)
            else:
                ax.text(
                    0.5,
                    0.5,
                    "only the composition baseline",
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                    color="0.4",
                )
                ax.set_xticks([])
            ax.set_yscale("log")
            _log_axis(ax.yaxis)
            n_min, n_max = int(block["n"].min()), int(block["n"].max())
            seeds = f"{n_max} seeds" if n_min == n_max else f"{n_min}–{n_max} seeds"
            what = "forces" if metric.startswith("forces") else "energy"
            title = dataset if len({d for d, _ in panels}) == len(panels) else f"{dataset}, {what}"
            ax.set_title(f"{title} ({seeds})")
            ax.set_xlabel("trainable parameters")
            what = metric.replace("_", " ").replace("rmse", "RMSE").replace("mae", "MAE")
            ax.set_ylabel(f"{split} {what} [{unit}]")
        _legend(fig, axes)
        return save_figure(fig, out_path)


# --------------------------------------------------------------------------- learning curves


def parse_run_path(path: PathArg) -> dict:
    """(dataset, model, variant, seed) from ``.../<dataset>/<model>/<variant>/seed-<n>/<file>``."""
    path = Path(path)
    parts = path.parent.parts
    match = _LOG_PATH.match(parts[-1]) if parts else None
    if match is None or len(parts) < 4:
        raise ValueError(
            f"{path}: not in the results layout <dataset>/<model>/<variant>/seed-<seed>/log.csv"
        )
    return {
        "dataset": parts[-4],
        "model": parts[-3],
        "variant": parts[-2],
        "seed": int(match.group(1)),
    }


def read_logs(log_paths: Iterable[PathArg]) -> pd.DataFrame:
    """Concatenate training logs with their run keys (dataset, model, variant, seed).

    Composition-baseline logs are left out (a fit, not a training curve). A log that is
    unreadable, lacks ``epoch``/``val_mae`` or has no rows raises ``ValueError`` naming it.
    """
    frames = []
    for p in log_paths:
        path = Path(p)
        key = parse_run_path(path)
        if key["model"] == COMPOSITION:
            continue
        try:
            log = pd.read_csv(path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise ValueError(f"{path}: cannot read training log ({exc})") from None
        missing = [c for c in LOG_COLUMNS if c not in log.columns]
        if missing:
            raise ValueError(
                f"{path}: training log lacks columns {missing} (has {list(log.columns)})"
            )
        if log.empty:
            raise ValueError(f"{path}: training log has no epochs")
        log = log.assign(**key)
        frames.append(log)
    if not frames:
        raise ValueError(
            "learning_curves: no training logs to plot (no log.csv given, or "
            "only composition-baseline logs)"
        )
    return pd.concat(frames, ignore_index=True)


def learning_curves(
    logs: pd.DataFrame | Iterable[PathArg],
    out_path: PathArg,
    units: Mapping[str, str] | None = None,
) -> list[Path]:
    """Validation MAE vs epoch, one panel per dataset; returns PNG and SVG paths.

    ``logs``: log.csv paths or the DataFrame from :func:`read_logs`. Each seed is a thin
    line, the mean over seeds (epochs all seeds reached) a thick line in the
    (model, variant) colour. y axis logarithmic. ``units`` maps dataset -> unit for the
    axis label (the logs are assumed to be in the reported unit, like metrics.json).
    """
    df = logs if isinstance(logs, pd.DataFrame) else read_logs(logs)
    df = df.dropna(subset=["val_mae"])
    df = df[df["val_mae"] > 0]
    if df.empty:
        raise ValueError("learning_curves: the logs hold no positive val_mae values")
    units = dict(units or {})
    datasets = sorted(df["dataset"].unique())
    with mpl.rc_context(_RC):
        fig, axes = _grid(len(datasets))
        for ax, dataset in zip(axes, datasets):
            block = df[df["dataset"] == dataset]
            runs = sorted(
                {(m, v) for m, v in zip(block["model"], block["variant"])},
                key=lambda k: sort_key(*k),
            )
            for model, variant in runs:
                st = style_for(model, variant)
                run = block[(block["model"] == model) & (block["variant"] == variant)]
                seeds = sorted(run["seed"].unique())
                for seed in seeds:
                    one = run[run["seed"] == seed].sort_values("epoch")
                    ax.plot(
                        one["epoch"],
                        one["val_mae"],
                        color=st.color,
                        lw=0.7,
                        alpha=0.45,
                        marker="." if len(one) == 1 else None,
                    )
                wide = run.pivot_table(index="epoch", columns="seed", values="val_mae")
                mean = wide.dropna().mean(axis=1)
                if len(mean):
                    ax.plot(
                        mean.index,
                        mean.to_numpy(),
                        color=st.color,
                        lw=2.0,
                        marker=st.marker,
                        markevery=max(1, len(mean) // 8),
                        markersize=5,
                        label=f"{label(model, variant)} ({len(seeds)} seeds)",
                    )
            ax.set_yscale("log")
            _log_axis(ax.yaxis)
            ax.set_title(dataset)
            ax.set_xlabel("epoch")
            unit = units.get(dataset)
            ax.set_ylabel(f"validation MAE [{unit}]" if unit else "validation MAE")
        _legend(fig, axes)
        return save_figure(fig, out_path)


# --------------------------------------------------------------------------- per molecule

# Dataset keys of force-field datasets (one molecule per dataset, energies and forces).
FORCE_FIELD_PREFIXES = ("xtb-md-", "rmd17-", "md17-", "3bpa-", "xxmd-", "stilbene")


def is_force_field(dataset: str) -> bool:
    """True for force-field dataset keys (``xtb-md-ethanol``, ``rmd17-aspirin``, ...)."""
    return dataset.startswith(FORCE_FIELD_PREFIXES)


def per_molecule_bars(summary: pd.DataFrame, out_path: PathArg, split: str = "test") -> list[Path]:
    """Energy and force MAE per molecule, grouped bars per (model, variant); PNG and SVG.

    Uses every dataset of ``summary`` that reports ``forces_mae`` on ``split``; x = dataset
    (one molecule each), bar = mean over seeds, whisker = ± sample std, y log scale. Two
    panels: energy MAE (``mae``, e.g. meV) and force MAE (``forces_mae``, e.g. meV/Å). The
    composition baseline predicts no forces and is left out of both panels. Published values
    (:mod:`fusion.analysis.literature`, e.g. MACE on rMD17) are black stars, labelled as
    literature.
    """
    test = summary[summary["split"] == split]
    datasets = sorted(test[test["metric"] == "forces_mae"]["dataset"].unique())
    if not datasets:
        raise ValueError(
            f"per_molecule_bars: no dataset reports {split} forces_mae; nothing to plot"
        )
    test = test[test["dataset"].isin(datasets) & (test["model"] != COMPOSITION)]
    runs = sorted(
        {(m, v) for m, v in zip(test["model"], test["variant"])}, key=lambda k: sort_key(*k)
    )
    width = 0.8 / max(1, len(runs))
    with mpl.rc_context(_RC):
        fig = Figure(figsize=(max(6.0, 1.1 * len(datasets) + 3.0), 6.4), layout="constrained")
        axes = fig.subplots(2, 1, sharex=True)
        for ax, metric, what in zip(axes, ("mae", "forces_mae"), ("energy", "forces")):
            block = test[test["metric"] == metric]
            unit = block["unit"].dropna().iloc[0] if block["unit"].notna().any() else ""
            for i, (model, variant) in enumerate(runs):
                st = style_for(model, variant)
                run = block[(block["model"] == model) & (block["variant"] == variant)]
                stats = run.groupby("dataset")["value"].agg(["mean", "std", "size"])
                xs, means, stds = [], [], []
                for j, dataset in enumerate(datasets):
                    if dataset in stats.index:
                        xs.append(j - 0.4 + width * (i + 0.5))
                        means.append(stats.loc[dataset, "mean"])
                        std = stats.loc[dataset, "std"]
                        stds.append(0.0 if pd.isna(std) else std)
                if xs:
                    ax.bar(
                        xs,
                        means,
                        width=width * 0.95,
                        yerr=stds,
                        color=st.color,
                        capsize=2,
                        label=st.label,
                        zorder=3,
                    )
            published = [
                (j, lit.convert(e.value, e.unit, unit) or e.value)
                for j, dataset in enumerate(datasets)
                for e in lit.literature_for(dataset)
                if e.metric == metric
            ]
            if published:
                ax.plot(
                    [p[0] for p in published],
                    [p[1] for p in published],
                    linestyle="none",
                    marker="*",
                    markersize=11,
                    color="black",
                    label="published (literature, not ours)",
                    zorder=4,
                )
            ax.set_yscale("log")
            _log_axis(ax.yaxis)
            ax.set_ylabel(f"{split} {what} MAE [{unit}]")
            ax.grid(axis="x", visible=False)
        axes[-1].set_xticks(range(len(datasets)))
        axes[-1].set_xticklabels(datasets, rotation=30, ha="right")
        n = test.groupby(["dataset", "model", "variant"])["seed"].nunique()
        seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
        axes[0].set_title(f"Error per molecule ({seeds} seeds per bar)")
        _legend(fig, list(axes))
        return save_figure(fig, out_path)


# --------------------------------------------------------------------------- kernel speed

_KERNEL_CONFIG = (
    "task", "nodes", "elements", "channels", "lmax", "correlation", "irreps_out", "dtype",
    "threads",
)


def read_benchmark(path: PathArg) -> pd.DataFrame:
    """A kernel benchmark CSV with a ``speedup`` column (or ``baseline_s`` and ``fusion_s``,
    or ``speedup_vs_reference``).

    Rows also need ``mode`` (e.g. ``fwd``, ``fwd+bwd``; a ``variant`` column stands in).
    Returns the table with ``speedup = baseline_s / fusion_s`` filled in and a ``benchmark``
    column (the file stem).
    """
    path = Path(path)
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path}: cannot read benchmark CSV ({exc})") from None
    if "speedup" not in table.columns and "speedup_vs_reference" in table.columns:
        # a model benchmark against a published reference time (bench_cormorant.py)
        table["speedup"] = table["speedup_vs_reference"]
    if "mode" not in table.columns and "variant" in table.columns:
        table["mode"] = table["variant"].astype(str)
    if "speedup" not in table.columns:
        if not {"baseline_s", "fusion_s"} <= set(table.columns):
            raise ValueError(
                f"{path}: benchmark CSV needs a 'speedup' column or 'baseline_s' and "
                f"'fusion_s' (seconds); has {list(table.columns)}"
            )
        table["speedup"] = table["baseline_s"] / table["fusion_s"]
    if "mode" not in table.columns:
        raise ValueError(f"{path}: benchmark CSV needs a 'mode' column (fwd, fwd+bwd, ...)")
    if table.empty:
        raise ValueError(f"{path}: benchmark CSV has no rows")
    return table.assign(benchmark=path.stem)


def kernel_speed(csv_paths: Iterable[PathArg], out_path: PathArg) -> list[Path]:
    """Speedup of our kernels over the reference (time reference / time ours), bars.

    One panel per benchmark CSV (``results/benchmarks/product.csv``: FusionProduct vs
    mace-torch's SymmetricContraction; ``cormorant_speed.csv`` and ``model_step.csv``, whole
    models against mace-torch, when present); bars per
    configuration (the columns of ``_KERNEL_CONFIG`` that vary), one colour per ``mode``. A
    dotted line at 1 (equal speed). Returns PNG and SVG paths.
    """
    tables = [read_benchmark(p) for p in csv_paths]
    if not tables:
        raise ValueError("kernel_speed: no benchmark CSV given")
    mode_colors = ("#2171b5", "#d94801", "#238b45", "#6a51a3", "#cb181d", "#737373",
                   "#41b6c4", "#fe9929", "#c51b8a", "#252525")
    next_color = 0  # modes of different panels get different colours (one shared legend)
    with mpl.rc_context(_RC):
        fig, axes = _grid(len(tables), panel_w=5.2, panel_h=3.6)
        for ax, table in zip(axes, tables):
            varying = [c for c in _KERNEL_CONFIG if c in table and table[c].nunique() > 1]
            configs = (
                table[varying].astype(str).agg(", ".join, axis=1)
                if varying
                else pd.Series(["all"] * len(table))
            )
            table = table.assign(_config=configs.to_numpy())
            labels = list(dict.fromkeys(table["_config"]))
            modes = list(dict.fromkeys(table["mode"]))
            width = 0.8 / len(modes)
            for i, mode in enumerate(modes):
                color = mode_colors[(next_color + i) % len(mode_colors)]
                rows = table[table["mode"] == mode]
                mean = rows.groupby("_config")["speedup"].mean()
                xs = [labels.index(c) - 0.4 + width * (i + 0.5) for c in mean.index]
                ax.bar(
                    xs,
                    mean.to_numpy(),
                    width=width * 0.95,
                    color=color,
                    label=str(mode),
                    zorder=3,
                )
            next_color += len(modes)
            ax.axhline(1.0, color="0.3", linestyle=":", lw=1.2)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=25, ha="right", fontsize=8)
            device = ", ".join(sorted(table["device"].astype(str).unique())) if (
                "device" in table
            ) else "?"
            ax.set_title(f"{table['benchmark'].iloc[0]} ({device})")
            ax.set_ylabel("speedup (reference time / ours)")
            if varying:
                ax.set_xlabel(" / ".join(varying))
        _legend(fig, axes)
        return save_figure(fig, out_path)


# --------------------------------------------------------------------------- entry point


def _trained_as(dataset: str) -> str | None:
    """The dataset whose runs a transfer test set is evaluated with (card ``trained_as``)."""
    from fusion.data.registry import DATASETS, load_builtin_datasets

    load_builtin_datasets()
    spec = DATASETS.get(dataset)
    return None if spec is None else spec.card.get("trained_as")


def main_figures(
    summary_csv: PathArg | None,
    log_paths: Iterable[PathArg],
    out_dir: PathArg,
    datasets: Iterable[str] | None = None,
    kernels: Iterable[PathArg] = (),
    kernel_name: str = "kernel_speed",
) -> dict[str, list[Path]]:
    """Draw the study's figures into ``out_dir`` (the workflow uses ``results/figures``).

    ``summary_csv``: ``results/tables/summary.csv`` from ``main_aggregate`` (None: kernel
    figure only); ``log_paths``: the runs' ``log.csv`` files. Writes
    ``error_vs_params.{png,svg}`` (test MAE; plus ``forces_error_vs_params.{png,svg}`` when any
    run reports forces), ``learning_curves.{png,svg}``, per dataset
    ``datasets/<dataset>/{error_vs_params,learning_curves}.{png,svg}`` (for ``datasets``, default
    every dataset of the summary; the error panel adds forces when the dataset has them),
    ``per_molecule.{png,svg}`` when a dataset reports forces, and ``<kernel_name>.{png,svg}``
    from the benchmark CSVs ``kernels``. Returns ``{"error_vs_params": [png, svg], ...}``.
    Raises ``ValueError`` when there is nothing to plot or a requested dataset has no results.
    """
    out = Path(out_dir)
    written: dict[str, list[Path]] = {}
    kernels = list(kernels)
    if kernels:
        written[kernel_name] = kernel_speed(kernels, out / kernel_name)
    if summary_csv is None:
        if not kernels:
            raise ValueError("figures: give a summary table, benchmark CSVs, or both")
        return written
    summary = read_summary(summary_csv)
    units = (
        summary[(summary["split"] == "test") & (summary["metric"] == "mae")]
        .groupby("dataset")["unit"]
        .first()
        .to_dict()
    )
    written["error_vs_params"] = error_vs_params(summary, out / "error_vs_params")
    forces = summary[(summary["split"] == "test") & (summary["metric"] == "forces_mae")]
    if not forces.empty and np.isfinite(forces["value"]).any():
        written["forces_error_vs_params"] = error_vs_params(
            summary, out / "forces_error_vs_params", metric="forces_mae"
        )
        written["per_molecule"] = per_molecule_bars(summary, out / "per_molecule")
    logs = read_logs(list(log_paths))
    written["learning_curves"] = learning_curves(logs, out / "learning_curves", units=units)
    present = set(summary["dataset"])
    wanted = sorted(present) if datasets is None else list(datasets)
    missing = [d for d in wanted if d not in present]
    if missing:
        raise ValueError(
            f"figures: no results for dataset(s) {missing} in {summary_csv} "
            f"(has {sorted(present)})"
        )
    for dataset in wanted:
        folder = out / "datasets" / dataset
        panels = [(dataset, "mae")]
        if dataset in set(forces["dataset"]):
            panels.append((dataset, "forces_mae"))
        written[f"{dataset}:error_vs_params"] = _error_panels(
            summary, panels, folder / "error_vs_params", "test"
        )
        curves = logs[logs["dataset"] == dataset]
        trained_as = _trained_as(dataset)
        if curves.empty and trained_as is not None:  # a transfer test set: its training run
            curves = logs[logs["dataset"] == trained_as]
        if curves.empty:
            raise ValueError(f"figures: no training logs for dataset {dataset!r}")
        written[f"{dataset}:learning_curves"] = learning_curves(
            curves, folder / "learning_curves", units=units
        )
    return written
