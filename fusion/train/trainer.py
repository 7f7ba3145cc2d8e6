"""One trainer for every model of the suite.

A model is any ``nn.Module`` with ``forward(batch, compute_forces) -> {"energy": [B],
"forces": [A, 3] | None}`` in internal units (eV, eV/Å); batches follow
``docs/architecture.md`` (``"y"`` [B] target, optional ``"forces"`` [A, 3]).

:func:`train` writes into ``workdir``: ``checkpoint.pt`` (+ ``checkpoint.prev.pt``) after every
epoch, ``log.csv`` (one row per epoch) and ``model.pt`` (best validation weights, EMA weights
when EMA is on). It resumes automatically from the checkpoint it finds there, and returns the
metrics fragment of ``metrics.json`` (``test``, ``val``, ``train``, ``inference``,
``peak_memory_mb``, ``units``). See ``docs/training.md``.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fusion.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    atomic_torch_save,
    atomic_write_text,
    capture_rng_state,
    load_latest_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from fusion.train.losses import LOSSES, compute_loss, wants_forces

__all__ = [
    "TrainConfig",
    "TrainingDivergedError",
    "EMA",
    "LRSchedule",
    "LOG_COLUMNS",
    "evaluate",
    "train",
]

LOG_COLUMNS = ("epoch", "lr", "train_loss", "val_mae", "val_rmse", "val_forces_mae", "seconds")
OPTIMIZERS = ("adam", "amsgrad")
SCHEDULERS = ("cosine", "cosine-batch", "plateau", "none")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEVICES = ("cpu", "cuda", "auto")  # and "cuda:N"
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
MONITORS = ("mae", "forces_mae")

# Config fields that may change between an interrupted run and its resumption without a
# warning (they do not change what the finished epochs computed).
_RESUME_NEUTRAL = {"epochs", "progress", "threads", "patience", "device", "eval_every"}


class TrainingDivergedError(RuntimeError):
    """The loss (or gradient norm, or validation error) became NaN or infinite."""

    def __init__(self, epoch: int, batch: int | str, value: float, checkpoint: str | None):
        self.epoch = epoch
        self.batch = batch
        self.value = value
        self.checkpoint = checkpoint
        kept = (
            f"last good checkpoint kept at {checkpoint}"
            if checkpoint
            else "no checkpoint was written yet"
        )
        super().__init__(
            f"training diverged: non-finite value {value} at epoch {epoch}, batch {batch}; {kept}"
        )


# ------------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Training hyperparameters (validated on construction; bad values raise ValueError).

    Defaults follow ``mace_run_train`` where it has one (AMSGrad, lr 0.01, plateau schedule
    with factor 0.8 and patience 50, gradient clipping at 10, EMA decay 0.99 when on,
    energy/forces weights 1/100, float64).

    Units: ``lr`` and ``min_lr`` per optimiser step; ``target_scale`` in the target's internal
    unit (eV for energies; forces errors are divided by it too, i.e. read as eV/Å);
    ``grad_clip`` is a max L2 norm over all gradients; ``huber_delta`` is in units of
    ``target_scale``. ``patience`` and ``plateau_patience`` count validations (one every
    ``eval_every`` epochs and always at the last epoch).

    ``device``: ``"cpu"``, ``"cuda"`` (the current CUDA device), ``"cuda:N"`` (GPU number N)
    or ``"auto"`` (CUDA when torch sees one, else CPU). ``amp``: mixed precision on CUDA
    only: the training forward pass and loss run under ``torch.autocast`` in ``amp_dtype``
    (``"bfloat16"``, or ``"float16"`` with a gradient scaler); it needs ``dtype="float32"``
    and a CUDA device (a run with ``amp`` on that resolves to the CPU stops with a
    ValueError before training). Validation and test always run without autocast.
    """

    epochs: int = 100
    lr: float = 0.01
    optimizer: str = "amsgrad"
    weight_decay: float = 0.0
    scheduler: str = "plateau"
    plateau_factor: float = 0.8
    plateau_patience: int = 50
    min_lr: float = 0.0
    warmup_epochs: int = 0
    ema: bool = False
    ema_decay: float = 0.99
    grad_clip: float | None = 10.0
    patience: int | None = None
    monitor: str = "mae"
    energy_weight: float = 1.0
    forces_weight: float = 100.0
    loss: str = "mse"
    huber_delta: float = 0.01
    target_scale: float = 1.0
    dtype: str = "float64"
    seed: int = 0
    threads: int | None = None
    progress: bool = True
    eval_every: int = 1
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> ValueError:
            return ValueError(
                f"TrainConfig.{name}: expected {expected}, got {getattr(self, name)!r}"
            )

        def check_int(name: str, minimum: int, optional: bool = False) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            what = f"an integer >= {minimum}" + (" or None" if optional else "")
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise bad(name, what)

        def check_float(
            name: str, lo: float, lo_open: bool, hi: float | None = None, optional=False
        ) -> None:
            v = getattr(self, name)
            if optional and v is None:
                return
            rng = f"{'>' if lo_open else '>='} {lo}" + (f" and < {hi}" if hi is not None else "")
            what = f"a finite number {rng}" + (" or None" if optional else "")
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise bad(name, what)
            v = float(v)
            ok = math.isfinite(v) and (v > lo if lo_open else v >= lo)
            if hi is not None:
                ok = ok and v < hi
            if not ok:
                raise bad(name, what)
            setattr(self, name, v)

        def check_choice(name: str, choices: Iterable[str]) -> None:
            if getattr(self, name) not in tuple(choices):
                raise bad(name, f"one of {list(choices)}")

        def check_bool(name: str) -> None:
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")

        check_int("epochs", 1)
        check_float("lr", 0.0, True)
        check_choice("optimizer", OPTIMIZERS)
        check_float("weight_decay", 0.0, False)
        check_choice("scheduler", SCHEDULERS)
        check_float("plateau_factor", 0.0, True, 1.0)
        check_int("plateau_patience", 0)
        check_float("min_lr", 0.0, False)
        if self.min_lr >= self.lr:
            raise bad("min_lr", f"a number below lr ({self.lr})")
        check_int("warmup_epochs", 0)
        if self.warmup_epochs >= self.epochs:
            raise bad("warmup_epochs", f"fewer than epochs ({self.epochs})")
        check_bool("ema")
        check_float("ema_decay", 0.0, True, 1.0)
        check_float("grad_clip", 0.0, True, optional=True)
        check_int("patience", 1, optional=True)
        check_choice("monitor", MONITORS)
        check_float("energy_weight", 0.0, False)
        check_float("forces_weight", 0.0, False)
        if self.energy_weight == 0 and self.forces_weight == 0:
            raise bad("energy_weight", "a positive weight when forces_weight is 0")
        check_choice("loss", LOSSES)
        check_float("huber_delta", 0.0, True)
        check_float("target_scale", 0.0, True)
        check_choice("dtype", DTYPES)
        check_int("seed", 0)
        if self.seed > 2**32 - 1:
            raise bad("seed", "an integer from 0 to 4294967295 (numpy's seed range)")
        check_int("threads", 1, optional=True)
        check_bool("progress")
        check_int("eval_every", 1)
        if not (self.device in DEVICES or _is_cuda_index(self.device)):
            raise bad("device", f"one of {list(DEVICES)} or 'cuda:N' (N = 0, 1, ...)")
        check_bool("amp")
        check_choice("amp_dtype", AMP_DTYPES)
        if self.amp and self.dtype != "float32":
            raise bad(
                "amp",
                f"false when dtype is {self.dtype!r} (mixed precision autocasts float32 "
                "work; set dtype: float32 to use it)",
            )

    @classmethod
    def keys(cls) -> list[str]:
        """All valid field names."""
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Build from a mapping; unknown keys raise ValueError listing the valid ones."""
        if not isinstance(d, dict):
            raise ValueError(f"TrainConfig: expected a mapping, got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls.keys()))
        if unknown:
            raise ValueError(
                f"unknown TrainConfig key(s) {unknown}; valid keys: {sorted(cls.keys())}"
            )
        return cls(**d)

    def to_dict(self) -> dict:
        """Plain dict of every field (JSON-serialisable)."""
        return asdict(self)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


# --------------------------------------------------------------------------- EMA, schedule


class EMA:
    """Exponential moving average of parameters (as torch-ema, with warm-up of the decay).

    After ``n`` updates the decay used is ``min(decay, (1 + n) / (10 + n))``, so early
    averages are not dominated by the random initialisation.
    """

    def __init__(self, params: Iterable[torch.Tensor], decay: float):
        self.params = list(params)
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        n = self.num_updates
        decay = min(self.decay, (1 + n) / (10 + n))
        for s, p in zip(self.shadow, self.params):
            s.sub_((1.0 - decay) * (s - p.detach()))

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Within the block, the parameters hold the averaged values."""
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup):
                    p.copy_(b)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        if len(state["shadow"]) != len(self.shadow):
            raise ValueError(
                f"EMA state has {len(state['shadow'])} tensors, model has {len(self.shadow)}"
            )
        self.decay = float(state["decay"])
        self.num_updates = int(state["num_updates"])
        with torch.no_grad():
            for s, t in zip(self.shadow, state["shadow"]):
                s.copy_(t)


