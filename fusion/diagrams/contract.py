"""Channelwise contraction engine: :class:`FusionTree`, a torch module for one fusion diagram.

Evaluation is bottom-up, one batched op per vertex over all of its label triples (and, in
``path`` mode, all pairs of partial paths below it). Internally a node's value is one
tensor ``[D, N, C]`` (components first, so gathering and scattering components are row
operations): the *slots* of the node (its labels in ``vertex`` mode, its partial paths in
``path`` mode) stacked along ``D``. A vertex turns its children ``x [Da, N, C]`` and
``y [Db, N, C]`` into its *product slots* (left slot, right slot, output label) with the
real CG coupling (:func:`fusion.diagrams.cg.coupling`, component-normalised) by either

- ``dense``: ``M [Dp, Da*Db] @ (x (x) y) [Da*Db, N*C]`` — one matmul with a precomputed
  block-sparse CG matrix of this vertex (never a dense m-leg coupling tensor), or
- ``sparse``: ``index_add(K, coef * x[I] * y[J])`` over the CG non-zeros — used when ``M``
  would be mostly zeros (many partial paths deep in ``path`` mode).

A weighted vertex then multiplies every product slot by its weight (per channel, and per
species of the row's centre atom if ``num_species`` is set) and sums the slots with the same
output label: in ``vertex`` mode every vertex does this over its triples; in ``path`` mode
only the root does, over whole paths. The engine picks the strategy per vertex
(``strategy="auto"``); both give the same numbers.
"""

from __future__ import annotations

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import math
from functools import lru_cache
from typing import NamedTuple

import torch
from e3nn import o3
from torch import nn

from fusion.diagrams.cg import coupling
from fusion.diagrams.irreps import channel_irreps, component_index, parse_irreps
from fusion.diagrams.paths import FusionDiagram, resolve_leaf_specs
from fusion.diagrams.tree import Tree
from fusion.diagrams.vertices import Leaf, LeafRoot, Vertex

__all__ = ["FusionTree", "Instruction", "independent_paths"]

_WEIGHT_MODES = ("path", "vertex")
_STRATEGIES = ("auto", "dense", "sparse")
_BASES = ("full", "independent")


def _tie_groups(tree: Tree, diagram: FusionDiagram, tie) -> tuple[tuple[int, ...], ...]:
    """Leaf positions that carry the same tensor: ``tie`` or leaves with equal names."""
    if tie is None:
        by_name: dict = {}
        for k, name in enumerate(tree.leaves):
            by_name.setdefault(name, []).append(k)
        groups = [g for g in by_name.values() if len(g) > 1]
    else:
        groups = [sorted(int(k) for k in g) for g in tie]
    seen: set = set()
    for g in groups:
        if any(k < 0 or k >= tree.num_leaves for k in g) or seen & set(g):
            raise ValueError(
                f"tie {tie!r} for tree {tree}: groups must be disjoint leaf positions "
                f"0..{tree.num_leaves - 1}"
            )
        seen |= set(g)
        if len({diagram.leaf_labels[k] for k in g}) > 1:
            raise ValueError(
                f"tree {tree}: tied leaves {g} must have the same irreps, got "
                f"{[str(channel_irreps(diagram.leaf_labels[k], 1)) for k in g]}"
            )
    return tuple(tuple(g) for g in sorted(groups))


