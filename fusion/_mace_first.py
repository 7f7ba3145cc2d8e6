"""Import mace before e3nn.

mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, which e3nn 0.4.4's constant loading needs under
torch >= 2.6. Every module that uses e3nn imports this one first.
"""

import os
import warnings

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
# Noise from mace-torch/e3nn on import that says nothing about the user's run.
warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
warnings.filterwarnings("ignore", message=".*TorchScript type system.*")
warnings.filterwarnings("ignore", message=".*cuequivariance.*")

import contextlib  # noqa: E402
import io  # noqa: E402

# mace-torch prints a cuequivariance notice to stdout on import; keep CLI output clean.
with contextlib.redirect_stdout(io.StringIO()):
    import mace  # noqa: F401
    import mace.modules as mace_modules  # noqa: F401  (the notice is printed here)
