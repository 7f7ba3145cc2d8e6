"""Transfer tests: evaluate a trained run on another dataset's test set (``fusion evaluate``).

A dataset whose card has ``trained_as: <key>`` (e.g. ``acac-600K``, trained as
``acac-300K``: same training frames, another test file) is not trained again. Its run
``results/train/<dataset>/<model>/<variant>/seed-<s>`` gets a ``metrics.json`` in the
common schema whose ``test`` errors are those of the ``<key>`` run's best weights on this
dataset's test set; ``val``, ``train``, ``n_params`` and the cost figures are the training
run's, and ``evaluated_from`` names it. Energy-only test sets (``meta["test_has_forces"]``
False) get energy errors only.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["source_run_dir", "evaluate_run", "run_transfer_evaluation"]

# Spec keys that may differ between a transfer run and the run it evaluates.
_MAY_DIFFER = {"dataset", "out_dir", "split", "eval_batch_size", "threads", "cache_dir"}


def source_run_dir(spec) -> Path:
    """The training run a transfer run evaluates: ``out_dir`` with the dataset segment
    replaced by the card's ``trained_as``. ``ValueError`` for datasets without one."""
    from fusion.data.registry import dataset_card

    source = dataset_card(spec.dataset).get("trained_as")
    if source is None:
        raise ValueError(f"{spec.dataset} is trained, not evaluated: use `fusion train` "
                         "(`fusion evaluate` is for datasets whose card names trained_as)")
    out = Path(spec.out_dir)
    return out.parents[3] / source / spec.model / spec.variant / out.name


def evaluate_run(run_dir, structures, indices, batch_size: int = 50, cache_dir=None) -> dict:
    """Errors (as ``fusion.train.trainer.evaluate``) of the best weights of the training run
    ``run_dir`` on ``structures[indices]``; forces only where the data label them."""
    from fusion.data.graphs import GraphLoader
    from fusion.dynamics.calculator import load_run_model
    from fusion.train.trainer import evaluate

    module, elements, r_max, dtype = load_run_model(run_dir, cache_dir)
    test = structures.subset(indices)
    if not structures.meta.get("test_has_forces", True):
        test.forces = None  # energy-only labels (the zeros stored for them are not data)
    loader = GraphLoader(test, np.arange(len(test)), batch_size=batch_size, r_max=r_max,
                         elements=elements, dtype=dtype)
    return evaluate(module, loader, dtype=dtype, report_factor=structures.meta["report_factor"])


def run_transfer_evaluation(spec, log=print) -> dict:
    """Write ``<out_dir>/metrics.json`` for the transfer dataset ``spec.dataset``."""
    import torch

    from fusion.experiment import _base_metrics, _load_split
    from fusion.train.metrics import write_metrics_json

    source = source_run_dir(spec)
    metrics_path = source / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path} not found: {spec.dataset} is evaluated with the "
                                f"finished training run {source}; train it first")
    trained = json.loads(metrics_path.read_text())
    ours = spec.to_dict()
    theirs = trained.get("hyperparameters", {})
    differ = sorted(k for k in ours if k not in _MAY_DIFFER and ours[k] != theirs.get(k))
    if differ:
        raise ValueError(f"{spec.dataset}: the training run {source} was made with other "
                         f"settings ({', '.join(differ)}); rerun it with this config first")
    if trained.get("model") != spec.model or trained.get("variant") != spec.variant:
        raise ValueError(f"{metrics_path} belongs to {trained.get('model')}/"
                         f"{trained.get('variant')}, not {spec.model}/{spec.variant}")

    torch.set_num_threads(spec.threads)
    structures, splits = _load_split(spec)
    errors = evaluate_run(source, structures, splits["test"], spec.eval_batch_size,
                          spec.cache_dir)
    seconds = errors.pop("seconds")
    metrics = _base_metrics(spec, structures)
    metrics.update({
        "test": errors,
        "val": trained["val"],
        "train": trained["train"],
        "n_params": trained["n_params"],
        "inference": {"structures_per_second": errors["n_structures"] / max(seconds, 1e-12)},
        "peak_memory_mb": trained.get("peak_memory_mb", 0.0),
        "evaluated_from": str(source),
    })
    for key in ("model_info",):
        if key in trained:
            metrics[key] = trained[key]
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics_json(out / "metrics.json", metrics)
    forces = errors.get("forces_mae")
    log(f"{spec.dataset} {spec.model}/{spec.variant} seed {spec.seed} (weights of {source}): "
        f"test MAE {errors['mae']:.4g} meV" + ("" if forces is None else
                                               f", forces MAE {forces:.4g} meV/Å"))
    return metrics
