"""Import mace before e3nn: mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, which e3nn's
constant loading needs under torch>=2.6. Import this module first wherever both are used."""

import os
import warnings

os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.*")
warnings.filterwarnings("ignore", message=".*cuequivariance.*")
import logging  # noqa: E402

logging.getLogger().setLevel(logging.getLogger().level)
import mace  # noqa: E402,F401
