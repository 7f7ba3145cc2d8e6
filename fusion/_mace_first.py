"""Import mace (and so e3nn) with safe loading left on.

e3nn 0.4.4 loads its constants with a plain ``torch.load``; under torch >= 2.6 that is a
``weights_only`` load, which refuses the one non-tensor global the file holds (``slice``).
Allow-listing ``slice`` (harmless: it builds no code; done in ``fusion/__init__.py`` and
again here) lets that load succeed without the process-wide escape hatch mace-torch uses:
``import mace`` sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which would make every
``torch.load`` in this process and in every child job unpickle arbitrary code. The variable
is put back as it was right after the import. Every module that uses mace imports this one.
"""

import os
import warnings

import torch

warnings.filterwarnings("ignore", message=".*TorchScript type system.*")
warnings.filterwarnings("ignore", message=".*cuequivariance.*")

torch.serialization.add_safe_globals([slice])

import contextlib  # noqa: E402
import io  # noqa: E402

_FLAG = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_before = os.environ.get(_FLAG)
try:
    # mace-torch prints a cuequivariance notice to stdout on import; keep CLI output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        import mace  # noqa: F401
        import mace.modules as mace_modules  # noqa: F401  (the notice is printed here)
finally:
    if _before is None:
        os.environ.pop(_FLAG, None)
    else:
        os.environ[_FLAG] = _before
