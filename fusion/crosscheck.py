"""Cross-check of our MACE training against mace-torch's own script ``mace_run_train``.

For one run spec (:class:`fusion.experiment.RunSpec`, model ``mace``/``baseline``) this
module

1. writes the exact structures our runner trains on (same ``get_dataset`` split and
   subset) as extended-XYZ files, energies in eV under ``info["REF_energy"]``
   (:func:`write_extxyz_splits`),
2. translates the spec into ``mace_run_train`` arguments (:func:`mace_run_train_args`;
   every mapping and every difference is listed below and in ``docs/crosscheck.md``),
3. runs ``mace_run_train`` in a subprocess, parses its final test error table and the
   timestamps of its epoch log lines, evaluates its saved model once more with *our*
   evaluation code, and writes ``crosscheck.json`` next to our ``metrics.json`` numbers
   for the same spec (:func:`run_crosscheck`).

Mapping (ours -> ``mace_run_train`` 0.3.16)
-------------------------------------------
Model (``hparams``, merged with :data:`fusion.models.mace.MACE_DEFAULTS`):
``r_max`` -> ``--r_max``; ``num_bessel`` -> ``--num_radial_basis``;
``num_polynomial_cutoff`` -> ``--num_cutoff_basis``; ``max_ell``, ``correlation``,
``num_interactions``, ``num_channels``, ``max_L``, ``MLP_irreps``, ``gate``,
``interaction``, ``interaction_first``, ``use_reduced_cg`` -> the flag of the same name;
``radial_MLP`` -> ``--radial_MLP "[64, 64, 64]"``; always ``--model MACE`` (their
ScaleShiftMACE with shift 0, the model our builder makes).

Data statistics (computed by us on the training split, passed explicitly so both models
are built identically): elements -> ``--atomic_numbers``; composition fit ->
``--E0s "{1: ..., 6: ...}"`` (or ``--E0s average``: their least-squares fit, the same
estimator); ``avg_num_neighbors`` -> ``--avg_num_neighbors`` with
``--compute_avg_num_neighbors False``; scale (std of the per-atom residual) -> ``--std``
with ``--scaling std_scaling`` (their ``std_scaling`` is the same statistic).

Training (``training`` = :class:`fusion.train.trainer.TrainConfig`): ``epochs`` ->
``--max_num_epochs``; ``lr``; ``optimizer: amsgrad`` -> ``--optimizer adam`` (their
``--amsgrad`` is always on); ``weight_decay``; ``scheduler: plateau`` ->
``ReduceLROnPlateau`` with ``--lr_factor`` = ``plateau_factor`` and
``--scheduler_patience`` = ``plateau_patience``; ``scheduler: none`` -> ``ExponentialLR``
with ``--lr_scheduler_gamma 1``; ``scheduler: cosine`` -> ``ExponentialLR`` with the gamma
whose decay has the same mean learning rate over the run (an approximation);
``ema``/``ema_decay`` -> ``--ema``/``--ema_decay`` (both torch-ema style, with the same
warm-up of the decay); ``grad_clip`` -> ``--clip_grad``; ``patience`` -> ``--patience``
(none: more than the number of epochs); ``eval_every`` -> ``--eval_interval``; ``loss:
mse`` -> ``--loss weighted``; ``energy_weight``/``forces_weight``; ``dtype`` ->
``--default_dtype``; ``seed`` -> ``--seed``; ``device`` -> ``--device``; ``threads`` ->
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` of the subprocess; ``batch_size`` /
``eval_batch_size`` -> ``--batch_size`` / ``--valid_batch_size``.

Rejected (:class:`UnsupportedSettingError`): ``optimizer: adam`` (AMSGrad cannot be
switched off in ``mace_run_train``), ``warmup_epochs > 0``, ``loss: huber`` (their Huber
loss trains stress too), ``monitor: forces_mae``, a first interaction block other than the
non-residual ones ``--model MACE`` accepts, any model other than ``mace/baseline``, unknown
hyperparameters. With ``strict=True`` the approximations below are rejected as well.

Differences that cannot be made equal (also stored in ``crosscheck.json``): see
:func:`translation_differences`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np

__all__ = [
    "ENERGY_KEY",
    "FORCES_KEY",
    "SPLIT_FILES",
    "UnsupportedSettingError",
    "structures_to_atoms",
    "write_extxyz",
    "write_extxyz_splits",
    "mace_run_train_args",
    "check_translatable",
    "translation_differences",
    "cosine_equivalent_gamma",
    "parse_error_tables",
    "parse_test_mae",
    "parse_epoch_times",
    "parse_step_times",
    "run_crosscheck",
    "crosscheck_targets",
    "main",
]

CROSSCHECK_SCHEMA_VERSION = 1
ENERGY_KEY = "REF_energy"
FORCES_KEY = "REF_forces"
# Our split name -> file name (mace_run_train's own words are train/valid/test).
SPLIT_FILES = {"train": "train.xyz", "val": "valid.xyz", "test": "test.xyz"}
RUN_NAME = "crosscheck"
MACE_DIR = "mace_run_train"


class UnsupportedSettingError(ValueError):
    """A run-spec setting that ``mace_run_train`` has no counterpart for."""


# --------------------------------------------------------------------------- data


def structures_to_atoms(structures, indices: Sequence[int]) -> list:
    """``ase.Atoms`` of structures ``indices`` (energies in eV in ``info[ENERGY_KEY]``,
    forces in eV/Å in ``arrays[FORCES_KEY]`` when present). ``info["fusion_index"]`` is the
    structure's index in ``structures`` and ``info["qm9_index"]`` its QM9 index (QM9 only),
    so a file's split membership can be checked."""
    import ase

    qm9_index = structures.meta.get("qm9_index")
    offsets = structures.offsets
    frames = []
    for i in np.asarray(indices, dtype=np.int64):
        a0, n = int(offsets[i]), int(structures.n_atoms[i])
        atoms = ase.Atoms(
            numbers=structures.z[a0:a0 + n], positions=structures.pos[a0:a0 + n], pbc=False
        )
        atoms.info[ENERGY_KEY] = float(structures.y[i])
        atoms.info["fusion_index"] = int(i)
        if qm9_index is not None:
            atoms.info["qm9_index"] = int(qm9_index[i])
        if structures.forces is not None:
            atoms.arrays[FORCES_KEY] = np.asarray(structures.forces[a0:a0 + n], dtype=float)
        frames.append(atoms)
    return frames


