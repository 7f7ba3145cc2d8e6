"""fusion-bench: fusion diagrams for O(3)-equivariant networks, and the study around them.

Importing ``fusion`` changes no ``torch.load`` setting: safe loading (``weights_only=True``,
torch's default) stays on in this process and in every job it starts. What e3nn 0.4.4 needs
to load its constants (the ``slice`` global, harmless) is allow-listed here, so e3nn can be
imported in any order after ``fusion``; :mod:`fusion._mace_first` undoes the flag that
``import mace`` sets.
"""

import warnings

import torch

torch.serialization.add_safe_globals([slice])

# Noise from mace-torch/e3nn on import that says nothing about the user's run.
warnings.filterwarnings("ignore", message=".*TorchScript type system.*")

__version__ = "0.1.0"