class LRSchedule:
    """Learning rate per epoch: optional linear warm-up, then cosine / plateau / constant.
    ``cosine-batch`` is the same cosine stepped every minibatch (:meth:`lr_for_step`; the
    reference Cormorant's schedule), ``lr_for_epoch`` giving its value at the epoch's start.

    ``lr_for_epoch(e)`` (``e`` from 1): during warm-up ``lr * e / warmup_epochs``; cosine
    decays from ``lr`` (first epoch after warm-up) towards ``min_lr`` at ``epochs + 1``;
    plateau multiplies the rate by ``plateau_factor`` (not below ``min_lr``) when the
    monitored validation error has not improved (relative threshold 1e-4, as torch's
    ReduceLROnPlateau) for more than ``plateau_patience`` validations.
    """

    def __init__(self, config: TrainConfig):
        self.config = config
        self.plateau_lr = config.lr
        self.best = math.inf
        self.num_bad = 0

    def lr_for_epoch(self, epoch: int) -> float:
        c = self.config
        if epoch <= c.warmup_epochs:
            return c.lr * epoch / c.warmup_epochs
        if c.scheduler in ("cosine", "cosine-batch"):
            t = (epoch - 1 - c.warmup_epochs) / max(1, c.epochs - c.warmup_epochs)
            return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))
        if c.scheduler == "plateau":
            return self.plateau_lr
        return c.lr

    def lr_for_step(self, epoch: int, batch: int, n_batches: int) -> float:
        """Rate for minibatch ``batch`` (from 1) of ``n_batches`` in ``epoch``: with
        ``cosine-batch`` after warm-up the cosine over all ``(epochs - warmup_epochs) *
        n_batches`` steps (``lr`` at the first, towards ``min_lr``), else ``lr_for_epoch``."""
        c = self.config
        if c.scheduler != "cosine-batch" or epoch <= c.warmup_epochs:
            return self.lr_for_epoch(epoch)
        done = (epoch - 1 - c.warmup_epochs) * n_batches + batch - 1
        t = done / max(1, (c.epochs - c.warmup_epochs) * n_batches)
        return c.min_lr + (c.lr - c.min_lr) * 0.5 * (1.0 + math.cos(math.pi * t))

    def step(self, metric: float) -> None:
        """Record one validation result (only the plateau schedule uses it)."""
        if self.config.scheduler != "plateau":
            return
        if metric < self.best * (1.0 - 1e-4):
            self.best = metric
            self.num_bad = 0
        else:
            self.num_bad += 1
            if self.num_bad > self.config.plateau_patience:
                reduced = self.plateau_lr * self.config.plateau_factor
                self.plateau_lr = max(self.config.min_lr, reduced)
                self.num_bad = 0

    def state_dict(self) -> dict:
        return {"plateau_lr": self.plateau_lr, "best": self.best, "num_bad": self.num_bad}

    def load_state_dict(self, state: dict) -> None:
        self.plateau_lr = float(state["plateau_lr"])
        self.best = float(state["best"])
        self.num_bad = int(state["num_bad"])