def write_extxyz(structures, splits: dict, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``splits`` (``{"train", "val", "test"}`` index arrays) of ``structures`` to
    ``out_dir/{train,valid,test}.xyz`` (extended XYZ, atomically); returns the paths."""
    import ase.io

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, name in SPLIT_FILES.items():
        if split not in splits:
            raise KeyError(f"splits has no {split!r} split (keys: {sorted(splits)})")
        path = out / name
        tmp = path.with_name(f".{name}.tmp")
        ase.io.write(tmp, structures_to_atoms(structures, splits[split]), format="extxyz")
        os.replace(tmp, path)
        paths[split] = path
    return paths


def write_extxyz_splits(dataset: str, split: dict | None, cache_dir: str | os.PathLike,
                        out_dir: str | os.PathLike) -> dict[str, Path]:
    """The structures our runner uses for ``dataset`` with split sizes ``split``
    (``{"n_train", "n_val", "n_test"}``, missing/None = all), written by
    :func:`write_extxyz`. Same call as :func:`fusion.experiment.run_training` makes."""
    from fusion.data.registry import get_dataset

    sizes = {k: (split or {}).get(k) for k in ("n_train", "n_val", "n_test")}
    structures, splits = get_dataset(dataset, cache_dir=cache_dir, **sizes)
    return write_extxyz(structures, splits, out_dir)


# --------------------------------------------------------------------- translation


def _training_config(spec):
    from fusion.train.trainer import TrainConfig

    return TrainConfig.from_dict({"seed": spec.seed, "threads": spec.threads, **spec.training})


def _cosine_lrs(config) -> list[float]:
    """Our cosine learning rate of every epoch (no warm-up)."""
    c = config
    return [
        c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * (e - 1) / c.epochs))
        for e in range(1, c.epochs + 1)
    ]


def cosine_equivalent_gamma(config) -> float:
    """Gamma of the ``ExponentialLR`` schedule (``lr * gamma**k`` in epoch ``k`` from 0)
    whose mean learning rate over ``config.epochs`` equals our cosine schedule's."""
    epochs = config.epochs
    target = sum(_cosine_lrs(config)) / config.lr  # sum of gamma**k, k < epochs
    if epochs == 1 or target >= epochs:
        return 1.0

    def total(g: float) -> float:
        return sum(g**k for k in range(epochs))

    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if total(mid) < target else (lo, mid)
    return 0.5 * (lo + hi)


def _check_supported(spec, config, hp: dict, strict: bool) -> None:
    if (spec.model, spec.variant) != ("mace", "baseline"):
        raise UnsupportedSettingError(
            f"mace_run_train trains mace-torch's MACE only; got model {spec.model}/"
            f"{spec.variant} (cross-check mace/baseline)"
        )
    if config.optimizer != "amsgrad":
        raise UnsupportedSettingError(
            f"training.optimizer={config.optimizer!r}: mace_run_train always uses AMSGrad "
            "(its --amsgrad flag is on by default and cannot be switched off); use amsgrad"
        )
    if config.warmup_epochs:
        raise UnsupportedSettingError(
            f"training.warmup_epochs={config.warmup_epochs}: mace_run_train has no "
            "learning-rate warm-up; use 0"
        )
    if config.loss != "mse":
        raise UnsupportedSettingError(
            f"training.loss={config.loss!r}: mace_run_train's Huber loss also trains stress "
            "(needs a cell); only loss 'mse' (-> --loss weighted) is translated"
        )
    if config.monitor != "mae":
        raise UnsupportedSettingError(
            f"training.monitor={config.monitor!r}: mace_run_train selects its model by "
            "validation loss; only monitor 'mae' is translated"
        )
    allowed_first = ("RealAgnosticInteractionBlock", "RealAgnosticDensityInteractionBlock")
    if hp["interaction_first"] not in allowed_first:
        raise UnsupportedSettingError(
            f"hparams.interaction_first={hp['interaction_first']!r}: mace_run_train "
            f"--model MACE replaces it by RealAgnosticInteractionBlock (allowed: "
            f"{list(allowed_first)})"
        )
    if strict:
        approximations = []
        if config.scheduler == "cosine":
            approximations.append("training.scheduler=cosine (approximated by ExponentialLR)")
        if config.min_lr and config.scheduler == "plateau":
            approximations.append("training.min_lr > 0 with the plateau scheduler")
        if config.target_scale != 1.0:
            approximations.append("training.target_scale != 1")
        if config.weight_decay:
            approximations.append("training.weight_decay > 0 (they decay a parameter subset)")
        if config.patience is not None:
            approximations.append("training.patience (early stopping on another criterion)")
        if approximations:
            raise UnsupportedSettingError(
                "strict cross-check: no exact mace_run_train counterpart for "
                + "; ".join(approximations)
            )


def check_translatable(spec, strict: bool = False):
    """Raise :class:`UnsupportedSettingError` if ``spec`` cannot be given to
    ``mace_run_train``; returns ``(RunSpec, merged MACE hparams, TrainConfig)``."""
    from fusion.experiment import RunSpec
    from fusion.models.mace import mace_hparams

    if isinstance(spec, dict):
        spec = RunSpec.from_dict(spec)
    try:
        hp = mace_hparams(spec.hparams)
    except ValueError as err:
        raise UnsupportedSettingError(str(err)) from err
    config = _training_config(spec)
    _check_supported(spec, config, hp, strict)
    return spec, hp, config


def _python_literal(value) -> str:
    return repr(value)


def mace_run_train_args(spec, stats=None, *, data_dir: str | os.PathLike = "data",
                        work_dir: str | os.PathLike = MACE_DIR, e0s: str = "ours",
                        has_forces: bool = False, strict: bool = False,
                        name: str = RUN_NAME) -> list[str]:
    """``mace_run_train`` arguments (without the program name) for run spec ``spec``.

    ``spec``: :class:`fusion.experiment.RunSpec` or its dict. ``stats``:
    :class:`fusion.models.registry.ModelStats` of the training split (elements, E0s,
    average number of neighbours, scale); ``None`` computes it from the dataset as our
    runner does. ``data_dir``: where :func:`write_extxyz` put the splits; ``work_dir``:
    ``mace_run_train``'s ``--work_dir``. ``e0s``: ``"ours"`` (our composition fit, exact)
    or ``"average"`` (their least-squares fit of the same kind). ``has_forces``: the data
    carries forces (QM9 does not: energy-only, ``--forces_weight 0``). ``strict``: also
    reject settings that are only approximated. Raises :class:`UnsupportedSettingError`.
    """
    if e0s not in ("ours", "average"):
        raise ValueError(f"e0s must be 'ours' or 'average', got {e0s!r}")
    spec, hp, config = check_translatable(spec, strict)
    if stats is None:
        stats = _model_stats(spec)[2]

    data = Path(data_dir)
    args = [
        "--name", name,
        "--work_dir", str(work_dir),
        "--seed", str(spec.seed),
        "--device", _device(config.device),
        "--default_dtype", config.dtype,
        "--train_file", str(data / SPLIT_FILES["train"]),
        "--valid_file", str(data / SPLIT_FILES["val"]),
        "--test_file", str(data / SPLIT_FILES["test"]),
        "--energy_key", ENERGY_KEY,
        "--forces_key", FORCES_KEY,
        "--error_table", "TotalMAE",
        "--plot", "False",
        "--num_workers", "0",
        "--pin_memory", "False",
        # model
        "--model", "MACE",
        "--r_max", repr(float(hp["r_max"])),
        "--num_radial_basis", str(int(hp["num_bessel"])),
        "--num_cutoff_basis", str(int(hp["num_polynomial_cutoff"])),
        "--max_ell", str(int(hp["max_ell"])),
        "--correlation", str(int(hp["correlation"])),
        "--num_interactions", str(int(hp["num_interactions"])),
        "--num_channels", str(int(hp["num_channels"])),
        "--max_L", str(int(hp["max_L"])),
        "--MLP_irreps", str(hp["MLP_irreps"]),
        "--radial_MLP", _python_literal([int(w) for w in hp["radial_MLP"]]),
        "--gate", str(hp["gate"]),
        "--interaction", str(hp["interaction"]),
        "--interaction_first", str(hp["interaction_first"]),
        "--use_reduced_cg", str(bool(hp["use_reduced_cg"])),
        # data statistics, ours
        "--atomic_numbers", _python_literal([int(z) for z in stats.elements]),
        "--avg_num_neighbors", repr(float(stats.avg_num_neighbors)),
        "--compute_avg_num_neighbors", "False",
        "--scaling", "std_scaling",
        "--std", repr(float(stats.scale)),
        # training
        "--batch_size", str(spec.batch_size),
        "--valid_batch_size", str(spec.eval_batch_size),
        "--max_num_epochs", str(config.epochs),
        "--optimizer", "adam",
        "--amsgrad",
        "--lr", repr(config.lr),
        "--weight_decay", repr(config.weight_decay),
        "--clip_grad", "None" if config.grad_clip is None else repr(config.grad_clip),
        "--loss", "weighted",
        "--energy_weight", repr(config.energy_weight),
        "--forces_weight", repr(config.forces_weight if has_forces else 0.0),
        "--eval_interval", str(config.eval_every),
        "--patience", str(config.patience if config.patience is not None
                          else max(2048, config.epochs + 1)),
    ]
    if e0s == "ours":
        energies = {int(z): float(e) for z, e in zip(stats.elements, stats.atomic_energies)}
        args += ["--E0s", _python_literal(energies)]
    else:
        args += ["--E0s", "average"]
    if config.scheduler == "plateau":
        args += ["--scheduler", "ReduceLROnPlateau", "--lr_factor", repr(config.plateau_factor),
                 "--scheduler_patience", str(config.plateau_patience)]
    else:
        gamma = cosine_equivalent_gamma(config) if config.scheduler == "cosine" else 1.0
        args += ["--scheduler", "ExponentialLR", "--lr_scheduler_gamma", repr(gamma)]
    if config.ema:
        args += ["--ema", "--ema_decay", repr(config.ema_decay)]
    return args


def translation_differences(spec, has_forces: bool = False) -> list[str]:
    """What differs between our training of ``spec`` and ``mace_run_train``'s, in words
    (the differences that cannot be made equal, and the approximations made)."""
    from fusion.experiment import RunSpec

    if isinstance(spec, dict):
        spec = RunSpec.from_dict(spec)
    config = _training_config(spec)
    out = [
        "loss normalisation: theirs is the mean over structures of ((E_pred - E)/n_atoms)^2 "
        "(per-atom energy MSE, eV^2/atom^2); ours is the mean of ((E_pred - E)/target_scale)^2 "
        "(total-energy MSE): molecules are weighted differently and gradient clipping acts "
        "at another loss scale",
        "model selection: theirs keeps the epoch with the lowest validation loss (per-atom "
        "MSE); ours the epoch with the lowest validation MAE",
        "epoch: theirs drops the last incomplete batch (drop_last=True), ours does not; "
        "both shuffle, with different generators",
        "initialisation and shuffling use the same seed but different random streams, so "
        "the two runs differ like two seeds of one trainer",
        "evaluation: theirs prints test MAE rounded to 0.1 meV; "
        "test_mae_meV_our_evaluation re-evaluates their saved model with our code",
    ]
    if not has_forces:
        out.append(
            "energy-only data: mace_run_train 0.3.16 cannot train without computing forces "
            "(--compute_forces False makes WeightedEnergyForcesLoss fail), so every training "
            "step of theirs also computes forces (create_graph=True) and backpropagates "
            "through them with weight 0; ours computes energies only"
        )
    if config.scheduler == "cosine":
        out.append(
            "scheduler: ours is cosine; theirs has none, approximated by ExponentialLR with "
            f"gamma={cosine_equivalent_gamma(config):.6g} (same mean learning rate)"
        )
    if config.scheduler == "plateau":
        out.append(
            "plateau scheduler: theirs monitors the validation loss, ours the validation MAE"
            + ("; their ReduceLROnPlateau has no min_lr" if config.min_lr else "")
        )
    if config.weight_decay:
        out.append("weight decay: theirs applies it to interaction and product weights only")
    if config.target_scale != 1.0:
        out.append("target_scale: no counterpart (theirs divides errors by n_atoms instead)")
    if config.patience is not None:
        out.append("early stopping: theirs counts validations without a lower validation "
                   "loss, ours without a lower validation MAE")
    if config.eval_every != 1:
        out.append("eval_every: theirs validates epochs 0, k, 2k, ... (0-based) and not "
                   "necessarily the last one")
    return out


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _model_stats(spec):
    from fusion.experiment import _load_split, model_stats
    from fusion.models.registry import graph_cutoff

    structures, splits = _load_split(spec)
    r_max = graph_cutoff(spec.model, spec.variant, spec.hparams)
    return structures, splits, model_stats(structures, splits["train"], r_max)


# ------------------------------------------------------------------------- parsing

_TIME = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})"
_EPOCH_LINE = re.compile(_TIME + r" INFO: (?:Initial|Epoch (\d+)): head: (\S+), loss=")


