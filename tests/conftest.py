"""Shared test set-up.

Importing ``fusion`` first sets the torch loading flag e3nn 0.4.4 needs (see
fusion/__init__.py), whatever order a test module imports e3nn and mace in.
"""

import fusion  # noqa: F401
