"""Admissible labellings (paths) of a fusion tree.

A :class:`FusionDiagram` is a tree shape with irreps on its leaves, requested output irreps
at the root and an internal cap ``L_int``. A *path* labels every edge (every node: the edge
above it) with an O(3) irrep ``(l, p)`` so that each vertex ``(a, b -> c)`` satisfies the
triangle rule ``|l_a - l_b| <= l_c <= l_a + l_b`` and ``p_c = p_a p_b``, every internal
label has ``l <= L_int``, each leaf label is one of that leaf's irreps and the root label
is one of the outputs.

Enumeration is bottom-up (labels each node can reach) then top-down (keep only labels
that still reach an output), so every label triple kept at a vertex lies on some path.
Paths are listed grouped by output irrep in ``irreps_out`` order; within a group in the
order the contraction engine builds them (vertex triples, then left, then right partial
paths), so ``paths[k]`` is the path whose weight is ``weight[..., k, :]`` in path mode.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

from collections.abc import Mapping, Sequence

from e3nn import o3

from fusion.diagrams.irreps import as_labels, format_labels, sort_labels
from fusion.diagrams.tree import Tree

__all__ = ["FusionDiagram", "resolve_leaf_specs", "Path"]

Path = tuple  # tuple[o3.Irrep, ...]: the label of every node, indexed by node id


def _is_single_spec(spec) -> bool:
    """One spec for every leaf (str, Irreps, Irrep or a list of (l, p) labels)."""
    if isinstance(spec, (str, o3.Irreps, o3.Irrep)):
        return True
    if (
        isinstance(spec, Sequence)
        and spec
        and all(
            isinstance(x, o3.Irrep)
            or (isinstance(x, tuple) and len(x) == 2 and all(isinstance(v, int) for v in x))
            for x in spec
        )
    ):
        return True
    return False


def resolve_leaf_specs(tree: Tree, irreps_in) -> list:
    """Per-leaf irreps specs from ``irreps_in``.

    ``irreps_in`` is one spec for every leaf (``"0e+1o"``, ``Irreps``, ``[(0, 1), (1, -1)]``),
    a dict ``{leaf name: spec}`` (repeated names share it) or a list with one spec per leaf
    (a list of strings is always read per leaf).
    """
    if _is_single_spec(irreps_in):
        return [irreps_in] * tree.num_leaves
    if isinstance(irreps_in, Mapping):
        missing = [n for n in dict.fromkeys(tree.leaves) if n not in irreps_in]
        extra = [n for n in irreps_in if n not in tree.leaves]
        if missing or extra:
            raise ValueError(
                f"irreps_in for tree {tree}: leaves {list(dict.fromkeys(tree.leaves))}, "
                f"missing {missing}, unknown {extra}"
            )
        return [irreps_in[n] for n in tree.leaves]
    if isinstance(irreps_in, Sequence):
        if len(irreps_in) != tree.num_leaves:
            raise ValueError(
                f"irreps_in for tree {tree}: {tree.num_leaves} leaves {list(tree.leaves)} but "
                f"{len(irreps_in)} irreps given: {list(irreps_in)}"
            )
        return list(irreps_in)
    raise ValueError(f"irreps_in for tree {tree}: cannot read {irreps_in!r}")


class FusionDiagram:
    """Tree + leaf irreps + output irreps + internal cap: the admissible paths.

    Args:
        tree: ``"((h, A), A)"``, nested tuples or a :class:`Tree`.
        irreps_in: leaf irreps, see :func:`resolve_leaf_specs` (multiplicities ignored).
        irreps_out: requested root irreps; each must be reachable.
        L_int: cap on ``l`` of internal edges (``None``: no cap).

    Attributes (all immutable):
        leaf_labels[k]: labels of leaf k as given; out_labels: outputs as given.
        reachable[node]: labels the subtree can produce (bottom-up).
        allowed[node]: labels on at least one path (pruned top-down), sorted.
        triples[vertex]: ``(a, b, c)`` label triples used at that vertex.
        partials[node]: partial paths of the subtree, ``(label, path)`` pairs, in the
            order the contraction engine stores them; ``partials[root]`` are the paths.
        paths: full paths (tuples of labels per node id), grouped by output label.
    """

    def __init__(self, tree, irreps_in, irreps_out, L_int: int | None = None):
        self.tree = Tree(tree)
        t = self.tree
        specs = resolve_leaf_specs(t, irreps_in)
        self.leaf_labels = tuple(
            as_labels(s, f"irreps of {t.node_name(k)} of tree {t}") for k, s in enumerate(specs)
        )
        self.out_labels = as_labels(irreps_out, f"irreps_out of tree {t}")
        if L_int is not None and L_int < 0:
            raise ValueError(f"L_int must be >= 0 or None, got {L_int}")
        self.L_int = L_int

        # bottom-up: what each node can carry
        reach: list[tuple[o3.Irrep, ...]] = [sort_labels(ls) for ls in self.leaf_labels]
        for v in t.vertices:
            a, b = t.vertex_children(v)
            cap = None if v == t.root else L_int
            out = {
                c
                for ia in reach[a]
                for ib in reach[b]
                for c in ia * ib
                if cap is None or c.l <= cap
            }
            reach.append(sort_labels(out))
        self.reachable = tuple(reach)
        missing = [ir for ir in self.out_labels if ir not in reach[t.root]]
        if missing:
            raise ValueError(
                f"tree {t} cannot produce output irreps {', '.join(map(str, missing))} "
                f"(requested {format_labels(self.out_labels)}, L_int={L_int}); its root can "
                f"carry {format_labels(reach[t.root])}. Labels each node can reach:\n"
                + t.render(lambda n: format_labels(reach[n]))
            )

        # top-down: keep labels that lie on a path
        allowed: list[tuple[o3.Irrep, ...]] = [()] * t.num_nodes
        allowed[t.root] = sort_labels(self.out_labels)
        for v in reversed(t.vertices):
            a, b = t.vertex_children(v)
            cs = set(allowed[v])
            allowed[a] = sort_labels(
                ia for ia in reach[a] if any(set(ia * ib) & cs for ib in reach[b])
            )
            allowed[b] = sort_labels(
                ib for ib in reach[b] if any(set(ia * ib) & cs for ia in reach[a])
            )
        self.allowed = tuple(allowed)

        # label triples per vertex, ordered by output label (root: irreps_out order)
        triples: dict[int, tuple] = {}
        for v in t.vertices:
            a, b = t.vertex_children(v)
            order = self.out_labels if v == t.root else allowed[v]
            triples[v] = tuple(
                (ia, ib, c)
                for c in order
                for ia in allowed[a]
                for ib in allowed[b]
                if c in set(ia * ib)
            )
        self.triples = triples

        # partial paths, in the engine's slot order
        n = t.num_nodes
        partials: list[tuple] = [()] * n
        for k in range(t.num_leaves):
            order = self.out_labels if k == t.root else allowed[k]
            partials[k] = tuple(
                (ir, tuple(ir if i == k else None for i in range(n))) for ir in order
            )
        for v in t.vertices:
            a, b = t.vertex_children(v)
            out = []
            for ia, ib, c in triples[v]:
                for la, pa in partials[a]:
                    if la != ia:
                        continue
                    for lb, pb in partials[b]:
                        if lb != ib:
                            continue
                        merged = tuple(
                            c if i == v else (x if x is not None else y)
                            for i, (x, y) in enumerate(zip(pa, pb))
                        )
                        out.append((c, merged))
            partials[v] = tuple(out)
        self.partials = tuple(partials)
        self.paths: tuple[Path, ...] = tuple(p for _, p in partials[t.root])

    # -- counting --------------------------------------------------------------------
    def counts(self) -> dict[o3.Irrep, int]:
        """Number of paths per output irrep (in ``irreps_out`` order)."""
        return {ir: sum(p[self.tree.root] == ir for p in self.paths) for ir in self.out_labels}

    def count(self, label=None) -> int:
        """Paths ending in ``label`` (an irrep or ``"1o"``), or all paths."""
        if label is None:
            return len(self.paths)
        return self.counts().get(o3.Irrep(label), 0)

    def path_index(self, path: Path) -> int:
        return self.paths.index(tuple(path))

    # -- text ------------------------------------------------------------------------
    def render(self, path: Path | int | None = None) -> str:
        """The tree with the allowed labels of every edge, or the labels of one path."""
        t = self.tree
        if path is None:
            counts = ", ".join(f"{ir}: {n}" for ir, n in self.counts().items())
            header = (
                f"{t}  ->  {format_labels(self.out_labels)}   paths: {counts}  (L_int={self.L_int})"
            )
            return t.render(lambda node: format_labels(self.allowed[node]), header)
        if isinstance(path, int):
            index, path = path, self.paths[path]
        else:
            path = tuple(path)
            index = self.paths.index(path) if path in self.paths else None
        short = [*t.leaves, *(f"v{k}" for k in range(len(t.children)))]
        header = f"{t}  path {index}: " + " ".join(f"{name}={ir}" for name, ir in zip(short, path))
        return t.render(lambda node: str(path[node]), header)

    def __str__(self) -> str:
        return self.render()

    def __repr__(self) -> str:
        return (
            f"FusionDiagram({str(self.tree)!r}, out={format_labels(self.out_labels)}, "
            f"L_int={self.L_int}, paths={len(self.paths)})"
        )
