"""Fusion blocks: fusion trees over an atom's neighbourhood (see fusion_block.py).

``FusionProduct`` (the MACE product-basis drop-in) lives in :mod:`fusion.blocks.product`.
"""

import fusion._mace_first  # noqa: F401  (mace before e3nn)

# isort: split

from fusion.blocks.fusion_block import EdgeMessage, FusionBlock, MessageFusion, default_tree
from fusion.blocks.radial import BesselBasis, PolynomialCutoff, RadialEmbedding, RadialMLP

__all__ = [
    "FusionBlock",
    "MessageFusion",
    "EdgeMessage",
    "default_tree",
    "BesselBasis",
    "PolynomialCutoff",
    "RadialEmbedding",
    "RadialMLP",
]
