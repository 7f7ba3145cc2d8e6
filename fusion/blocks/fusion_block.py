"""Fusion blocks: fusion trees applied to an atom's neighbourhood.

For atom ``i`` with node features ``h_i`` and edge messages
``m_ij = R(r_ij) * (Y(r_ij / |r_ij|) (x) W h_j)``::

    FusionBlock(nu)_i = sum_{distinct j_1..j_{nu-1}} Tree(h_i, m_ij1, ..., m_ij(nu-1))

a ``nu``-body equivariant function of the neighbourhood. Two evaluations, both O(edges):

- ``density``: ``Tree(h_i, A_i, ..., A_i)`` with ``A_i = sum_j m_ij`` (includes the terms
  where neighbours coincide, as MACE's product basis does);
- ``exact``: only distinct neighbours, by multilinearity and Moebius inversion over the
  ways neighbours can coincide. For ``nu = 3``:
  ``Tree(h_i, A_i, A_i) - sum_j Tree(h_i, m_ij, m_ij)`` (the sum over ``j != k``);
  ``nu = 4`` also works (every correction has at most one repeated neighbour; from
  ``nu = 5`` on a correction ``sum_{j,k} Tree(.., m_j, m_j, m_k, m_k)`` is not O(edges)).

:class:`MessageFusion` is the core (precomputed messages), :class:`EdgeMessage`
(:mod:`fusion.blocks.edge_message`) builds the
messages, :class:`FusionBlock` is both. Conventions follow mace-torch: ``edge_index[0]`` is
the sender ``j``, ``edge_index[1]`` the receiver ``i``, edge vectors
``positions[receiver] - positions[sender]``, spherical harmonics ``normalize=True``,
``normalization="component"``.
"""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from fusion.blocks.edge_message import EdgeMessage, labels_and_channels
from fusion.diagrams.contract import FusionTree
from fusion.diagrams.irreps import channel_irreps
from fusion.diagrams.tree import Tree, left_comb

__all__ = ["EdgeMessage", "MessageFusion", "FusionBlock", "default_tree", "MODES"]

MODES = ("density", "exact")


def default_tree(nu: int, node_leaf: str = "h", message_leaf: str = "A") -> Tree:
    """Left comb ``((h, A), A) ...`` with ``nu - 1`` message leaves."""
    if nu < 2:
        raise ValueError(f"nu must be >= 2 (the centre and at least one neighbour), got {nu}")
    return left_comb([node_leaf] + [message_leaf] * (nu - 1))


def _exact_terms(num_messages: int) -> list[tuple[float, tuple[int, ...]]]:
    """Moebius corrections turning ``sum over all neighbour tuples`` into distinct ones.

    Set partitions of the message positions with one block ``B`` of size >= 2 (the
    neighbours in ``B`` coincide, the others are free): coefficient
    ``(-1)^(|B|-1) (|B|-1)!``. Partitions with two or more such blocks would need pair
    sums over edges; they first appear for 4 message leaves.
    """
    if num_messages > 3:
        raise ValueError(
            f"exact mode supports nu <= 4 (at most 3 message leaves), got {num_messages} "
            "message leaves; use mode='density'"
        )
    terms = []
    for size in range(2, num_messages + 1):
        for block in itertools.combinations(range(num_messages), size):
            terms.append(((-1.0) ** (size - 1) * math.factorial(size - 1), block))
    return terms


