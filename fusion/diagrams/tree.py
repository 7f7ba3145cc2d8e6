"""Shapes of fusion trees: rooted binary trees with named leaves.

Write a tree as a string, ``"((h, A), A)"``, or as nested tuples, ``(("h", "A"), "A")``;
a single name (``"h"``) is a one-leaf tree. Leaf names are for reading and error
messages; leaves are positional (numbered left to right) and a name may repeat.

Node numbering (used by paths and the contraction engine): leaves are ``0 .. m-1`` left to
right, vertices ``m .. 2m-2`` in post-order (children before parents, left subtree
first), so evaluating nodes in increasing order is a valid bottom-up order; the root is
the last node.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

__all__ = ["Tree", "left_comb"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_']*")


def _parse_string(text: str):
    """``"((h, A), A)"`` -> nested tuples of names."""
    pos = 0

    def fail(msg: str):
        raise ValueError(f"cannot parse tree {text!r} at position {pos}: {msg}")

    def skip():
        nonlocal pos
        while pos < len(text) and text[pos].isspace():
            pos += 1

    def node():
        nonlocal pos
        skip()
        if pos >= len(text):
            fail("expected a leaf name or '('")
        if text[pos] == "(":
            pos += 1
            children = [node()]
            skip()
            while pos < len(text) and text[pos] == ",":
                pos += 1
                children.append(node())
                skip()
            if pos >= len(text) or text[pos] != ")":
                fail("expected ',' or ')'")
            pos += 1
            return tuple(children)
        m = _NAME.match(text, pos)
        if not m:
            fail(f"unexpected {text[pos]!r}; leaf names are identifiers like h, A, x1")
        pos = m.end()
        return m.group(0)

    result = node()
    skip()
    if pos != len(text):
        fail("trailing text")
    return result


class Tree:
    """Immutable shape of a fusion tree (see the module docstring for node numbering).

    >>> t = Tree("((h, A), A)")
    >>> t.leaves, t.children, t.root
    (('h', 'A', 'A'), ((0, 1), (3, 2)), 4)
    """

    __slots__ = ("leaves", "children", "_str")

    def __init__(self, spec):
        if isinstance(spec, Tree):
            self.leaves, self.children, self._str = spec.leaves, spec.children, spec._str
            return
        nested = _parse_string(spec) if isinstance(spec, str) else spec
        leaves: list[str] = []
        children: list[tuple[int, int]] = []
        internal: list[tuple] = []  # nested tuple of each vertex, for its id

        def visit(x):
            if isinstance(x, str):
                if not _NAME.fullmatch(x):
                    raise ValueError(f"bad leaf name {x!r} in tree {spec!r}")
                leaves.append(x)
                return ("leaf", len(leaves) - 1)
            if not isinstance(x, (tuple, list)):
                raise ValueError(
                    f"tree {spec!r}: expected a leaf name or a pair, got {x!r} "
                    "(write trees as '((h, A), A)' or (('h', 'A'), 'A'))"
                )
            if len(x) != 2:
                raise ValueError(
                    f"tree {spec!r}: vertex {x!r} has {len(x)} children; fusion trees are "
                    "binary, write e.g. ((a, b), c)"
                )
            a, b = visit(x[0]), visit(x[1])
            internal.append((a, b))
            return ("vertex", len(internal) - 1)

        visit(nested)
        m = len(leaves)

        # post-order vertex k -> node id m + k; leaves keep their index
        def node_id(ref):
            kind, k = ref
            return k if kind == "leaf" else m + k

        for a, b in internal:
            children.append((node_id(a), node_id(b)))
        self.leaves = tuple(leaves)
        self.children = tuple(children)
        self._str = self._format(self.root)

    # -- structure -------------------------------------------------------------------
    @property
    def num_leaves(self) -> int:
        return len(self.leaves)

    @property
    def num_nodes(self) -> int:
        return 2 * len(self.leaves) - 1

    @property
    def root(self) -> int:
        return self.num_nodes - 1

    @property
    def vertices(self) -> range:
        return range(self.num_leaves, self.num_nodes)

    def is_leaf(self, node: int) -> bool:
        return node < self.num_leaves

    def vertex_children(self, node: int) -> tuple[int, int]:
        return self.children[node - self.num_leaves]

    def parent(self, node: int) -> int | None:
        for v in self.vertices:
            if node in self.vertex_children(v):
                return v
        return None

    def subtree_leaves(self, node: int) -> tuple[int, ...]:
        if self.is_leaf(node):
            return (node,)
        a, b = self.vertex_children(node)
        return self.subtree_leaves(a) + self.subtree_leaves(b)

    def to_nested(self, node: int | None = None):
        node = self.root if node is None else node
        if self.is_leaf(node):
            return self.leaves[node]
        a, b = self.vertex_children(node)
        return (self.to_nested(a), self.to_nested(b))

    # -- text ------------------------------------------------------------------------
    def _format(self, node: int) -> str:
        if self.is_leaf(node):
            return self.leaves[node]
        a, b = self.vertex_children(node)
        return f"({self._format(a)}, {self._format(b)})"

    def __str__(self) -> str:
        return self._str

    def __repr__(self) -> str:
        return f"Tree({self._str!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Tree) and self._str == other._str

    def __hash__(self) -> int:
        return hash(self._str)

    def node_name(self, node: int) -> str:
        """``leaf 1 'A'`` or ``vertex v0`` (vertices numbered from 0 in post-order)."""
        if self.is_leaf(node):
            return f"leaf {node} {self.leaves[node]!r}"
        return f"vertex v{node - self.num_leaves}"

    def render(
        self,
        labels: Mapping[int, str] | Callable[[int], str] | None = None,
        header: str | None = None,
    ) -> str:
        """Multi-line drawing, root first; ``labels[node]`` is printed next to each node.

        >>> print(Tree("((h, A), A)").render({0: "0e", 1: "1o", 2: "1o", 3: "1o", 4: "0e"}))
        ((h, A), A)
        vertex v1 (root)  0e
        +-- vertex v0  1o
        |   +-- leaf 0 'h'  0e
        |   +-- leaf 1 'A'  1o
        +-- leaf 2 'A'  1o
        """
        get = labels if callable(labels) else (lambda n: (labels or {}).get(n, ""))
        lines = [header if header is not None else self._str]

        def draw(node: int, prefix: str, child_prefix: str, is_root: bool):
            name = self.node_name(node) + (" (root)" if is_root else "")
            text = get(node)
            lines.append(f"{prefix}{name}" + (f"  {text}" if text else ""))
            if not self.is_leaf(node):
                a, b = self.vertex_children(node)
                draw(a, child_prefix + "+-- ", child_prefix + "|   ", False)
                draw(b, child_prefix + "+-- ", child_prefix + "    ", False)

        draw(self.root, "", "", True)
        return "\n".join(lines)


def left_comb(names: Sequence[str]) -> Tree:
    """``left_comb(["h", "A", "A"]) == Tree("((h, A), A)")``."""
    if not names:
        raise ValueError("left_comb: need at least one leaf name")
    nested = names[0]
    for name in names[1:]:
        nested = (nested, name)
    return Tree(nested)
