"""fusion-bench: fusion diagrams for O(3)-equivariant networks, and the study around them.

e3nn 0.4.4 loads its constants with ``torch.load`` and needs the flag mace-torch sets
(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD) under torch >= 2.6. Setting it here, in the package's
first import, makes the import order of mace and e3nn irrelevant inside ``fusion``.
"""

import os
import warnings

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
# Noise from mace-torch/e3nn on import that says nothing about the user's run.
warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
warnings.filterwarnings("ignore", message=".*TorchScript type system.*")

__version__ = "0.1.0"
