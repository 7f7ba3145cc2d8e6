"""Irreps helpers for channelwise fusion diagrams.

A *label* is an O(3) irrep ``(l, p)`` (an :class:`e3nn.o3.Irrep`). Fusion trees are
channelwise: every leaf carries the same channel count ``C`` and each of its labels once,
so a leaf's features are the e3nn irreps ``C x l1 + C x l2 + ...``. Leaf irreps are given
either as labels with the channel count separate (``"0e+1o"``, ``[(0, 1), (1, -1)]``,
``["0e", "1o"]``) or as e3nn irreps whose multiplicity is the channel count
(``"16x0e+16x1o"``).

Layouts. Tensors enter and leave in **e3nn layout** ``[N, C * sum(2l+1)]`` (mul-first: the
block of label ``l`` is ``[N, C, 2l+1]`` flattened, blocks in label order), exactly as
``e3nn.o3.Irreps("Cx0e+Cx1o")`` stores them. :func:`to_blocks` / :func:`from_blocks`
convert to and from per-label blocks ``[N, C, 2l+1]``.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

from collections.abc import Iterable, Sequence

import torch
from e3nn import o3

__all__ = [
    "as_labels",
    "parse_irreps",
    "label_key",
    "sort_labels",
    "channel_irreps",
    "labels_dim",
    "format_labels",
    "to_blocks",
    "from_blocks",
    "component_index",
]


def label_key(ir: o3.Irrep) -> tuple[int, int]:
    """Sort key: by ``l``, natural parity ``(-1)^l`` first (0e, 1o, 1e, 2e, 2o, ...)."""
    return (ir.l, 0 if ir.p == (-1) ** ir.l else 1)


def sort_labels(labels: Iterable[o3.Irrep]) -> tuple[o3.Irrep, ...]:
    return tuple(sorted(set(labels), key=label_key))


def format_labels(labels: Iterable[o3.Irrep]) -> str:
    """``{0e, 1o}`` (in the given order)."""
    return "{" + ", ".join(str(ir) for ir in labels) + "}"


def _is_label_like(x) -> bool:
    if isinstance(x, o3.Irrep):
        return True
    return (
        isinstance(x, tuple)
        and len(x) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in x)
    )


def _as_irrep(x) -> o3.Irrep:
    if isinstance(x, o3.Irrep):
        return x
    if isinstance(x, tuple):
        return o3.Irrep(*x)
    return o3.Irrep(x)


def parse_irreps(spec, what: str = "irreps") -> tuple[tuple[o3.Irrep, ...], int | None]:
    """Labels and channel count of a leaf/output spec.

    Returns ``(labels, channels)``; ``channels`` is ``None`` when the spec gives labels
    only (every multiplicity 1, as in ``"0e+1o"``), else the common multiplicity.
    Raises ``ValueError`` (naming ``what``) for a label listed twice or unequal
    multiplicities: channelwise trees need ``C x`` every label.
    """
    try:
        if _is_label_like(spec):
            irreps = o3.Irreps([(1, _as_irrep(spec))])
        elif isinstance(spec, (str, o3.Irreps)):
            irreps = o3.Irreps(spec)
        elif isinstance(spec, Sequence):
            items = []
            for x in spec:
                items.append((1, _as_irrep(x)))
            irreps = o3.Irreps(items)
        else:
            raise TypeError(type(spec).__name__)
    except (ValueError, TypeError, AssertionError) as err:
        raise ValueError(
            f"{what}: cannot read {spec!r} as irreps (expected e.g. '0e+1o', "
            f"'16x0e+16x1o', [(0, 1), (1, -1)] or ['0e', '1o']): {err}"
        ) from None
    if len(irreps) == 0:
        raise ValueError(f"{what}: empty irreps {spec!r}")
    labels = tuple(ir for _, ir in irreps)
    dup = sorted({ir for ir in labels if labels.count(ir) > 1}, key=label_key)
    if dup:
        raise ValueError(
            f"{what}: label(s) {', '.join(map(str, dup))} listed more than once in {spec!r}; "
            "channelwise fusion trees take each label once, with C channels "
            "(use Irreps(...).simplify())"
        )
    muls = {mul for mul, _ in irreps}
    if len(muls) > 1:
        raise ValueError(
            f"{what}: multiplicities differ in {irreps} ; channelwise fusion trees need "
            "the same channel count C for every label (C x l)"
        )
    mul = muls.pop()
    return labels, (None if mul == 1 else mul)


def as_labels(spec, what: str = "irreps") -> tuple[o3.Irrep, ...]:
    """The labels of ``spec`` in the given order (multiplicities ignored)."""
    return parse_irreps(spec, what)[0]


def labels_dim(labels: Iterable[o3.Irrep]) -> int:
    """sum(2l+1)."""
    return sum(ir.dim for ir in labels)


def channel_irreps(labels: Iterable[o3.Irrep], channels: int) -> o3.Irreps:
    """``C x l1 + C x l2 + ...``: the e3nn irreps of a channelwise tensor."""
    return o3.Irreps([(channels, ir) for ir in labels])


def to_blocks(x: torch.Tensor, labels: Sequence[o3.Irrep], channels: int) -> list[torch.Tensor]:
    """e3nn layout ``[N, C * sum(2l+1)]`` -> per-label views ``[N, C, 2l+1]``."""
    expected = channels * labels_dim(labels)
    if x.dim() != 2 or x.shape[1] != expected:
        raise ValueError(
            f"expected a tensor [N, {expected}] for irreps {channel_irreps(labels, channels)}, "
            f"got shape {list(x.shape)}"
        )
    blocks, start = [], 0
    for ir in labels:
        stop = start + channels * ir.dim
        blocks.append(x[:, start:stop].reshape(x.shape[0], channels, ir.dim))
        start = stop
    return blocks


def from_blocks(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-label blocks ``[N, C, 2l+1]`` -> e3nn layout ``[N, C * sum(2l+1)]``."""
    return torch.cat([b.reshape(b.shape[0], -1) for b in blocks], dim=1)


def component_index(
    labels: Sequence[o3.Irrep], channels: int, select: Sequence[o3.Irrep] | None = None
) -> torch.Tensor:
    """Columns of an e3nn-layout tensor ``[N, C * dim]`` in component-major order.

    ``x.index_select(1, idx).view(N, D, C)`` holds the components of the labels ``select``
    (default: all, in order) as rows ``D = sum(2l+1)``. With ``select=None`` the index is a
    permutation; ``argsort`` of it maps component-major ``[N, D * C]`` back to e3nn layout.
    """
    start, acc = {}, 0
    for ir in labels:
        start[ir] = acc
        acc += channels * ir.dim
    select = labels if select is None else select
    index = [
        start[ir] + c * ir.dim + m for ir in select for m in range(ir.dim) for c in range(channels)
    ]
    return torch.tensor(index, dtype=torch.long)
