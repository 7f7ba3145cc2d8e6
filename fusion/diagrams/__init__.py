"""Fusion diagrams: trees of Clebsch–Gordan couplings as equivariant many-body maps.

Write a tree, print it, count its paths, run it:

>>> import torch
>>> from fusion.diagrams import FusionTree
>>> _ = torch.manual_seed(0)
>>> tree = FusionTree(
...     "((h, A), A)", {"h": "0e+1o", "A": "0e+1o+2e"}, "0e+1o", channels=8, L_int=2
... )
>>> print(tree.render())
((h, A), A)  ->  {0e, 1o}   paths: 0e: 7, 1o: 12  (L_int=2)
vertex v1 (root)  {0e, 1o}
+-- vertex v0  {0e, 1o, 1e, 2e, 2o}
|   +-- leaf 0 'h'  {0e, 1o}
|   +-- leaf 1 'A'  {0e, 1o, 2e}
+-- leaf 2 'A'  {0e, 1o, 2e}
>>> tree.diagram.counts()
{0e: 7, 1o: 12}
>>> print(tree.render(8))
((h, A), A)  path 8: h=1o A=1o A=1o v0=0e v1=1o
vertex v1 (root)  1o
+-- vertex v0  0e
|   +-- leaf 0 'h'  1o
|   +-- leaf 1 'A'  1o
+-- leaf 2 'A'  1o
>>> tree.irreps_in[0], tree.irreps_in[1], tree.irreps_out
(8x0e+8x1o, 8x0e+8x1o+8x2e, 8x0e+8x1o)
>>> h = torch.randn(10, tree.irreps_in[0].dim)  # [N, 8 * (1 + 3)], e3nn layout
>>> A = torch.randn(10, tree.irreps_in[1].dim)  # [N, 8 * (1 + 3 + 5)]
>>> tree([h, A, A]).shape  # [N, 8 * (1 + 3)]
torch.Size([10, 32])
>>> tree.weight.shape  # [species, paths, channels]
torch.Size([1, 19, 8])

Modules: :mod:`~fusion.diagrams.tree` (tree shapes), :mod:`~fusion.diagrams.paths`
(admissible labellings), :mod:`~fusion.diagrams.contract` (the contraction engine),
:mod:`~fusion.diagrams.cg` (real CG tables), :mod:`~fusion.diagrams.irreps` (helpers).
See docs/fusion-diagrams.md.
"""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

from fusion.diagrams.cg import coupling, wigner_3j
from fusion.diagrams.contract import FusionTree, Instruction
from fusion.diagrams.irreps import (
    as_labels,
    channel_irreps,
    component_index,
    from_blocks,
    parse_irreps,
    to_blocks,
)
from fusion.diagrams.paths import FusionDiagram
from fusion.diagrams.tree import Tree, left_comb

__all__ = [
    "FusionTree",
    "FusionDiagram",
    "Instruction",
    "Tree",
    "left_comb",
    "as_labels",
    "parse_irreps",
    "channel_irreps",
    "component_index",
    "to_blocks",
    "from_blocks",
    "wigner_3j",
    "coupling",
]