class MessageFusion(nn.Module):
    """FusionBlock core: a fusion tree over ``h_i`` and precomputed edge messages.

    Args:
        irreps_node: node feature irreps (labels with ``channels``, or ``Cx`` irreps).
        irreps_message: message irreps (same ``C``).
        irreps_out: output labels.
        nu: body order (1 + number of message leaves; default 3); if ``tree`` is given too,
            it must agree.
        tree: a tree with exactly one leaf named ``node_leaf`` (``h_i``); every other leaf
            is a message leaf. Default: :func:`default_tree` ``((h, A), A)...``.
        mode: ``"density"`` or ``"exact"`` (distinct neighbours; nu <= 4).
        L_int, weights, num_species, channel_mixing, strategy: passed to :class:`FusionTree`.
        basis: ``"independent"`` (default for path weights without channel mixing) or
            ``"full"``. Every message leaf carries the same tensor (``A_i`` in density
            mode, ``m_ij`` / ``A_i`` in the exact corrections) and the block sums over
            ordered neighbour tuples, so only the part of each path symmetric in the
            message leaves matters: the independent basis keeps a maximal set of paths
            whose symmetrised functions are linearly independent (weights = rank, same
            function space; e.g. ``((h, A), A)`` with h ``0e+1o+2e`` and A ``0e..3o``: 58
            weights per (species, channel) instead of 98). Output labels that no
            symmetric combination reaches are zero (``fusion.vanishing_outputs``).

    Shapes: ``forward(node_feats [N, irreps_node.dim], messages [E, irreps_message.dim],
    receiver [E], species [N] | None)`` -> ``[N, irreps_out.dim]``.
    """

    # TorchScript cannot infer the element type of an empty list
    exact_kinds: list[list[int]]
    exact_coefs: list[float]

    def __init__(
        self,
        irreps_node,
        irreps_message,
        irreps_out,
        channels: int | None = None,
        nu: int | None = None,
        tree=None,
        mode: str = "density",
        node_leaf: str = "h",
        L_int: int | None = None,
        weights: str = "path",
        num_species: int | None = None,
        channel_mixing: bool = False,
        basis: str | None = None,
        strategy: str = "auto",
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        labels_h, C = labels_and_channels(irreps_node, channels, "MessageFusion irreps_node")
        labels_m, C = labels_and_channels(irreps_message, C, "MessageFusion irreps_message")
        given_tree = tree is not None
        tree = Tree(tree) if given_tree else default_tree(3 if nu is None else nu, node_leaf)
        node_leaves = [k for k, name in enumerate(tree.leaves) if name == node_leaf]
        if len(node_leaves) != 1:
            raise ValueError(
                f"MessageFusion: tree {tree} must have exactly one leaf named {node_leaf!r} "
                f"(the centre's features h_i), found {len(node_leaves)}"
            )
        tree_nu = tree.num_leaves
        if given_tree and nu is not None and nu != tree_nu:
            raise ValueError(
                f"MessageFusion: nu={nu} but tree {tree} has {tree_nu - 1} message leaves "
                f"(nu = {tree_nu}); pass nu=None or a matching tree"
            )
        if basis is None:
            basis = "independent" if weights == "path" and not channel_mixing else "full"
        message_leaves = [k for k in range(tree.num_leaves) if k != node_leaves[0]]
        self.fusion = FusionTree(
            tree,
            [labels_h if k == node_leaves[0] else labels_m for k in range(tree.num_leaves)],
            irreps_out,
            channels=C,
            L_int=L_int,
            weights=weights,
            num_species=num_species,
            channel_mixing=channel_mixing,
            strategy=strategy,
            basis=basis,
            tie=[message_leaves] if len(message_leaves) > 1 else [],
        )
        self.basis = basis
        self.message_leaves = message_leaves
        self.tree = tree
        self.nu = tree_nu
        self.mode = mode
        self.channels = C
        self.irreps_node = channel_irreps(labels_h, C)
        self.irreps_message = channel_irreps(labels_m, C)
        self.irreps_in = (self.irreps_node, self.irreps_message)
        self.irreps_out = self.fusion.irreps_out

        # leaf kinds for the forward: 0 = h_i, 1 = edge message m_ij, 2 = A_i
        messages = [k for k in range(tree.num_leaves) if k != node_leaves[0]]
        base = [0 if k == node_leaves[0] else 2 for k in range(tree.num_leaves)]
        self.density_kinds = base
        self.exact_kinds = []
        self.exact_coefs = []
        if mode == "exact":
            for coef, block in _exact_terms(len(messages)):
                kinds = list(base)
                for pos in block:
                    kinds[messages[pos]] = 1
                self.exact_kinds.append(kinds)
                self.exact_coefs.append(coef)
        # (h, S(A, A)) trees in exact mode: the weighted root runs per atom (_exact_per_atom)
        self.per_atom_exact = (
            mode == "exact" and len(message_leaves) == 2
            and self.fusion.split_leaf == node_leaves[0]
        )
        self.node_dim = self.irreps_node.dim
        self.message_dim = self.irreps_message.dim
        self.node_desc = f"node_feats (irreps {self.irreps_node})"
        self.message_desc = f"messages (irreps {self.irreps_message})"

    def _exact_per_atom(self, node_feats: torch.Tensor, messages: torch.Tensor,
                        density: torch.Tensor, receiver: torch.Tensor,
                        species: torch.Tensor | None, components: bool = False
                        ) -> torch.Tensor:
        """Exact 3-body sum for trees ``(h, S(A, A))``: the root's subtree S is unweighted
        and bilinear in the messages, so ``sum_{j != k} Tree(h_i, m_ij, m_ik)`` =
        ``Root(h_i, S(A_i, A_i) - sum_j S(m_ij, m_ij))``: the per-edge work is the
        unweighted S, the weighted root runs once per atom. ``messages`` and ``density`` in
        e3nn layout, or with ``components`` component-major ``[Dm, E or N, C]``."""
        inner = self.fusion.subtree_value([density, density, density], components)  # [D, N, C]
        inner_e = self.fusion.subtree_value([messages, messages, messages], components)
        inner = inner.index_add(1, receiver, inner_e, alpha=-1.0)  # minus the [D, E, C] pairs
        return self.fusion.root_value(node_feats, inner, species)

    def exact_from_components(self, node_feats: torch.Tensor, messages: torch.Tensor,
                              receiver: torch.Tensor, species: torch.Tensor | None = None
                              ) -> torch.Tensor:
        """As ``forward`` (needs ``per_atom_exact``) with the messages in component-major
        layout ``[Dm, E, C]`` (``EdgeMessage.components``): no layout round trips on edges."""
        n = node_feats.shape[0]
        density = messages.new_zeros(messages.shape[0], n, messages.shape[2])
        density = density.index_add(1, receiver, messages)  # [Dm, N, C]
        return self._exact_per_atom(node_feats, messages, density, receiver, species, True)

    def _check(self, node_feats: torch.Tensor, messages: torch.Tensor, receiver: torch.Tensor):
        if node_feats.dim() != 2 or node_feats.shape[1] != self.node_dim:
            raise ValueError(
                "MessageFusion: "
                + self.node_desc
                + " expected shape [N, "
                + str(self.node_dim)
                + "], got "
                + str(list(node_feats.shape))
            )
        if messages.dim() != 2 or messages.shape[1] != self.message_dim:
            raise ValueError(
                "MessageFusion: "
                + self.message_desc
                + " expected shape [E, "
                + str(self.message_dim)
                + "], got "
                + str(list(messages.shape))
            )
        if receiver.dim() != 1 or receiver.shape[0] != messages.shape[0]:
            raise ValueError(
                "MessageFusion: receiver expected shape ["
                + str(messages.shape[0])
                + "] (one per message), got "
                + str(list(receiver.shape))
            )

    def forward(
        self,
        node_feats: torch.Tensor,
        messages: torch.Tensor,
        receiver: torch.Tensor,
        species: torch.Tensor | None = None,
    ) -> torch.Tensor:
        self._check(node_feats, messages, receiver)
        n = node_feats.shape[0]
        density = messages.new_zeros(n, messages.shape[1]).index_add_(0, receiver, messages)
        if self.per_atom_exact:
            return self._exact_per_atom(node_feats, messages, density, receiver, species)
        leaves: list[torch.Tensor] = []
        for kind in self.density_kinds:
            leaves.append(node_feats if kind == 0 else density)
        out = self.fusion(leaves, species)  # [N, irreps_out.dim]
        if len(self.exact_kinds) > 0:
            # per-edge corrections: some neighbours coincide (Moebius inversion)
            h_e = node_feats.index_select(0, receiver)  # [E, .]
            a_e = density.index_select(0, receiver)  # [E, .]
            s_e: torch.Tensor | None = None
            if species is not None:
                s_e = species.index_select(0, receiver)
            for kinds, coef in zip(self.exact_kinds, self.exact_coefs):
                edge_leaves: list[torch.Tensor] = []
                for kind in kinds:
                    edge_leaves.append(h_e if kind == 0 else (messages if kind == 1 else a_e))
                out = out.index_add(0, receiver, self.fusion(edge_leaves, s_e), alpha=coef)
        return out


class FusionBlock(nn.Module):
    """A fusion block on an atom's neighbourhood: :class:`EdgeMessage` + :class:`MessageFusion`.

    Args:
        irreps_node: node feature labels (with ``channels``) or ``Cx`` irreps.
        irreps_out: output labels (``"0e"`` for invariants).
        channels: ``C``.
        nu, tree, mode, L_int, weights, num_species, channel_mixing, basis, strategy: see
            :class:`MessageFusion`.
        lmax_sh, irreps_message, r_max, num_bessel, num_polynomial_cutoff, radial_mlp: see
            :class:`EdgeMessage`.
        avg_num_neighbors: messages are divided by it (as in MACE), so ``A_i`` is of order one.

    Shapes: ``forward(node_feats [N, irreps_in.dim], edge_index [2, E], species [N] | None,
    positions [N, 3] | None, edge_vectors [E, 3] | None)`` -> ``[N, irreps_out.dim]``; give
    ``positions`` or ``edge_vectors`` (``positions[receiver] - positions[sender]``).
    """

    def __init__(
        self,
        irreps_node,
        irreps_out="0e",
        channels: int | None = None,
        nu: int | None = None,
        mode: str = "density",
        tree=None,
        lmax_sh: int = 3,
        irreps_message=None,
        L_int: int | None = None,
        weights: str = "path",
        num_species: int | None = None,
        channel_mixing: bool = False,
        r_max: float = 5.0,
        num_bessel: int = 8,
        num_polynomial_cutoff: int = 5,
        radial_mlp: Sequence[int] = (64, 64),
        avg_num_neighbors: float = 1.0,
        basis: str | None = None,
        strategy: str = "auto",
    ):
        super().__init__()
        self.message = EdgeMessage(
            irreps_node,
            irreps_message,
            channels,
            lmax_sh,
            r_max,
            num_bessel,
            num_polynomial_cutoff,
            radial_mlp,
        )
        C = self.message.channels
        self.fusion = MessageFusion(
            self.message.irreps_in,
            self.message.irreps_out,
            irreps_out,
            channels=C,
            nu=nu,
            tree=tree,
            mode=mode,
            L_int=L_int,
            weights=weights,
            num_species=num_species,
            channel_mixing=channel_mixing,
            basis=basis,
            strategy=strategy,
        )
        self.channels = C
        self.irreps_in = self.message.irreps_in
        self.irreps_out = self.fusion.irreps_out
        self.mode = mode
        self.nu = self.fusion.nu
        self.avg_num_neighbors = float(avg_num_neighbors)
        self.node_dim = self.irreps_in.dim
        self.node_desc = f"(irreps {self.irreps_in})"

    def forward(
        self,
        node_feats: torch.Tensor,
        edge_index: torch.Tensor,
        species: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        edge_vectors: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise ValueError(
                "FusionBlock: edge_index expected shape [2, E], got " + str(list(edge_index.shape))
            )
        if node_feats.dim() != 2 or node_feats.shape[1] != self.node_dim:
            raise ValueError(
                "FusionBlock: node_feats expected shape [N, "
                + str(self.node_dim)
                + "] "
                + self.node_desc
                + ", got "
                + str(list(node_feats.shape))
            )
        sender, receiver = edge_index[0], edge_index[1]
        if edge_vectors is None:
            if positions is None:
                raise ValueError("FusionBlock: pass positions [N, 3] or edge_vectors [E, 3]")
            edge_vectors = positions.index_select(0, receiver) - positions.index_select(0, sender)
        if edge_vectors.dim() != 2 or edge_vectors.shape[1] != 3:
            raise ValueError(
                "FusionBlock: edge_vectors expected shape [E, 3], got "
                + str(list(edge_vectors.shape))
            )
        if self.fusion.per_atom_exact:
            messages = self.message.components(node_feats, edge_vectors, sender)  # [Dm, E, C]
            messages = messages * (1.0 / self.avg_num_neighbors)
            return self.fusion.exact_from_components(node_feats, messages, receiver, species)
        messages = self.message(node_feats, edge_vectors, sender) / self.avg_num_neighbors
        return self.fusion(node_feats, messages, receiver, species)