def parse_error_tables(text: str) -> dict[str, dict[str, dict[str, float | None]]]:
    """The error tables ``mace_run_train`` logs at the end of training.

    Returns ``{"TRAIN and VALID": {row: {column: value}}, "TEST": {...}}`` (the titles as
    logged after ``Error-table on``); values are floats, ``None`` where the table says
    None. Units are those of the column titles (``MAE E / meV`` for ``TotalMAE``).
    """
    tables: dict[str, dict[str, dict[str, float | None]]] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = re.search(r"Error-table on (.+?):\s*$", lines[i])
        i += 1
        if not match:
            continue
        rows: list[list[str]] = []
        borders = 0
        while i < len(lines) and borders < 3:
            line = lines[i].strip()
            if line.startswith("+"):
                borders += 1
            elif line.startswith("|"):
                rows.append([cell.strip() for cell in line.strip("|").split("|")])
            else:
                break
            i += 1
        if not rows:
            continue
        header, body = rows[0], rows[1:]
        table = {}
        for row in body:
            table[row[0]] = {col: _number(cell) for col, cell in zip(header[1:], row[1:])}
        tables[match.group(1)] = table
    return tables


def _number(cell: str) -> float | None:
    return None if cell in ("None", "") else float(cell)


def parse_test_mae(text: str, column: str = "MAE E / meV") -> float:
    """Test energy MAE (meV) from ``mace_run_train``'s log (``--error_table TotalMAE``)."""
    tables = parse_error_tables(text)
    if "TEST" not in tables:
        raise ValueError("no 'Error-table on TEST' in the mace_run_train log (did it finish, "
                         "and was --test_file given?)")
    rows = tables["TEST"]
    if len(rows) != 1:
        raise ValueError(f"expected one test set in the error table, got {sorted(rows)}")
    (row,) = rows.values()
    if column not in row:
        raise ValueError(f"test error table has no column {column!r} (columns: {list(row)}); "
                         "run mace_run_train with --error_table TotalMAE")
    value = row[column]
    if value is None:
        raise ValueError(f"test error table gives None for {column!r}")
    return value