# ---------------------------------------------------------------------------- helpers


def _is_cuda_index(name: object) -> bool:
    """True for ``"cuda:N"`` with N a non-negative integer written in digits."""
    return isinstance(name, str) and name.startswith("cuda:") and name[5:].isdigit()


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"``/``"cuda:N"`` without that
    device raise RuntimeError naming what torch sees."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"TrainConfig.device is {name!r} but torch sees no CUDA device")
        if _is_cuda_index(name) and int(name[5:]) >= torch.cuda.device_count():
            raise RuntimeError(
                f"TrainConfig.device is {name!r} but torch sees only "
                f"{torch.cuda.device_count()} CUDA device(s) (cuda:0 ... "
                f"cuda:{torch.cuda.device_count() - 1})"
            )
    return torch.device(name)


def check_amp_device(config: TrainConfig, device: torch.device) -> None:
    """Mixed precision runs on CUDA only: raise ValueError when ``config.amp`` is on elsewhere."""
    if config.amp and device.type != "cuda":
        raise ValueError(
            f"training.amp is true but the run's device is {device.type!r} "
            f"(training.device={config.device!r}): mixed precision (autocast) runs on CUDA "
            "only; set training.amp: false or train on a GPU"
        )


def to_device(batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """A copy of ``batch`` on ``device``, floating tensors cast to ``dtype``.

    ``positions`` is always a fresh tensor, so a model that sets ``requires_grad`` on it
    does not touch the loader's cached batch.
    """
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                value = value.to(device=device, dtype=dtype)
                if key == "positions":
                    value = value.detach().clone()
            else:
                value = value.to(device=device)
        out[key] = value
    return out


def _n_atoms(batch: dict) -> torch.Tensor:
    if batch.get("n_atoms") is not None:
        return batch["n_atoms"]
    if batch.get("ptr") is not None:
        return batch["ptr"][1:] - batch["ptr"][:-1]
    return torch.bincount(batch["batch"], minlength=batch["y"].shape[0])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(
    model: nn.Module,
    loader: Iterable[dict],
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
    report_factor: float = 1000.0,
) -> dict:
    """Errors of ``model`` on ``loader`` in reported units (internal * ``report_factor``).

    Returns ``mae``, ``rmse``, ``mae_per_atom`` (mean of |error| / atoms) of ``y``,
    ``forces_mae``/``forces_rmse`` (per Cartesian component; None without forces),
    ``n_structures`` and ``seconds`` (wall time of the pass). Forces are computed (with
    autograd) only when the batches contain ``"forces"``; otherwise no graph is built.

    Multi-state targets (``y`` [B, S], forces [A, S, 3]): the errors above pool all states,
    and :class:`fusion.train.metrics.ErrorSums` adds per-state and gap keys.
    """
    from fusion.train.metrics import ErrorSums

    device = torch.device(device)
    was_training = model.training
    model.eval()
    sums = ErrorSums()
    _sync(device)
    t0 = time.perf_counter()
    try:
        for raw in loader:
            batch = to_device(raw, device, dtype)
            need_f = batch.get("forces") is not None
            with torch.set_grad_enabled(need_f):
                out = model(batch, compute_forces=need_f)
            pred_f = out.get("forces") if need_f else None
            sums.add(
                out["energy"].detach().to(torch.float64).cpu().numpy(),
                batch["y"].to(torch.float64).cpu().numpy(),
                _n_atoms(batch).cpu().numpy(),
                None if pred_f is None else pred_f.detach().to(torch.float64).cpu().numpy(),
                None if pred_f is None else batch["forces"].to(torch.float64).cpu().numpy(),
            )
        _sync(device)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - t0
    if sums.n == 0:
        raise ValueError("evaluation loader yielded no structures")
    return {**sums.errors(report_factor), "seconds": seconds}


def _units(report_units: str | dict | None) -> dict:
    if report_units is None:
        report_units = "meV"
    if isinstance(report_units, str):
        return {"y": report_units, "y_per_atom": f"{report_units}/atom", "forces": "meV/Å"}
    missing = [k for k in ("y", "y_per_atom", "forces") if k not in report_units]
    if missing:
        raise ValueError(f"report_units is missing key(s) {missing}")
    return dict(report_units)


def _fmt(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _log_csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for row in rows:
        writer.writerow(_log_csv_row(row))
    return buf.getvalue()


def _log_csv_row(row: dict) -> list[str]:
    return [str(row["epoch"])] + [_fmt(row[c]) for c in LOG_COLUMNS[1:]]


def _append_log_row(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow(_log_csv_row(row))
        f.flush()


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this run in MB (2**20 B): CUDA max allocated, else the process max RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@contextlib.contextmanager
def _torch_settings(config: TrainConfig) -> Iterator[None]:
    """Threads, default dtype and deterministic algorithms for the run; restored after."""
    old_threads = torch.get_num_threads()
    old_dtype = torch.get_default_dtype()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        torch.set_default_dtype(config.torch_dtype)
        # warn_only: ops without a deterministic kernel (CUDA scatter) warn once, not fail.
        torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.set_default_dtype(old_dtype)
        torch.set_num_threads(old_threads)


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


def _clone_state(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------ train


def train(
    model: nn.Module,
    train_loader,
    val_loader,
    test_loader,
    config: TrainConfig | dict,
    workdir: str | Path,
    report_factor: float = 1000.0,
    report_units: str | dict | None = None,
    log: Callable[[str], None] = print,
    *,
    on_epoch_end: Callable[[int], None] | None = None,
    run_id: dict | None = None,
) -> dict:
    """Train ``model`` (resuming from ``workdir``), then evaluate the best weights.

    Args:
        model: ``forward(batch, compute_forces) -> {"energy", "forces"}``, internal units.
        train_loader, val_loader, test_loader: re-iterable sequences of batch dicts with
            ``len()``; ``train_loader.set_epoch(epoch)`` is called each epoch when present.
        config: :class:`TrainConfig` or a dict for :meth:`TrainConfig.from_dict`.
        workdir: where ``checkpoint.pt``, ``checkpoint.prev.pt``, ``log.csv`` and
            ``model.pt`` live; a checkpoint found there is resumed automatically.
        report_factor: internal -> reported unit factor (1000 for eV -> meV).
        report_units: reported unit of ``y`` (str, e.g. ``"meV"``) or the full ``units``
            dict of ``metrics.json``; default meV.
        log: receives one line per epoch and notices (resume, corrupt checkpoints).
        on_epoch_end: called with the epoch number after its checkpoint and log row are on
            disk (hook for tests and schedulers outside the trainer).
        run_id: what identifies the run (``fusion.train.rundir.run_hashes``: run spec and
            dataset cache SHA-256), stored in every checkpoint; a checkpoint carrying another
            ``run_id`` is refused (``RuntimeError`` naming both) instead of resumed.

    Returns:
        ``{"test", "val", "train", "inference", "peak_memory_mb", "units"}`` as in
        ``metrics.json`` (errors in reported units, times in s, memory in MB).

    Raises:
        TrainingDivergedError: a non-finite loss, gradient norm or validation error; the
            last good checkpoint is left untouched.
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig or dict, got {type(config).__name__}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    units = _units(report_units)
    device = resolve_device(config.device)
    check_amp_device(config, device)
    if device.type == "cuda":
        # Deterministic cuBLAS (effective when CUDA was not initialised before this call).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if len(train_loader) == 0:
        raise ValueError("train_loader is empty")
    with _torch_settings(config):
        return _train(
            model,
            train_loader,
            val_loader,
            test_loader,
            config,
            workdir,
            float(report_factor),
            units,
            log,
            on_epoch_end,
            device,
            run_id,
        )


def _train(
    model: nn.Module,
    train_loader,
    val_loader,
    test_loader,
    config: TrainConfig,
    workdir: Path,
    report_factor: float,
    units: dict,
    log: Callable[[str], None],
    on_epoch_end: Callable[[int], None] | None,
    device: torch.device,
    run_id: dict | None = None,
) -> dict:
    dtype = config.torch_dtype
    wall_start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model.to(device=device, dtype=dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    optimizer = torch.optim.Adam(
        params,
        lr=config.lr,
        weight_decay=config.weight_decay,
        amsgrad=config.optimizer == "amsgrad",
    )
    schedule = LRSchedule(config)
    ema = EMA(params, config.ema_decay) if config.ema else None
    # Mixed precision (CUDA only, checked in train()): autocast, plus loss scaling for fp16.
    amp_dtype = AMP_DTYPES[config.amp_dtype]
    scaler = (
        torch.amp.GradScaler("cuda") if config.amp and amp_dtype == torch.float16 else None
    )

    def autocast():
        if not config.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=amp_dtype)

    epoch_done = 0
    best_val = math.inf
    best_epoch = 0
    best_state: dict | None = None
    early_stop_counter = 0
    stopped_early = False
    rows: list[dict] = []
    seconds_total = 0.0
    n_train = 0

    ckpt, ckpt_path = load_latest_checkpoint(workdir, log)
    if ckpt is not None and run_id is not None and ckpt.get("run_id", run_id) != run_id:
        raise RuntimeError(
            f"checkpoint {ckpt_path} belongs to another run ({ckpt['run_id']}; this run is "
            f"{run_id}); not resumed: use another workdir or move it aside"
        )
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            schedule.load_state_dict(ckpt["schedule"])
            if ema is not None:
                if ckpt["ema"] is None:
                    raise ValueError("checkpoint was written without EMA but config.ema is on")
                ema.load_state_dict(ckpt["ema"])
            if scaler is not None and ckpt.get("amp_scaler"):
                scaler.load_state_dict(ckpt["amp_scaler"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise RuntimeError(
                f"checkpoint {ckpt_path} does not fit this model/config ({err}); use another "
                "workdir or remove it"
            ) from err
        restore_rng_state(ckpt["rng"])
        epoch_done = ckpt["epoch"]
        best_val = float(ckpt["best_val"])
        best_epoch = int(ckpt["best_epoch"])
        best_state = ckpt["best_state"]
        early_stop_counter = int(ckpt["early_stop_counter"])
        stopped_early = bool(ckpt["stopped_early"])
        rows = [r for r in ckpt["log_rows"] if r["epoch"] <= epoch_done]
        seconds_total = float(ckpt["seconds_total"])
        n_train = int(ckpt["n_train_structures"])
        changed = sorted(
            k
            for k, v in ckpt["config"].items()
            if k not in _RESUME_NEUTRAL and getattr(config, k, None) != v
        )
        log(f"resuming from {ckpt_path} after epoch {epoch_done} of {config.epochs}")
        if changed:
            log(f"warning: config differs from the checkpoint's in {changed}")
    else:
        _seed_everything(config.seed)
    # log.csv always agrees with the checkpoint: rows of epochs it does not cover are dropped.
    log_path = workdir / "log.csv"
    atomic_write_text(log_path, _log_csv_text(rows))

    epoch_seconds: list[float] = []
    ckpt_file = workdir / CHECKPOINT_NAME
    epoch = epoch_done
    while epoch < config.epochs and not stopped_early:
        epoch += 1
        t0 = time.perf_counter()
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        lr = schedule.lr_for_epoch(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        loss_sum, n_seen = 0.0, 0
        batches = _progress(train_loader, len(train_loader), f"epoch {epoch}", config.progress)
        for i, raw in enumerate(batches, start=1):
            if config.scheduler == "cosine-batch":
                for group in optimizer.param_groups:
                    group["lr"] = schedule.lr_for_step(epoch, i, len(train_loader))
            batch = to_device(raw, device, dtype)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                out = model(batch, compute_forces=wants_forces(batch, config.forces_weight))
                loss, _ = compute_loss(
                    out,
                    batch,
                    energy_weight=config.energy_weight,
                    forces_weight=config.forces_weight,
                    kind=config.loss,
                    target_scale=config.target_scale,
                    huber_delta=config.huber_delta,
                )
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDivergedError(epoch, i, value, _existing(ckpt_file))
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.grad_clip is not None:
                norm = float(torch.nn.utils.clip_grad_norm_(params, config.grad_clip))
                # With fp16 loss scaling an overflow is expected now and then: the scaler
                # skips that step and lowers the scale, so it is not a divergence.
                if not math.isfinite(norm) and scaler is None:
                    raise TrainingDivergedError(
                        epoch, f"{i} (gradient norm)", norm, _existing(ckpt_file)
                    )
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            if ema is not None:
                ema.update()
            nb = int(batch["y"].shape[0])
            loss_sum += value * nb
            n_seen += nb
        n_train = n_seen
        train_loss = loss_sum / n_seen

        val = None
        if epoch % config.eval_every == 0 or epoch == config.epochs:
            with ema.applied() if ema is not None else contextlib.nullcontext():
                val = evaluate(
                    model, val_loader, device=device, dtype=dtype, report_factor=report_factor
                )
                monitored = val[config.monitor]
                if monitored is None:
                    raise ValueError(
                        f"TrainConfig.monitor={config.monitor!r} but the validation batches "
                        "have no forces (or the model returns none)"
                    )
                if not math.isfinite(monitored):
                    raise TrainingDivergedError(
                        epoch, "validation", monitored, _existing(ckpt_file)
                    )
                if monitored < best_val:
                    best_val, best_epoch = monitored, epoch
                    best_state = _clone_state(model)
                    early_stop_counter = 0
                else:
                    early_stop_counter += 1
            schedule.step(monitored)
            if config.patience is not None and early_stop_counter >= config.patience:
                stopped_early = True

        seconds = time.perf_counter() - t0
        epoch_seconds.append(seconds)
        seconds_total += seconds
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_loss,
            "val_mae": val["mae"] if val else None,
            "val_rmse": val["rmse"] if val else None,
            "val_forces_mae": val["forces_mae"] if val else None,
            "seconds": seconds,
        }
        rows.append(row)
        save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "best_val": best_val,
                "best_epoch": best_epoch,
                "best_state": best_state,
                "rng": capture_rng_state(),
                "early_stop_counter": early_stop_counter,
                "stopped_early": stopped_early,
                "log_rows": rows,
                "config": config.to_dict(),
                "seconds_total": seconds_total,
                "n_train_structures": n_train,
                "amp_scaler": scaler.state_dict() if scaler is not None else None,
                "run_id": run_id,
            },
            workdir,
        )
        _append_log_row(log_path, row)
        val_text = f"{val['mae']:.4g} {units['y']}" if val else "-"
        log(
            f"epoch {epoch}/{config.epochs}  train loss {train_loss:.5g}  val MAE {val_text}  "
            f"lr {lr:.3g}  {seconds:.1f} s"
        )
        if stopped_early:
            log(
                f"early stopping after epoch {epoch}: no validation improvement in "
                f"{early_stop_counter} validations (best epoch {best_epoch})"
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch)

    if best_state is None:  # defensive: every run validates at its last epoch
        with ema.applied() if ema is not None else contextlib.nullcontext():
            best_state = _clone_state(model)
        best_epoch = epoch
    model.load_state_dict(best_state)
    atomic_torch_save(best_state, workdir / "model.pt")

    val = evaluate(model, val_loader, device=device, dtype=dtype, report_factor=report_factor)
    test = evaluate(model, test_loader, device=device, dtype=dtype, report_factor=report_factor)
    val.pop("seconds")
    test_seconds = test.pop("seconds")
    epochs_run = len(rows)
    if epoch_seconds:
        per_epoch = sum(epoch_seconds) / len(epoch_seconds)
    else:
        per_epoch = seconds_total / epochs_run if epochs_run else 0.0
    return {
        "units": units,
        "val": val,
        "test": test,
        "train": {
            "n_structures": n_train,
            "epochs": epochs_run,
            "best_epoch": best_epoch,
            "seconds_per_epoch": per_epoch,
            # epochs of earlier (interrupted) processes + all of this process's time
            "wall_seconds": seconds_total - sum(epoch_seconds) + time.perf_counter() - wall_start,
            "stopped_early": stopped_early,
        },
        "inference": {"structures_per_second": test["n_structures"] / max(test_seconds, 1e-12)},
        "peak_memory_mb": peak_memory_mb(device),
    }


def _existing(path: Path) -> str | None:
    return str(path) if path.exists() else None
