"""Composition baseline: a target as a linear function of element counts.

``y_i ≈ sum_e c_ie w_e`` where ``c_ie`` counts atoms of element ``e`` in structure ``i``.
There is **no intercept**: with one column per element an intercept is nearly collinear
with the counts and has no physical meaning, and without one the weights ``w_e`` are
per-element atomic energies (internal units per atom), which is what MACE's
``atomic_energies`` expects. Fitted by least squares (``numpy.linalg.lstsq``, minimum
norm): an element absent from the fitting structures gets weight 0.

The same fit is a baseline row in the result tables (on qm9-U0 with the Cormorant split
and the full training set: test MAE 865 meV, see ``docs/datasets.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fusion.data.structures import Structures

__all__ = [
    "element_index",
    "element_counts",
    "fit_composition",
    "predict_composition",
    "composition_baseline",
]


def element_index(z: np.ndarray, elements: Sequence[int]) -> np.ndarray:
    """``[A]`` int64: position of each atomic number ``z`` in ``elements``.

    ``elements``: distinct atomic numbers (any order; :mod:`fusion` uses sorted Z).
    Raises ``ValueError`` naming the unknown atomic numbers if some Z is not listed.
    """
    elements = np.asarray(list(elements), dtype=np.int64)
    if elements.ndim != 1 or np.unique(elements).shape[0] != elements.shape[0]:
        raise ValueError(f"elements must be distinct atomic numbers, got {elements.tolist()}")
    z = np.asarray(z, dtype=np.int64)
    if z.size == 0:
        return np.zeros(0, dtype=np.int64)
    size = int(max(z.max(), elements.max() if elements.size else 0)) + 1
    table = np.full(size, -1, dtype=np.int64)
    table[elements] = np.arange(elements.shape[0])
    out = table[np.clip(z, 0, size - 1)]
    bad = (out < 0) | (z < 0)
    if bad.any():
        unknown = sorted({int(v) for v in np.unique(z[bad])})
        raise ValueError(
            f"atomic numbers {unknown} are not in elements {elements.tolist()}; "
            "add them to the model's element list"
        )
    return out


def element_counts(structures: Structures, indices: np.ndarray | None,
                   elements: Sequence[int]) -> np.ndarray:
    """``[K, n_elements]`` float64: atoms of each element in structures ``indices``
    (``None`` = all), columns in the order of ``elements``."""
    idx = np.arange(len(structures)) if indices is None else np.asarray(indices, dtype=np.int64)
    n_el = len(list(elements))
    atoms = structures.atom_indices(idx)
    col = element_index(structures.z[atoms], elements)
    row = np.repeat(np.arange(idx.shape[0]), structures.n_atoms[idx])
    flat = np.bincount(row * n_el + col, minlength=idx.shape[0] * n_el)
    return flat.reshape(idx.shape[0], n_el).astype(np.float64)


def fit_composition(structures: Structures, indices: np.ndarray | None,
                    elements: Sequence[int]) -> np.ndarray:
    """Least-squares per-element weights ``[n_elements]`` (internal units per atom),
    fitted on ``structures.y[indices]`` without intercept; order of ``elements``. With
    ``S`` states (``y`` [M, S]) one fit per state: ``[n_elements, S]``."""
    counts = element_counts(structures, indices, elements)
    idx = np.arange(len(structures)) if indices is None else np.asarray(indices, dtype=np.int64)
    if counts.shape[0] == 0:
        raise ValueError("fit_composition needs at least one structure")
    weights, *_ = np.linalg.lstsq(counts, structures.y[idx], rcond=None)
    return weights


def predict_composition(structures: Structures, indices: np.ndarray | None,
                        elements: Sequence[int], weights: np.ndarray) -> np.ndarray:
    """``[K]`` predictions ``counts @ weights`` for structures ``indices`` (internal units);
    ``[K, S]`` for weights ``[n_elements, S]``."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim not in (1, 2) or weights.shape[0] != len(list(elements)):
        raise ValueError(f"weights has shape {weights.shape}; expected [n_elements] = "
                         f"({len(list(elements))},) or [n_elements, S]")
    return element_counts(structures, indices, elements) @ weights


def composition_baseline(structures: Structures, splits: dict[str, np.ndarray],
                         elements: Sequence[int] | None = None) -> dict:
    """Fit on ``splits["train"]`` and score every split.

    Returns ``{"elements", "weights" (internal units), "unit" (reported), split: {"mae",
    "rmse", "n_structures"}}`` with errors in the reported unit
    (``meta["report_factor"]`` times internal).
    """
    elements = structures.elements() if elements is None else [int(e) for e in elements]
    weights = fit_composition(structures, splits["train"], elements)
    factor = float(structures.meta.get("report_factor", 1.0))
    out: dict = {"elements": elements, "weights": weights,
                 "unit": structures.meta.get("report_unit", structures.meta.get("unit"))}
    for name, idx in splits.items():
        err = (predict_composition(structures, idx, elements, weights) - structures.y[idx]) * factor
        out[name] = {
            "mae": float(np.abs(err).mean()) if err.size else float("nan"),
            "rmse": float(np.sqrt((err**2).mean())) if err.size else float("nan"),
            "n_structures": int(err.size),
        }
    return out