def parse_epoch_times(text: str) -> dict:
    """Training wall time from the timestamps of the validation lines of the log.

    ``mace_run_train`` logs ``Initial: head: ...`` after validating the untrained model and
    ``Epoch N: head: ...`` after each epoch's training and validation, so the time between
    the first and the last of these lines is the training time (epochs incl. their
    validation and checkpointing), without data preprocessing, model building or the final
    evaluation. Returns ``{"epochs", "seconds", "epoch_seconds"}`` (epochs = logged epochs).
    """
    stamps: list[tuple[int | None, datetime]] = []
    for line in text.splitlines():
        match = _EPOCH_LINE.search(line)
        if match:
            when = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f")
            stamps.append((None if match.group(2) is None else int(match.group(2)), when))
    epochs = [(e, t) for e, t in stamps if e is not None]
    initial = [t for e, t in stamps if e is None]
    if not initial or not epochs:
        raise ValueError("no 'Initial:'/'Epoch N:' validation lines in the mace_run_train log")
    times = [initial[0]] + [t for _, t in epochs]
    deltas = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    return {"epochs": len(epochs), "seconds": sum(deltas), "epoch_seconds": deltas}


def parse_step_times(text: str) -> dict:
    """Optimisation steps from ``mace_run_train``'s results file (``results/*_train.txt``,
    one JSON object per line; ``mode: opt`` lines are steps with their ``time`` in s, which
    covers moving the batch, forward, backward, clipping, the optimiser and EMA step, but
    not the data loader)."""
    n, seconds, epochs = 0, 0.0, set()
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        record = json.loads(line)
        if record.get("mode") == "opt":
            n += 1
            seconds += float(record["time"])
            epochs.add(record.get("epoch"))
    return {"steps": n, "seconds": seconds, "epochs": len(epochs)}


