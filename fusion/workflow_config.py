"""Checks of the Snakemake config that run before the DAG is built (Snakefile, common.smk).

Every problem is one ``ValueError`` whose message is one line starting with ``config:``,
naming the key and what was expected, so Snakemake shows it instead of a schema dump or a
failure inside a job.
"""

from __future__ import annotations

import os


def config_path(config: dict, key: str, default: str) -> str:
    """The directory named by ``config[key]`` (``default`` when absent), checked.

    Refused: a value that is not a string, empty or blank, holding a newline (one path per
    value), or braces (Snakemake would read ``{...}`` in an output path as a wildcard).
    A leading ``~`` is expanded here, deliberately and once, so the workflow and every shell
    line see the same directory (left to the shell, ``~`` meant the home directory to
    ``fusion`` but a folder named ``~`` to Snakemake).
    """
    value = config.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            f"config: {key} must name a directory (such as {default!r}), got {value!r}"
        )
    for bad, why in (("\n", "a newline"), ("{", "a brace"), ("}", "a brace")):
        if bad in value:
            raise ValueError(
                f"config: {key} {value!r} contains {why}; Snakemake reads braces in output "
                "paths as wildcards and a path is one line: rename the directory"
            )
    return os.path.expanduser(value)
