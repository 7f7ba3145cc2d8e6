"""Shared test set-up.

- Importing ``fusion`` first sets the torch loading flag e3nn 0.4.4 needs (see
  fusion/__init__.py), whatever order a test module imports e3nn and mace in.
- One intra-op thread: the tests use small tensors, where threads only add overhead
  (and oversubscribe CI's 2 cores when subprocesses run).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import fusion  # noqa: E402, F401

torch.set_num_threads(1)