@lru_cache(maxsize=256)
def independent_paths(
    tree: str,
    leaf_labels: tuple[tuple[str, ...], ...],
    out_labels: tuple[str, ...],
    L_int: int | None,
    tie: tuple[tuple[int, ...], ...],
    seed: int = 0,
) -> tuple[int, ...]:
    """Positions (in ``FusionDiagram.paths``) of a maximal set of paths that are linearly
    independent as functions of the leaves when the leaves of each ``tie`` group carry the
    same tensor. Greedy in path order (low internal labels first); the rank test runs on the
    path values of one channel at random unit-variance inputs (float64), with the zero test
    relative to that input scale (:func:`fusion.diagrams.symmetric.independent_columns`),
    so paths whose symmetrised part vanishes are never kept."""
    from fusion.diagrams.symmetric import independent_columns, single_thread

    # fork_rng: building the reference tree draws weights; a cached call must not leave the
    # global RNG in another state than a fresh one (seeded model builds stay reproducible)
    with single_thread(), torch.random.fork_rng(devices=[]):
        full = FusionTree(
            tree, [list(map(o3.Irrep, ls)) for ls in leaf_labels], list(out_labels),
            channels=1, L_int=L_int, normalize=False,
        ).double()
        d = full.diagram
        counts = d.counts()
        n = max(64, 4 * max(counts.values(), default=1))
        g = torch.Generator().manual_seed(seed)
        owner = list(range(len(leaf_labels)))
        for grp in tie:
            for k in grp:
                owner[k] = grp[0]
        dims = [full.irreps_in[k].dim for k in range(len(leaf_labels))]
        draws = {k: torch.randn(n, dims[k], generator=g, dtype=torch.float64)
                 for k in sorted(set(owner))}
        values = full.path_values([draws[owner[k]] for k in range(len(leaf_labels))])
        kept, start = [], 0
        for count, v in zip(counts.values(), values):  # v [N, 1, P, 2l+1]
            cols = v[:, 0].permute(0, 2, 1).reshape(-1, count)  # [N*(2l+1), P]
            kept += [start + i for i in independent_columns(cols)]
            start += count
    return tuple(kept)


class Instruction(NamedTuple):
    """What one vertex computes (declarative; the engine's buffers are built from it)."""

    vertex: int  # node id (see fusion.diagrams.tree)
    left: int  # node id of the left child
    right: int  # node id of the right child
    triples: tuple  # (a, b, c) label triples, c the output label
    weighted: bool  # weights applied here (every vertex in vertex mode, root in path mode)
    weight_slice: tuple[int, int]  # rows of FusionTree.weight used here, [start, stop)
    strategy: str  # "dense" or "sparse"