# ---------------------------------------------------------------------------- run


def _mace_run_train_executable() -> str:
    local = Path(sys.executable).parent / "mace_run_train"
    if local.exists():
        return str(local)
    found = shutil.which("mace_run_train")
    if found is None:
        raise FileNotFoundError("mace_run_train not found (pip install mace-torch)")
    return found


def _stream(cmd: list[str], cwd: Path, env: dict, out_file: Path,
            log: Callable[[str], None]) -> int:
    with open(out_file, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
            log(line.rstrip("\n"))
        return proc.wait()


def _evaluate_their_model(model_path: Path, structures, splits, stats, spec, config) -> float:
    """Test MAE (reported unit) of their saved model, computed with our evaluation code."""
    import torch

    from fusion.data.graphs import GraphLoader
    from fusion.models.mace import MaceEnergyModel
    from fusion.models.registry import graph_cutoff
    from fusion.train.trainer import evaluate

    dtype = config.torch_dtype
    old_threads, old_dtype = torch.get_num_threads(), torch.get_default_dtype()
    try:
        torch.set_num_threads(spec.threads)
        torch.set_default_dtype(dtype)
        module = torch.load(model_path, map_location="cpu", weights_only=False)
        model = MaceEnergyModel(module).to(dtype=dtype)
        loader = GraphLoader(structures, splits["test"], batch_size=spec.eval_batch_size,
                             r_max=graph_cutoff(spec.model, spec.variant, spec.hparams),
                             elements=stats.elements, dtype=dtype)
        return evaluate(model, loader, dtype=dtype,
                        report_factor=structures.meta["report_factor"])["mae"]
    finally:
        torch.set_num_threads(old_threads)
        torch.set_default_dtype(old_dtype)


def _count_saved_parameters(model_path: Path) -> int:
    import torch

    from fusion.models.registry import count_parameters

    module = torch.load(model_path, map_location="cpu", weights_only=False)
    for p in module.parameters():  # their final evaluation switches gradients off
        p.requires_grad_(True)
    return count_parameters(module)


def _our_results(spec) -> dict | None:
    from fusion.experiment import _SPEC_KEYS_NOT_AFFECTING_RESULTS

    path = Path(spec.out_dir) / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    train = metrics["train"]
    per_epoch = float(train["seconds_per_epoch"])
    n = int(train["n_structures"])
    recorded = metrics.get("hyperparameters", {})
    current = spec.to_dict()
    same = all(recorded.get(k) == current[k] for k in current
               if k not in _SPEC_KEYS_NOT_AFFECTING_RESULTS)
    return {
        "metrics_json": str(path),
        "same_spec": same,
        "test_mae_meV": float(metrics["test"]["mae"]),
        "val_mae_meV": float(metrics["val"]["mae"]),
        "n_params": metrics.get("n_params"),
        "epochs": int(train["epochs"]),
        "best_epoch": train.get("best_epoch"),
        "structures_per_epoch": n,
        "train_seconds": per_epoch * int(train["epochs"]),
        "structures_per_second": n / per_epoch if per_epoch > 0 else None,
    }


def run_crosscheck(spec, workdir: str | os.PathLike, *, e0s: str = "ours",
                   strict: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train ``spec`` with ``mace_run_train`` in ``workdir`` and compare with our run.

    Writes ``workdir/data/{train,valid,test}.xyz``, runs ``mace_run_train`` in
    ``workdir/mace_run_train/`` (cleared first; its output is streamed to ``log`` and kept
    in ``workdir/mace_run_train.out``) and writes ``workdir/crosscheck.json`` (atomically).
    Our numbers come from ``spec.out_dir/metrics.json`` when it exists (``ours`` is null
    otherwise). Returns the ``crosscheck.json`` document.
    """
    from importlib.metadata import version

    from fusion.train.checkpoint import atomic_write_text

    spec, _, config = check_translatable(spec, strict)  # fail before any work
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    structures, splits, stats = _model_stats(spec)
    has_forces = structures.forces is not None
    args = mace_run_train_args(spec, stats, data_dir=workdir / "data",
                               work_dir=workdir / MACE_DIR, e0s=e0s,
                               has_forces=has_forces, strict=strict)
    write_extxyz(structures, splits, workdir / "data")
    mace_dir = workdir / MACE_DIR
    if mace_dir.exists():  # stale checkpoints would be picked up by its final evaluation
        shutil.rmtree(mace_dir)
    mace_dir.mkdir()

    env = dict(os.environ)
    threads = str(spec.threads)
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    cmd = [_mace_run_train_executable(), *args]
    log(f"running: mace_run_train {' '.join(args)}")
    started = time.perf_counter()
    rc = _stream(cmd, workdir, env, workdir / "mace_run_train.out", log)
    wall = time.perf_counter() - started
    if rc != 0:
        raise RuntimeError(f"mace_run_train failed (exit {rc}); see "
                           f"{workdir / 'mace_run_train.out'}")

    tag = f"{RUN_NAME}_run-{spec.seed}"
    log_text = (mace_dir / "logs" / f"{tag}.log").read_text()
    tables = parse_error_tables(log_text)
    epochs = parse_epoch_times(log_text)
    steps = parse_step_times((mace_dir / "results" / f"{tag}_train.txt").read_text())
    n_train = len(splits["train"])
    per_epoch = (n_train // spec.batch_size) * spec.batch_size  # drop_last=True
    model_path = mace_dir / f"{RUN_NAME}.model"
    theirs = {
        "test_mae_meV": parse_test_mae(log_text),
        "test_mae_meV_our_evaluation": _evaluate_their_model(
            model_path, structures, splits, stats, spec, config),
        "error_tables_meV": tables,
        "n_params": _count_saved_parameters(model_path),
        "epochs": epochs["epochs"],
        "n_train": n_train,
        "structures_per_epoch": per_epoch,
        "train_seconds": epochs["seconds"],
        "structures_per_second": per_epoch * epochs["epochs"] / epochs["seconds"],
        "step_seconds": steps["seconds"],
        "steps": steps["steps"],
        "structures_per_second_steps_only": (
            per_epoch * steps["epochs"] / steps["seconds"] if steps["seconds"] else None),
        "process_wall_seconds": wall,
    }
    ours = _our_results(spec)
    result = {
        "schema_version": CROSSCHECK_SCHEMA_VERSION,
        "dataset": spec.dataset, "model": spec.model, "variant": spec.variant,
        "seed": spec.seed,
        "units": {"mae": "meV", "throughput": "structures/s"},
        "mace_torch_version": version("mace-torch"),
        "e0s": e0s,
        "command": ["mace_run_train", *args],
        "theirs": theirs,
        "ours": ours,
        "test_mae_relative_difference": (
            (theirs["test_mae_meV"] - ours["test_mae_meV"]) / ours["test_mae_meV"]
            if ours else None),
        "throughput_ratio_ours_over_theirs": (
            ours["structures_per_second"] / theirs["structures_per_second"]
            if ours and ours["structures_per_second"] else None),
        "differences": translation_differences(spec, has_forces),
        "spec": spec.to_dict(),
    }
    atomic_write_text(workdir / "crosscheck.json",
                      json.dumps(result, indent=1, sort_keys=True, allow_nan=False) + "\n")
    log(_summary(result))
    return result


def _summary(result: dict) -> str:
    theirs, ours = result["theirs"], result["ours"]
    lines = [f"mace_run_train: test MAE {theirs['test_mae_meV']:.1f} meV "
             f"(our evaluation of its model: {theirs['test_mae_meV_our_evaluation']:.2f} meV), "
             f"{theirs['structures_per_second']:.1f} structures/s"]
    if ours:
        lines.append(f"ours:           test MAE {ours['test_mae_meV']:.2f} meV, "
                     f"{ours['structures_per_second']:.1f} structures/s")
        lines.append(f"relative test-MAE difference (theirs - ours) / ours: "
                     f"{100 * result['test_mae_relative_difference']:+.1f} %; throughput "
                     f"ours/theirs: {result['throughput_ratio_ours_over_theirs']:.2f}")
    return "\n".join(lines)


def crosscheck_targets(config: dict) -> list[str]:
    """``crosscheck.json`` paths of a workflow config: one per dataset and seed when
    ``config["crosscheck"]`` is true and ``mace: [baseline, ...]`` is in the grid."""
    if not config.get("crosscheck") or "baseline" not in config["models"].get("mace", []):
        return []
    return [
        f"results/crosscheck/{dataset}/mace/baseline/seed-{seed}/crosscheck.json"
        for dataset in config["datasets"]
        for seed in config["seeds"]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fusion.crosscheck --spec JSON|@file --workdir DIR``."""
    from fusion.experiment import spec_from_env_or_arg

    parser = argparse.ArgumentParser(
        prog="python -m fusion.crosscheck",
        description="Train a run spec with mace-torch's mace_run_train and compare it with "
                    "our run (writes WORKDIR/crosscheck.json).")
    parser.add_argument("--spec", help="run spec as JSON, or @path to a JSON file "
                                        "(default: $FUSION_RUN_SPEC)")
    parser.add_argument("--workdir", required=True, help="where data, mace_run_train's "
                                                         "files and crosscheck.json go")
    parser.add_argument("--e0s", choices=("ours", "average"), default="ours",
                        help="E0s: our composition fit (default) or their --E0s average")
    parser.add_argument("--strict", action="store_true",
                        help="reject settings that are only approximated")
    ns = parser.parse_args(argv)
    try:
        spec = spec_from_env_or_arg(ns.spec)
        run_crosscheck(spec, ns.workdir, e0s=ns.e0s, strict=ns.strict,
                       log=lambda line: print(line, flush=True))
    except (UnsupportedSettingError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
