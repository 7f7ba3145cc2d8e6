"""fusion-bench: fusion diagrams for O(3)-equivariant networks, and the study around them.

Import order matters: mace-torch must be imported before e3nn (it sets a torch
loading flag), so modules that need both import :mod:`fusion._mace_first` first.
"""

__version__ = "0.1.0"