class FusionTree(nn.Module):
    """A fusion diagram as a torch module (channelwise, e3nn-style immutable config).

    Args:
        tree: ``"((h, A), A)"``, nested tuples or a :class:`~fusion.diagrams.tree.Tree`.
        irreps_in: leaf irreps: one spec for every leaf, ``{leaf name: spec}`` or one spec
            per leaf (see :func:`~fusion.diagrams.paths.resolve_leaf_specs`). A spec is
            labels (``"0e+1o"``) or ``C x`` irreps (``"16x0e+16x1o"``).
        irreps_out: output labels (or ``C x`` irreps); each must be reachable.
        channels: channel count ``C`` (needed unless the irreps carry it).
        L_int: cap on ``l`` of internal edges (``None``: no cap).
        weights: ``"path"``: one weight per (path, channel), applied at the root;
            ``"vertex"``: one weight per (vertex, label triple, channel), applied at every
            vertex (the product of a path's vertex weights is its path weight).
        num_species: if set, every weight also has a species index; ``forward`` then needs
            ``species [N]`` (integer, the row's centre atom).
        channel_mixing: a learnable ``C x C`` linear per label on every internal edge.
        normalize: scale so unit-variance inputs and ``N(0, 1)`` weights give outputs of
            order one: ``1/sqrt(#paths)`` per output label (path mode) or
            ``1/sqrt(#triples)`` per vertex output label (vertex mode).
        strategy: ``"auto"``, ``"dense"`` or ``"sparse"`` vertex contraction (same results).
        basis: ``"full"`` (every path) or ``"independent"`` (path mode, no channel mixing):
            leaves tied together (``tie``; default: leaves with the same name) always carry
            the same tensor, or the caller sums over their permutations, so only the part of
            each path symmetric in them matters. Keep a maximal set of paths that are
            linearly independent as functions of the untied inputs (greedy in path order,
            rank test on random inputs, :func:`independent_paths`): the same function
            space with weights = rank. An output label left with no path
            (``vanishing_outputs``, e.g. ``1e`` from ``0e x Sym^2(A)``) is identically zero
            and has no weights.
        tie: groups of leaf positions that carry the same tensor (``basis="independent"``);
            ``None``: leaves with equal names.

    Shapes: ``forward([x_0, ..., x_{m-1}], species=None)`` with ``x_k [N, irreps_in[k].dim]``
    in e3nn layout returns ``[N, irreps_out.dim]`` in e3nn layout.

    Attributes: ``tree``, ``diagram`` (:class:`~fusion.diagrams.paths.FusionDiagram`: paths,
    counts, rendering), ``channels``, ``irreps_in`` (list of ``o3.Irreps`` per leaf),
    ``irreps_out``, ``instructions`` (one :class:`Instruction` per vertex), ``weight``
    (``[S, W, C]``, ``S = num_species or 1``), ``mixing`` (``[M, C, C]`` if channel_mixing).
    """

    __jit_unused_properties__ = ["weight_numel", "num_paths"]

    def __init__(
        self,
        tree,
        irreps_in,
        irreps_out,
        channels: int | None = None,
        L_int: int | None = None,
        weights: str = "path",
        num_species: int | None = None,
        channel_mixing: bool = False,
        normalize: bool = True,
        strategy: str = "auto",
        basis: str = "full",
        tie=None,
    ):
        super().__init__()
        tree = Tree(tree)
        if basis not in _BASES:
            raise ValueError(f"basis must be one of {_BASES}, got {basis!r}")
        if basis == "independent" and (weights != "path" or channel_mixing):
            raise ValueError(
                "basis='independent' needs weights='path' and channel_mixing=False (vertex "
                "weights and channel mixing do not act path by path)"
            )
        if weights not in _WEIGHT_MODES:
            raise ValueError(f"weights must be one of {_WEIGHT_MODES}, got {weights!r}")
        if strategy not in _STRATEGIES:
            raise ValueError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
        if num_species is not None and num_species < 1:
            raise ValueError(f"num_species must be >= 1 or None, got {num_species}")

        # channel count: from the argument and/or the multiplicities, all consistent
        specs = resolve_leaf_specs(tree, irreps_in)
        found = {}
        for k, spec in enumerate(specs):
            _, mul = parse_irreps(spec, f"irreps of {tree.node_name(k)} of tree {tree}")
            if mul is not None:
                found[tree.node_name(k)] = mul
        _, mul_out = parse_irreps(irreps_out, f"irreps_out of tree {tree}")
        if mul_out is not None:
            found["irreps_out"] = mul_out
        if channels is not None:
            found = {"channels": channels, **found}
        if not found:
            raise ValueError(
                f"FusionTree {tree}: channel count unknown; pass channels=C or irreps with "
                "multiplicities such as '16x0e+16x1o'"
            )
        if len(set(found.values())) > 1:
            raise ValueError(
                f"FusionTree {tree}: inconsistent channel counts between leaves and inputs "
                f"(channelwise trees need one C): {found}"
            )
        C = next(iter(found.values()))
        if C < 1:
            raise ValueError(f"channels must be >= 1, got {C}")

        self.tree = tree
        self.diagram = d = FusionDiagram(tree, specs, irreps_out, L_int)
        self.channels = C
        self.L_int = L_int
        self.weight_mode = weights
        self.num_species = num_species
        self.channel_mixing = channel_mixing
        self.normalize = normalize
        self.irreps_in = [channel_irreps(ls, C) for ls in d.leaf_labels]
        self.irreps_out = channel_irreps(d.out_labels, C)
        self.basis = basis
        if basis == "independent" and tree.num_leaves > 1:
            groups = _tie_groups(tree, d, tie)
            kept = independent_paths(
                str(tree),
                tuple(tuple(str(ir) for ir in ls) for ls in d.leaf_labels),
                tuple(str(ir) for ir in d.out_labels),
                L_int,
                groups,
            )
        else:
            kept = tuple(range(len(d.paths)))
        self.kept_paths = kept  # indices into diagram.paths, one weight row each
        self.paths = tuple(d.paths[i] for i in kept)
        self.vanishing_outputs = tuple(
            ir for ir in d.out_labels if not any(p[tree.root] == ir for p in self.paths)
        )
        dtype = torch.get_default_dtype()
        t = tree
        root = t.root

        # slots of every node: labels (vertex mode) or partial paths (path mode)
        def slot_labels(node):
            if node == root:
                return list(d.out_labels)
            if weights == "path":
                return [lab for lab, _ in d.partials[node]]
            return list(d.allowed[node])

        slots = [slot_labels(n) for n in range(t.num_nodes)]
        offsets = []
        for s in slots:
            off, acc = [], 0
            for ir in s:
                off.append(acc)
                acc += ir.dim
            offsets.append((off, acc))

        # leaves: gather the used labels from e3nn layout, component-major
        leaf_modules = []
        for k in range(t.num_leaves):
            index = component_index(d.leaf_labels[k], C, slots[k])
            rows = component_index(d.leaf_labels[k], 1, slots[k])  # rows of [D_all, N, C]
            leaf_modules.append(Leaf(index, offsets[k][1], C, rows))
        self.leaf_modules = nn.ModuleList(leaf_modules)

        # vertices
        instructions, vertex_modules = [], []
        n_weights = 0
        n_mix = 0
        for v in t.vertices:
            a, b = t.vertex_children(v)
            triples = d.triples[v]
            (off_a, da), (off_b, db) = offsets[a], offsets[b]
            # product slots (left slot, right slot, label c) in the diagram's partial order
            if weights == "path":
                prod = [
                    (sa, sb, c, ti)
                    for ti, (ia, ib, c) in enumerate(triples)
                    for sa, la in enumerate(slots[a])
                    if la == ia
                    for sb, lb in enumerate(slots[b])
                    if lb == ib
                ]
                if v == root:  # one product slot per path (diagram order): keep the basis
                    prod = [prod[i] for i in kept]
            else:
                prod = [
                    (slots[a].index(ia), slots[b].index(ib), c, ti)
                    for ti, (ia, ib, c) in enumerate(triples)
                ]
            ii, jj, kk, cc = [], [], [], []
            dp = 0
            prod_off = []
            for sa, sb, c, _ in prod:
                la, lb = slots[a][sa], slots[b][sb]
                cg = coupling(la.l, lb.l, c.l, dtype=torch.float64)
                nz = cg.nonzero(as_tuple=False)
                ii.append(nz[:, 0] + off_a[sa])
                jj.append(nz[:, 1] + off_b[sb])
                kk.append(nz[:, 2] + dp)
                cc.append(cg[nz[:, 0], nz[:, 1], nz[:, 2]])
                prod_off.append(dp)
                dp += c.dim
            if not ii:  # every path vanished (only vanishing outputs): nothing to contract
                ii, jj, kk, cc = [torch.zeros(0, dtype=torch.long)] * 3 + [
                    torch.zeros(0, dtype=torch.float64)
                ]
            i, j, k_, coef = (torch.cat(x) for x in (ii, jj, kk, cc))
            nnz = coef.numel()

            weighted = v == root or weights == "vertex"
            dout = offsets[v][1] if weighted else dp
            reduce = None
            w_start = n_weights
            if weighted:
                out_slots = slots[v]
                if weights == "path":  # root in path mode: one weight per path
                    per_label = {ir: sum(1 for _, _, c, _ in prod if c == ir) for ir in out_slots}
                    wrow = list(range(len(prod)))
                else:  # one weight per triple
                    per_label = {ir: sum(1 for *_, c in triples if c == ir) for ir in out_slots}
                    wrow = [ti for *_, ti in prod]
                widx, out, norm = [], [], []
                for (_, _, c, _), w_row in zip(prod, wrow):
                    s = out_slots.index(c)
                    for m in range(c.dim):
                        widx.append(n_weights + w_row)
                        out.append(offsets[v][0][s] + m)
                        norm.append(1.0 / math.sqrt(per_label[c]) if normalize else 1.0)
                n_weights += len(prod) if weights == "path" else len(triples)
                reduce = (
                    torch.tensor(widx, dtype=torch.long),
                    torch.tensor(out, dtype=torch.long),
                    torch.tensor(norm, dtype=torch.float64),
                )
            mixing = None
            if channel_mixing and v != root:
                labels_v = list(d.allowed[v])
                mix_index = [n_mix + labels_v.index(ir) for ir in slots[v] for _ in range(ir.dim)]
                n_mix += len(labels_v)
                mixing = (torch.tensor(mix_index, dtype=torch.long), 1.0 / math.sqrt(C))

            dense_size = dp * da * db
            if strategy == "auto":
                dense = dense_size <= 32 * nnz and dense_size <= 2**22
            else:
                dense = strategy == "dense"
            vertex_modules.append(
                Vertex(a, b, (da, db, dp, dout), dense, (i, j, k_, coef), reduce, mixing)
            )
            instructions.append(
                Instruction(
                    v,
                    a,
                    b,
                    triples,
                    weighted,
                    (w_start, n_weights),
                    "dense" if dense else "sparse",
                )
            )
        self.vertex_modules = nn.ModuleList(vertex_modules)
        self.instructions = tuple(instructions)

        # one-leaf tree: weights per (label, channel) on the leaf itself
        self.leaf_root = None
        if t.num_leaves == 1:
            widx, norm = [], []
            for s, ir in enumerate(d.out_labels):
                widx += [s] * ir.dim
                norm += [1.0] * ir.dim
            n_weights = len(d.out_labels)
            self.leaf_root = LeafRoot(widx, norm)

        # Leaf k when the root couples leaf k with an unweighted subtree of all other leaves
        # (path weights, no channel mixing), else -1. Then forward = root_value(leaf k,
        # subtree_value(...)) and the subtree is multilinear in its leaves, so sums over
        # leaf tensors (e.g. over neighbours) can be taken before the weighted root.
        self.split_leaf: int = self._find_root_split()

        S = num_species or 1
        self.weight = nn.Parameter(torch.randn(S, n_weights, C, dtype=dtype))  # [S, W, C]
        if channel_mixing and n_mix > 0:
            self.mixing = nn.Parameter(torch.randn(n_mix, C, C, dtype=dtype))  # [M, C, C]
        else:
            self.register_buffer("mixing", torch.zeros(0, C, C, dtype=dtype), False)

        # root [Dout, N, C] -> e3nn layout [N, C * dim]: column index into [N, Dout * C]
        dim_out = offsets[root][1]
        out_index = torch.argsort(component_index(d.out_labels, C))
        self.register_buffer("out_index", out_index, False)
        self.dim_out = dim_out

        # TorchScript-friendly facts for input checks and error messages
        self.num_leaves = t.num_leaves
        self.tree_str = str(t)
        self.leaf_dims = [ir.dim for ir in self.irreps_in]
        self.leaf_desc = [
            f"{t.node_name(k)} of tree {t} (irreps {self.irreps_in[k]}, expected shape "
            f"[N, {self.irreps_in[k].dim}])"
            for k in range(t.num_leaves)
        ]
        self.has_species = num_species is not None
        self.num_species_int = S

    # -- information ----------------------------------------------------------------
    @property
    def weight_numel(self) -> int:
        return self.weight.numel()

    @property
    def num_paths(self) -> int:
        """Paths with a weight (the basis: all diagram paths unless basis="independent")."""
        return len(self.paths)

    def counts(self) -> dict:
        """Paths with a weight per output label (``diagram.counts()`` for basis="full")."""
        root = self.tree.root
        return {ir: sum(p[root] == ir for p in self.paths) for ir in self.diagram.out_labels}

    def render(self, path=None) -> str:
        """The diagram drawn with allowed labels, or with the labels of one path."""
        return self.diagram.render(path)

    def extra_repr(self) -> str:
        counts = ", ".join(f"{ir}: {n}" for ir, n in self.counts().items())
        return (
            f"basis={self.basis}, tree={self.tree_str}, "
            f"irreps_in=[{', '.join(map(str, self.irreps_in))}], "
            f"irreps_out={self.irreps_out}, L_int={self.L_int}, weights={self.weight_mode}, "
            f"num_species={self.num_species}, paths=({counts}), weight_numel={self.weight_numel}"
        )

    # -- evaluation ------------------------------------------------------------------
    def _check(self, leaves: list[torch.Tensor], species: torch.Tensor | None) -> int:
        if len(leaves) != self.num_leaves:
            raise ValueError(
                "FusionTree "
                + self.tree_str
                + ": expected "
                + str(self.num_leaves)
                + " leaf tensors, got "
                + str(len(leaves))
            )
        n = leaves[0].shape[0]
        for k, x in enumerate(leaves):
            if x.dim() != 2 or x.shape[1] != self.leaf_dims[k] or x.shape[0] != n:
                raise ValueError(
                    "bad input for "
                    + self.leaf_desc[k]
                    + ": got shape "
                    + str(list(x.shape))
                    + (
                        ""
                        if x.dim() != 2 or x.shape[0] == n
                        else " (leaf 0 has " + str(n) + " rows)"
                    )
                )
        if self.has_species:
            if species is None:
                raise ValueError(
                    "FusionTree "
                    + self.tree_str
                    + " has per-species weights (num_species="
                    + str(self.num_species_int)
                    + "): pass species [N]"
                )
            if species.dim() != 1 or species.shape[0] != n:
                raise ValueError(
                    "FusionTree "
                    + self.tree_str
                    + ": species must have shape ["
                    + str(n)
                    + "], got "
                    + str(list(species.shape))
                )
        return n

    def _evaluate(
        self, leaves: list[torch.Tensor], species: torch.Tensor | None, apply_root: bool
    ) -> torch.Tensor:
        """Root value ``[Dout, N, C]`` (or ``[P*d..., N, C]`` path values if not apply_root)."""
        self._check(leaves, species)
        spc: torch.Tensor | None = species if self.has_species else None
        nodes: list[torch.Tensor] = []
        for k, leaf in enumerate(self.leaf_modules):
            nodes.append(leaf(leaves[k]))  # [D_k, N, C]
        last = len(self.vertex_modules) - 1
        for idx, vertex in enumerate(self.vertex_modules):
            x, y = nodes[vertex.left], nodes[vertex.right]
            nodes.append(vertex(x, y, self.weight, self.mixing, spc, apply_root or idx != last))
        root = nodes[-1]
        if self.leaf_root is not None and apply_root:
            root = self.leaf_root(root, self.weight, spc)
        return root

    def forward(
        self, leaves: list[torch.Tensor], species: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``leaves[k] [N, irreps_in[k].dim]`` (e3nn layout) -> ``[N, irreps_out.dim]``."""
        root = self._evaluate(leaves, species, True)  # [Dout, N, C]
        n = root.shape[1]
        flat = root.permute(1, 0, 2).reshape(n, self.dim_out * self.channels)
        return flat.index_select(1, self.out_index)

    # -- root split: evaluate the root's subtree and the root separately ------------------
    @torch.jit.unused
    def _find_root_split(self) -> int:
        """See :attr:`split_leaf`."""
        if self.weight_mode != "path" or self.channel_mixing or self.leaf_root is not None:
            return -1
        if len(self.vertex_modules) < 2:
            return -1
        root = self.vertex_modules[-1]
        # the vertex evaluated just before the root
        subtree = len(self.leaf_modules) + len(self.vertex_modules) - 2
        children = {root.left, root.right}
        leaf = [c for c in children if c < len(self.leaf_modules)]
        if len(leaf) != 1 or children != {leaf[0], subtree}:
            return -1
        if any(v.weighted or v.mixed for v in list(self.vertex_modules)[:-1]):
            return -1
        return int(leaf[0])

    def subtree_value(self, leaves: list[torch.Tensor], components: bool = False
                      ) -> torch.Tensor:
        """Value ``[D, N, C]`` of the root's subtree when :attr:`split_leaf` >= 0; ``leaves``
        as for ``forward`` (the root's own leaf is not read), or with ``components`` in
        component-major layout ``[D_all, N, C]`` (every label of the leaf, in order)."""
        nodes: list[torch.Tensor] = []
        for k, leaf in enumerate(self.leaf_modules):
            if k == self.split_leaf:
                nodes.append(leaves[k])
            elif components:
                nodes.append(leaf.from_components(leaves[k]))
            else:
                nodes.append(leaf(leaves[k]))
        last = len(self.vertex_modules) - 1
        for idx, vertex in enumerate(self.vertex_modules):
            if idx < last:
                x, y = nodes[vertex.left], nodes[vertex.right]
                nodes.append(vertex(x, y, self.weight, self.mixing, None, True))
        return nodes[-1]

    def root_value(self, leaf: torch.Tensor, subtree: torch.Tensor,
                   species: torch.Tensor | None = None) -> torch.Tensor:
        """The weighted root on leaf :attr:`split_leaf` (e3nn layout ``[N, dim]``) and a
        subtree value ``[D, N, C]`` -> ``[N, irreps_out.dim]``, as ``forward``."""
        x = leaf
        for k, module in enumerate(self.leaf_modules):
            if k == self.split_leaf:
                x = module(leaf)
        spc: torch.Tensor | None = species if self.has_species else None
        out = subtree
        last = len(self.vertex_modules) - 1
        for idx, vertex in enumerate(self.vertex_modules):
            if idx == last:
                if vertex.left == self.split_leaf:
                    out = vertex(x, subtree, self.weight, self.mixing, spc, True)
                else:
                    out = vertex(subtree, x, self.weight, self.mixing, spc, True)
        n = out.shape[1]
        flat = out.permute(1, 0, 2).reshape(n, self.dim_out * self.channels)
        return flat.index_select(1, self.out_index)

    @torch.jit.unused
    def path_values(self, leaves, species=None) -> list[torch.Tensor]:
        """Unweighted path values (path mode): per output irrep ``[N, C, n_paths, 2l+1]``.

        ``forward`` is ``sum_p weight[s, p, c] * norm_p * path_values`` (see
        :meth:`path_coefficients`).
        """
        if self.weight_mode != "path":
            raise ValueError("path_values needs weights='path'")
        root = self._evaluate(list(leaves), species, False)  # [sum_p d_p, N, C]
        n = root.shape[1]
        out, start = [], 0
        for ir, count in self.counts().items():
            stop = start + count * ir.dim
            block = root[start:stop].reshape(count, ir.dim, n, self.channels)
            out.append(block.permute(2, 3, 0, 1))
            start = stop
        return out

    @torch.jit.unused
    def path_coefficients(self) -> torch.Tensor:
        """Effective weight of every path, ``[S, P, C]``, normalisation included.

        Path mode: ``weight * 1/sqrt(#paths of the label)``; vertex mode: the product over
        vertices of the (normalised) weight of the triple the path uses there. Without
        channel mixing, ``forward`` = ``sum_p coef[s, p, c] * path value p``.
        """
        d, t = self.diagram, self.tree
        if t.num_leaves == 1:
            return self.weight
        counts = self.counts()
        if self.weight_mode == "path":
            scale = [
                1.0 / math.sqrt(counts[p[t.root]]) if self.normalize else 1.0 for p in self.paths
            ]
            return self.weight * self.weight.new_tensor(scale)[None, :, None]
        coef = self.weight.new_ones(self.weight.shape[0], len(d.paths), self.channels)
        for ins in self.instructions:
            start = ins.weight_slice[0]
            per_label = {}
            for *_, c in ins.triples:
                per_label[c] = per_label.get(c, 0) + 1
            rows, scale = [], []
            for p in d.paths:
                triple = (p[ins.left], p[ins.right], p[ins.vertex])
                rows.append(start + ins.triples.index(triple))
                scale.append(1.0 / math.sqrt(per_label[triple[2]]) if self.normalize else 1.0)
            idx = torch.tensor(rows, device=self.weight.device)
            coef = coef * self.weight[:, idx] * self.weight.new_tensor(scale)[None, :, None]
        return coef

    def __repr__(self) -> str:
        return f"FusionTree({self.extra_repr()})"
