"""Training and evaluation: one trainer for every model (see ``docs/training.md``).

- :func:`fusion.train.trainer.train` / :class:`fusion.train.trainer.TrainConfig`,
- :mod:`fusion.train.checkpoint`: atomic checkpoints with fallback to the previous one,
- :mod:`fusion.train.losses`: energy + forces loss,
- :mod:`fusion.train.metrics`: ``metrics.json`` read/write with schema checks,
- :mod:`fusion.train.provenance`: git commit, versions, device, host, timestamps.
"""

from fusion.train.metrics import count_parameters, read_metrics_json, write_metrics_json
from fusion.train.provenance import provenance
from fusion.train.trainer import TrainConfig, TrainingDivergedError, evaluate, train

__all__ = [
    "TrainConfig",
    "TrainingDivergedError",
    "count_parameters",
    "evaluate",
    "provenance",
    "read_metrics_json",
    "train",
    "write_metrics_json",
]
