"""One experiment = (dataset, model, variant, seed) -> ``metrics.json``.

The Snakemake rules call these through ``fusion train`` / ``fusion composition`` with a JSON
*run spec* built from the config, so a run is fully described by one small document that is
also stored in ``metrics.json["hyperparameters"]``:

.. code-block:: json

    {"dataset": "qm9-U0", "model": "mace", "variant": "baseline", "seed": 0,
     "out_dir": "results/train/qm9-U0/mace/baseline/seed-0", "cache_dir": "resources",
     "split": {"n_train": 1000, "n_val": 100, "n_test": 1000},
     "batch_size": 32, "r_max": 5.0, "hparams": {...}, "training": {...}}
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion.train.rundir import SPEC_KEYS_NOT_AFFECTING_RESULTS
from fusion.workflow_config import MAX_SEED

SPLIT_KEYS = ("n_train", "n_val", "n_test")
SPEC_KEYS = {
    "dataset": str,
    "model": str,
    "variant": str,
    "seed": int,
    "out_dir": str,
    "cache_dir": str,
    "split": dict,
    "batch_size": int,
    "eval_batch_size": int,
    "hparams": dict,
    "training": dict,
    "threads": int,
}


@dataclass
class RunSpec:
    """A validated run spec (see module docstring)."""

    dataset: str
    model: str
    variant: str
    seed: int
    out_dir: str
    cache_dir: str = "resources"
    split: dict = field(default_factory=dict)
    batch_size: int = 32
    eval_batch_size: int = 128
    hparams: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    threads: int = 1

    @classmethod
    def from_dict(cls, d: dict) -> RunSpec:
        unknown = sorted(set(d) - set(SPEC_KEYS))
        if unknown:
            raise ValueError(f"run spec has unknown key(s) {unknown}; valid: {sorted(SPEC_KEYS)}")
        for key in ("dataset", "model", "variant", "seed", "out_dir"):
            if key not in d:
                raise ValueError(f"run spec is missing required key {key!r}")
        for key, value in d.items():
            expected = SPEC_KEYS[key]
            if not isinstance(value, expected) or isinstance(value, bool):
                raise ValueError(
                    f"run spec key {key!r} should be {expected.__name__}, got {value!r}"
                )
        for key in ("batch_size", "eval_batch_size", "threads"):
            if key in d and d[key] < 1:
                raise ValueError(f"run spec key {key!r} should be an integer >= 1, got {d[key]}")
        if not 0 <= d["seed"] <= MAX_SEED:
            raise ValueError(f"run spec key 'seed' should be an integer from 0 to {MAX_SEED} "
                             f"(numpy's seed range), got {d['seed']}")
        split = d.get("split", {})
        unknown = sorted(set(split) - set(SPLIT_KEYS))
        if unknown:
            raise ValueError(f"run spec key 'split' has unknown key(s) {unknown}; valid: "
                             f"{list(SPLIT_KEYS)} (null or absent = the whole official split)")
        for key, value in split.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"run spec key 'split.{key}' should be an integer >= 1 or "
                                 f"null, got {value!r}")
        for key in ("out_dir", "cache_dir"):
            value = d.get(key, "resources")
            if not value.strip() or value.startswith("~"):
                raise ValueError(
                    f"run spec key {key!r} should name a directory (not empty, no leading "
                    f"'~', which is not expanded here: give the full path), got {value!r}"
                )
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"run spec is not valid JSON: {err}") from err
        if not isinstance(d, dict):
            raise ValueError(f"run spec must be a JSON object, got {type(d).__name__}")
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in SPEC_KEYS}


def _load_split(spec: RunSpec):
    from fusion.data.registry import dataset_card, get_dataset

    split = {k: spec.split.get(k) for k in ("n_train", "n_val", "n_test")}
    # Datasets with official splits per seed (rMD17: seed s = the author's pair s + 1).
    if dataset_card(spec.dataset).get("split_per_seed"):
        split["seed"] = spec.seed
    return get_dataset(spec.dataset, cache_dir=spec.cache_dir, **split)


def _base_metrics(spec: RunSpec, structures) -> dict:
    from fusion.train.provenance import provenance

    meta = structures.meta
    unit = meta["report_unit"]
    return {
        "schema_version": 1,
        "dataset": spec.dataset,
        "model": spec.model,
        "variant": spec.variant,
        "seed": spec.seed,
        "units": {"y": unit, "y_per_atom": f"{unit}/atom", "forces": f"{unit}/Å"},
        "hyperparameters": spec.to_dict(),
        "provenance": provenance(),
    }


def _errors(pred: np.ndarray, true: np.ndarray, n_atoms: np.ndarray, factor: float) -> dict:
    from fusion.train.metrics import ErrorSums

    sums = ErrorSums()
    sums.add(pred, true, n_atoms)
    return sums.errors(factor)


def run_composition(spec: RunSpec) -> dict:
    """Fit the composition baseline (least squares on element counts) and write metrics.

    Refuses a run spec of another model, a folder holding another run's results, and a
    folder another process is writing (``fusion.train.rundir``).
    """
    from fusion.train.rundir import check_owner, run_lock

    if (spec.model, spec.variant) != ("composition", "baseline"):
        raise ValueError(
            f"fusion composition fits composition/baseline; this run spec is for "
            f"{spec.model}/{spec.variant} (train it with fusion train)"
        )
    check_owner(spec.out_dir, spec.to_dict())
    with run_lock(spec.out_dir):
        return _run_composition(spec)


def _run_composition(spec: RunSpec) -> dict:
    from fusion.data.composition import fit_composition, predict_composition
    from fusion.train.metrics import write_metrics_json

    started = time.time()
    structures, splits = _load_split(spec)
    elements = tuple(int(z) for z in np.unique(structures.z))
    weights = fit_composition(structures, splits["train"], elements)
    factor = structures.meta["report_factor"]
    metrics = _base_metrics(spec, structures)
    for split in ("val", "test"):
        idx = splits[split]
        pred = predict_composition(structures, idx, elements, weights)
        metrics[split] = _errors(pred, structures.y[idx], structures.n_atoms[idx], factor)
    metrics["n_params"] = len(elements)
    metrics["train"] = {
        "n_structures": int(len(splits["train"])),
        "epochs": 0,
        "best_epoch": 0,
        "seconds_per_epoch": 0.0,
        "wall_seconds": time.time() - started,
    }
    metrics["inference"] = {"structures_per_second": None}
    metrics["peak_memory_mb"] = None
    # per element: a weight, or one per electronic state for multi-state data
    metrics["composition_weights"] = {str(z): np.asarray(w).tolist()
                                      for z, w in zip(elements, weights)}
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics_json(out / "metrics.json", metrics)
    return metrics


def model_stats(structures, train_idx, r_max: float):
    """What the model needs to know of the training data (all from the training split)."""
    from fusion.data.composition import fit_composition, predict_composition
    from fusion.data.graphs import average_num_neighbors
    from fusion.models.registry import ModelStats

    elements = tuple(int(z) for z in np.unique(structures.z))
    given = structures.meta.get("e0s")  # isolated-atom energies shipped with the data
    if given is not None and structures.y.ndim == 1 and all(z in given for z in elements):
        e0 = np.array([given[z] for z in elements], dtype=np.float64)  # [Z]
    else:
        e0 = fit_composition(structures, train_idx, elements)  # [Z] or [Z, S]
    residual = structures.y[train_idx] - predict_composition(structures, train_idx, elements, e0)
    per_atom = residual / structures.n_atoms[train_idx].reshape((-1,) + (1,) * (e0.ndim - 1))
    if structures.forces is not None:
        # Force datasets: mace_run_train's default "rms_forces_scaling", the RMS of the
        # training forces' components (eV/Å). The per-atom energy std of an MD trajectory
        # of one molecule is ~100x smaller and would shrink the initial forces accordingly.
        train_forces = structures.forces[structures.atom_indices(train_idx)]  # [A_train, 3]
        scale = float(np.sqrt(np.mean(train_forces**2))) or 1.0
    else:
        scale = float(np.std(per_atom)) or 1.0
    # Fitted E0s leave residuals of mean ~0; isolated-atom E0s leave the binding energy per
    # atom, which the model's shift carries (as mace_run_train's mean interaction energy).
    shift = float(np.mean(per_atom)) if given is not None and e0.ndim == 1 else 0.0
    return ModelStats(
        elements=elements,
        atomic_energies=np.asarray(e0, dtype=np.float64).T,  # [Z] or [S, Z]
        avg_num_neighbors=float(average_num_neighbors(structures, train_idx, r_max)),
        scale=scale,
        shift=shift,
    )


def run_training(spec: RunSpec, log=print) -> dict:
    """Train ``spec.model/spec.variant`` on ``spec.dataset``; resumable; writes metrics.json.

    Before anything is loaded or written: the model name, training settings and the folder's
    owner are checked, then the folder's lock is taken for the whole run (one writer).
    """
    import torch

    from fusion.models.registry import CLOSED_FORM_MODELS, check_hparams, check_model_name
    from fusion.train.rundir import check_owner, run_lock
    from fusion.train.trainer import TrainConfig

    check_model_name(spec.model, spec.variant)
    if spec.model in CLOSED_FORM_MODELS:
        raise ValueError(f"{spec.model} is fitted in closed form: run fusion composition")
    TrainConfig.from_dict({"seed": spec.seed, "threads": spec.threads, **spec.training})
    check_hparams(spec.model, spec.variant, spec.hparams)
    check_owner(spec.out_dir, spec.to_dict())
    with run_lock(spec.out_dir, log):
        # The model is built under the run's dtype; torch's global settings are restored.
        old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
        try:
            return _run_training(spec, log)
        finally:
            torch.set_default_dtype(old_dtype)
            torch.set_num_threads(old_threads)


def _write_model_stats(path: Path, stats) -> None:
    """What the model was built from, so it can be rebuilt without the dataset (e.g. by
    fusion.dynamics.calculator.FusionCalculator.from_run_dir)."""
    from fusion.train.checkpoint import atomic_write_text

    atomic_write_text(path, json.dumps({
        "elements": [int(z) for z in stats.elements],
        "atomic_energies": np.asarray(stats.atomic_energies, dtype=float).tolist(),
        "avg_num_neighbors": float(stats.avg_num_neighbors),
        "scale": float(stats.scale),
        "shift": float(stats.shift),
    }, indent=1))


def _run_training(spec: RunSpec, log) -> dict:
    import torch

    from fusion.data.graphs import GraphLoader
    from fusion.models.registry import (
        build_model,
        check_model_name,
        count_parameters,
        graph_cutoff,
    )
    from fusion.train.metrics import write_metrics_json
    from fusion.train.trainer import TrainConfig, train

    check_model_name(spec.model, spec.variant)
    from fusion.data.registry import dataset_card

    trained_as = dataset_card(spec.dataset).get("trained_as")
    if trained_as is not None:
        raise ValueError(f"{spec.dataset} shares its training set with {trained_as}: train "
                         f"{trained_as} and run `fusion evaluate` for {spec.dataset}")
    config = TrainConfig.from_dict({"seed": spec.seed, "threads": spec.threads, **spec.training})
    torch.set_num_threads(spec.threads)
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    torch.set_default_dtype(dtype)
    torch.manual_seed(spec.seed)

    structures, splits = _load_split(spec)
    r_max = graph_cutoff(spec.model, spec.variant, spec.hparams)
    stats = model_stats(structures, splits["train"], r_max)
    if not stats.avg_num_neighbors > 0:
        raise ValueError(
            f"r_max = {r_max:g} Å leaves every atom of the {len(splits['train'])} training "
            f"structures of {spec.dataset} without neighbours (no pair closer than r_max): "
            "the model would see no geometry; raise hparams.r_max"
        )
    model = build_model(spec.model, spec.variant, spec.hparams, stats)
    check_states(spec, structures, model)
    n_params = count_parameters(model)
    log(
        f"{spec.dataset} {spec.model}/{spec.variant} seed {spec.seed}: {n_params:,} parameters, "
        f"{len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])} train/val/test"
    )

    # Datasets with inputs beyond geometry (e.g. qm9xtb's orbital features) bring their own.
    make_loader = structures.meta.get("make_loader")

    def loader(split: str, shuffle: bool, batch_size: int) -> GraphLoader:
        if make_loader is not None:
            return make_loader(structures, splits[split], batch_size=batch_size,
                               elements=stats.elements, shuffle=shuffle, seed=spec.seed,
                               dtype=dtype)
        return GraphLoader(
            structures,
            splits[split],
            batch_size=batch_size,
            r_max=r_max,
            elements=stats.elements,
            shuffle=shuffle,
            seed=spec.seed,
            dtype=dtype,
        )

    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from fusion.data.registry import dataset_cache_path
    from fusion.train.rundir import run_hashes

    run_id = run_hashes(spec.to_dict(), dataset_cache_path(spec.dataset, spec.cache_dir))
    _retire_stale_checkpoints(out, spec, log, run_id)
    _write_model_stats(out / "model_stats.json", stats)
    fragment = train(
        model,
        loader("train", True, spec.batch_size),
        loader("val", False, spec.eval_batch_size),
        loader("test", False, spec.eval_batch_size),
        config,
        out,
        report_factor=structures.meta["report_factor"],
        log=log,
        run_id=run_id,
    )
    metrics = _base_metrics(spec, structures)
    metrics.update(fragment)
    metrics["units"] = _base_metrics(spec, structures)["units"]
    metrics["n_params"] = n_params
    # Widths chosen so a variant has <= the baseline's parameters (fusion variants).
    if getattr(model, "fusion_info", None) is not None:
        metrics["model_info"] = dict(model.fusion_info)
    if not all(math.isfinite(metrics["test"][k]) for k in ("mae", "rmse")):
        raise RuntimeError(f"non-finite test metrics for {spec.out_dir}: {metrics['test']}")
    write_metrics_json(out / "metrics.json", metrics)
    return metrics


def check_states(spec: RunSpec, structures, model) -> None:
    """The model predicts as many electronic states as the dataset labels, else ValueError."""
    have, want = int(getattr(model, "n_states", 1)), structures.n_states
    if have != want:
        names = ", ".join(structures.meta.get("states", [f"S{i}" for i in range(want)]))
        raise ValueError(
            f"{spec.dataset} labels {want} electronic state(s) ({names}) but "
            f"{spec.model}/{spec.variant} predicts {have}; multi-state datasets need a model "
            f"with one head per state (mace: hparams n_states: {want}, or leave n_states unset)"
        )


# Keys that do not change what is computed: a checkpoint made under other values is reusable.
_SPEC_KEYS_NOT_AFFECTING_RESULTS = SPEC_KEYS_NOT_AFFECTING_RESULTS

# What a run that does not resume sets aside (with its checkpoints): its outputs.
_RUN_OUTPUTS = ("log.csv", "model.pt", "metrics.json")


def _set_aside(out: Path, names: list[str]) -> Path:
    """Move ``names`` of ``out`` into a new ``out/stale-<time>[-N]/`` (never deleted)."""
    stamp, n = time.strftime("stale-%Y%m%d-%H%M%S"), 0
    while True:
        stale = out / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            stale.mkdir()
            break
        except FileExistsError:
            n += 1
    for name in names:
        (out / name).rename(stale / name)
    return stale


def _retire_stale_checkpoints(out: Path, spec: RunSpec, log, run_id: dict) -> None:
    """Resume only from checkpoints made by this very run.

    A checkpoint carries ``run_id``: the SHA-256 of the run spec (the keys that change
    results) and of the dataset cache (``fusion.train.rundir.run_hashes``). A checkpoint
    with other hashes (another dataset, split, hyperparameters, or a rebuilt cache) is not
    resumed: the log names both, and the checkpoints with the run's outputs move to
    ``stale-<time>/`` (kept, never deleted); training starts afresh. A checkpoint without
    hashes (older format) is resumed only when ``run_spec.json`` shows the same spec.
    """
    from fusion.train.checkpoint import CheckpointError, atomic_write_text, read_checkpoint

    record = out / "run_spec.json"
    current = {k: v for k, v in spec.to_dict().items() if k not in _SPEC_KEYS_NOT_AFFECTING_RESULTS}
    try:
        vouched = json.loads(record.read_text()) == current
    except (OSError, ValueError):
        vouched = False
    checkpoints = sorted(p.name for p in out.glob("checkpoint*.pt"))
    reasons = []
    for name in checkpoints:
        try:
            theirs = read_checkpoint(out / name).get("run_id")
        except CheckpointError:
            continue  # the trainer reports it and renames it to *.corrupt
        if theirs is None and not vouched:
            reasons.append(f"{name} carries no run hashes and run_spec.json does not show "
                           "this run spec")
        elif theirs is not None and theirs != run_id:
            reasons.append(
                f"{name} was made by run spec sha256 {str(theirs.get('spec_sha256'))[:12]}, "
                f"dataset cache sha256 {str(theirs.get('data_sha256'))[:12]}; this run is "
                f"spec {run_id['spec_sha256'][:12]}, data {run_id['data_sha256'][:12]}"
            )
    if reasons:
        names = checkpoints + [n for n in _RUN_OUTPUTS if (out / n).exists()]
        stale = _set_aside(out, names)
        log(f"warning: not resuming: {'; '.join(reasons)}; moved {', '.join(names)} to {stale}")
    atomic_write_text(record, json.dumps(current, indent=1, sort_keys=True))


def spec_from_env_or_arg(text: str | None) -> RunSpec:
    """Read a run spec given inline (JSON) or as ``@path``."""
    if text is None:
        text = os.environ.get("FUSION_RUN_SPEC")
    if not text:
        raise ValueError("no run spec given (pass --spec JSON or --spec @file.json)")
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    return RunSpec.from_json(text)
