"""Consistent colours, markers and labels per (model, variant) for every figure.

A model gets a hue family (MACE blue, Cormorant orange, UNiTE green, composition grey);
its variants are shades of that hue with different markers, so "same model" reads as
"same colour" and baseline vs fusion is still told apart in greyscale print. Unknown
models and variants get a stable fallback (derived from a checksum of the name, not from
Python's per-process ``hash``), so a new variant is styled the same in every run.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

# Shades per model family, darkest first: the baseline takes the darkest, fusion variants
# the following ones (ColorBrewer-like sequential hues, distinct for colour-blind readers
# by lightness as well as hue).
_FAMILIES: dict[str, tuple[str, ...]] = {
    "mace": ("#08306b", "#2171b5", "#6baed6", "#4292c6", "#9ecae1"),
    "cormorant": ("#7f2704", "#d94801", "#fd8d3c", "#f16913", "#fdae6b"),
    "unite": ("#00441b", "#238b45", "#74c476", "#41ab5d", "#a1d99b"),
    "composition": ("#525252", "#737373", "#969696", "#bdbdbd", "#d9d9d9"),
}
_FALLBACK_FAMILIES: tuple[tuple[str, ...], ...] = (
    ("#3f007d", "#6a51a3", "#9e9ac8", "#807dba", "#bcbddc"),  # purple
    ("#67000d", "#cb181d", "#fb6a4a", "#ef3b2c", "#fc9272"),  # red
    ("#49006a", "#ae017e", "#f768a1", "#dd3497", "#fa9fb5"),  # magenta
    ("#003c30", "#01665e", "#35978f", "#80cdc1", "#c7eae5"),  # teal
)

_VARIANT_ORDER = ("baseline", "fusion", "fusion-vertex", "fusion-3body")
_MARKERS = {
    "baseline": "o",
    "fusion": "s",
    "fusion-vertex": "D",
    "fusion-3body": "^",
    "literature": "*",
}
_FALLBACK_MARKERS = ("v", "P", "X", "h", "<", ">", "p")

MODEL_LABELS = {
    "mace": "MACE",
    "cormorant": "Cormorant",
    "unite": "UNiTE",
    "composition": "composition baseline",
}


@dataclass(frozen=True)
class Style:
    color: str
    marker: str
    linestyle: str
    label: str


def _stable_index(name: str, n: int) -> int:
    return zlib.crc32(name.encode("utf-8")) % n


def model_label(model: str) -> str:
    return MODEL_LABELS.get(model, model)


def label(model: str, variant: str) -> str:
    """Legend label: "MACE baseline", "MACE + fusion", "composition baseline"."""
    if model == "composition":
        return MODEL_LABELS["composition"]
    name = model_label(model)
    if variant == "baseline":
        return f"{name} baseline"
    if variant == "literature":
        return f"{name} (published)"
    return f"{name} + {variant}"


def style_for(model: str, variant: str) -> Style:
    """Colour, marker, line style and label of one (model, variant)."""
    family = _FAMILIES.get(model)
    if family is None:
        family = _FALLBACK_FAMILIES[_stable_index(model, len(_FALLBACK_FAMILIES))]
    if variant in _VARIANT_ORDER:
        shade = _VARIANT_ORDER.index(variant)
    elif variant == "literature":
        shade = 0
    else:  # other fusion variants share the lighter shades
        shade = 1 + _stable_index(variant, len(family) - 1)
    marker = _MARKERS.get(variant)
    if marker is None:
        marker = _FALLBACK_MARKERS[_stable_index(variant, len(_FALLBACK_MARKERS))]
    linestyle = "--" if model == "composition" else (":" if variant == "literature" else "-")
    return Style(
        color=family[shade], marker=marker, linestyle=linestyle, label=label(model, variant)
    )


def sort_key(model: str, variant: str) -> tuple:
    """Order for legends and tables: composition first, models A-Z, baseline first."""
    variant_rank = (
        _VARIANT_ORDER.index(variant)
        if variant in _VARIANT_ORDER
        else (len(_VARIANT_ORDER) + 1 if variant == "literature" else len(_VARIANT_ORDER))
    )
    return (model != "composition", model, variant_rank, variant)
