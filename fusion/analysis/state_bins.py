"""Multi-state errors binned by the central torsion and by the reference S1−S0 gap (issue 20).

A single test MAE hides where a stilbene model is wrong: the gap matters most near the
twisted geometries, which are few in a thermal data set. :func:`binned_errors` takes
per-structure predictions and references and returns one row per bin with the MAE of each
state's energy, of the gap E1 − E0, and of the constant-gap baseline (the training mean gap,
``baseline_gap_ev``) for comparison. :func:`run_binned_errors` evaluates a trained run
directory on its dataset's test split.

Units: energies eV in, meV out; torsion degrees.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["TORSION_EDGES_DEG", "binned_errors", "run_binned_errors"]

TORSION_EDGES_DEG = (0.0, 30.0, 60.0, 90.0, 120.0, 150.0, 180.0)


def _rows(by: str, labels: np.ndarray, edges: Sequence[float], pred, ref, baseline_gap_ev
          ) -> list[dict]:
    rows = []
    err = (pred - ref) * 1000.0  # [M, S] meV
    gap_err = ((pred[:, 1] - pred[:, 0]) - (ref[:, 1] - ref[:, 0])) * 1000.0  # [M] meV
    const_err = None if baseline_gap_ev is None else \
        (baseline_gap_ev - (ref[:, 1] - ref[:, 0])) * 1000.0
    for k in range(len(edges) - 1):
        lo, hi = edges[k], edges[k + 1]
        inside = (labels >= lo) & ((labels < hi) if k < len(edges) - 2 else (labels <= hi))
        row = {"by": by, "low": float(lo), "high": float(hi), "n": int(inside.sum())}
        for s in range(pred.shape[1]):
            row[f"mae_S{s}_mev"] = float(np.abs(err[inside, s]).mean()) if inside.any() \
                else None
        row["gap_mae_mev"] = float(np.abs(gap_err[inside]).mean()) if inside.any() else None
        row["constant_gap_mae_mev"] = (float(np.abs(const_err[inside]).mean())
                                       if inside.any() and const_err is not None else None)
        rows.append(row)
    return rows


def binned_errors(pred_ev: np.ndarray, ref_ev: np.ndarray, torsion_deg: np.ndarray,
                  torsion_edges: Sequence[float] = TORSION_EDGES_DEG,
                  gap_edges_ev: Sequence[float] | None = None,
                  baseline_gap_ev: float | None = None) -> pd.DataFrame:
    """Rows ``by`` = ``torsion`` (bins ``torsion_edges``, degrees) and ``by`` = ``gap``
    (bins of the reference gap E1 − E0, ``gap_edges_ev``; default: quartiles of the
    reference gaps) with columns ``low``, ``high``, ``n``, ``mae_S<k>_mev``, ``gap_mae_mev``
    and ``constant_gap_mae_mev`` (None in empty bins). The last bin includes its upper
    edge. ``pred_ev``/``ref_ev`` [M, S >= 2] energies in eV, ``torsion_deg`` [M]."""
    pred = np.asarray(pred_ev, dtype=np.float64)
    ref = np.asarray(ref_ev, dtype=np.float64)
    torsion = np.asarray(torsion_deg, dtype=np.float64)
    if pred.shape != ref.shape or pred.ndim != 2 or pred.shape[1] < 2:
        raise ValueError(f"predictions {pred.shape} and references {ref.shape} should both be "
                         "[M, S] with S >= 2 states")
    if torsion.shape != (pred.shape[0],):
        raise ValueError(f"torsion should be [{pred.shape[0]}] degrees, got {torsion.shape}")
    gap = ref[:, 1] - ref[:, 0]
    if gap_edges_ev is None:
        gap_edges_ev = np.quantile(gap, [0.0, 0.25, 0.5, 0.75, 1.0]).tolist()
    for name, edges in (("torsion_edges", torsion_edges), ("gap_edges_ev", gap_edges_ev)):
        if len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError(f"{name} should be at least two increasing values, got "
                             f"{list(edges)}")
    rows = _rows("torsion", torsion, torsion_edges, pred, ref, baseline_gap_ev)
    rows += _rows("gap", gap, gap_edges_ev, pred, ref, baseline_gap_ev)
    return pd.DataFrame(rows)


def run_binned_errors(run_dir: str | os.PathLike, cache_dir: str | os.PathLike = "resources",
                      split: str = "test", **kwargs) -> pd.DataFrame:
    """:func:`binned_errors` of a trained multi-state run on its dataset's ``split`` (the
    split sizes recorded in the run's ``metrics.json``); the constant-gap baseline is the
    mean gap of the training split."""
    import json
    from pathlib import Path

    import torch
    from ase import Atoms

    from fusion.data.registry import get_dataset
    from fusion.dynamics.calculator import FusionCalculator

    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    spec = metrics["hyperparameters"]
    sizes = spec.get("split") or {}
    structures, splits = get_dataset(metrics["dataset"], cache_dir=cache_dir,
                                     **{k: sizes.get(k) for k in ("n_train", "n_val", "n_test")})
    calc = FusionCalculator.from_run_dir(run_dir, cache_dir=cache_dir, dtype=torch.float64)
    z_all, pos_all = structures.z, structures.pos
    offsets = np.concatenate([[0], np.cumsum(structures.n_atoms)])
    y = np.asarray(structures.y, dtype=np.float64)  # [M, S] eV
    pred, ref, torsion = [], [], []
    for m in splits[split]:
        a, b = offsets[m], offsets[m + 1]
        atoms = Atoms(numbers=np.asarray(z_all[a:b]), positions=np.asarray(pos_all[a:b]))
        atoms.calc = calc
        atoms.get_potential_energy()
        pred.append(calc.results["energies"])
        ref.append(y[m])
        torsion.append(float(structures.meta["torsion"][m]))
    train_gap = float(np.mean(y[splits["train"], 1] - y[splits["train"], 0]))
    return binned_errors(np.array(pred), np.array(ref), np.array(torsion),
                         baseline_gap_ev=train_gap, **kwargs)
