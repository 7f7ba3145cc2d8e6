"""Tiny learnable toy problem for the trainer tests (not a test module itself).

Structures of 3-5 atoms of H/C/O with a known energy (per-element constants plus a
pair term ``c[zi, zj] * exp(-r)``, eV, r in Å) and its exact forces. Batches follow
``docs/architecture.md``. The toy model is not equivariant: a per-atom MLP on the one-hot
element plus a learned pair term, forces by autograd on positions.

Loaded by path (``load()``), also from the subprocesses of the resume tests.
"""

from __future__ import annotations

import importlib.util
import math
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

ELEMENTS = (1, 6, 8)
HERE = Path(__file__).resolve()


def load():
    """Import this file as a module (tests run with --import-mode=importlib)."""
    name = "fusion_train_toy_problem"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _true_energy(z_idx: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    e0 = torch.tensor([-0.5, -1.0, -2.0], dtype=torch.float64)
    c = torch.tensor([[0.3, 0.5, 0.2], [0.5, 0.8, -0.4], [0.2, -0.4, 0.6]], dtype=torch.float64)
    n = len(z_idx)
    i, j = torch.triu_indices(n, n, offset=1)
    r = (pos[i] - pos[j]).norm(dim=-1)
    return e0[z_idx].sum() + (c[z_idx[i], z_idx[j]] * torch.exp(-r)).sum()


def make_structures(n: int, seed: int) -> list[dict]:
    """``n`` random structures with energy ``y`` (eV) and forces (eV/Å)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        n_atoms = int(torch.randint(3, 6, (1,), generator=g))
        z_idx = torch.randint(0, len(ELEMENTS), (n_atoms,), generator=g)
        pos = (torch.rand(n_atoms, 3, generator=g, dtype=torch.float64) * 3.0).requires_grad_()
        energy = _true_energy(z_idx, pos)
        (grad,) = torch.autograd.grad(energy, pos)
        out.append(
            {"z_idx": z_idx, "pos": pos.detach(), "y": energy.detach(), "forces": -grad.detach()}
        )
    return out


def collate(structs: list[dict], with_forces: bool) -> dict:
    """Batch dict in the mace-torch layout of docs/architecture.md (all pairs as edges)."""
    n_atoms = torch.tensor([len(s["z_idx"]) for s in structs])
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(n_atoms, 0)])
    z_idx = torch.cat([s["z_idx"] for s in structs])
    senders, receivers = [], []
    for k, s in enumerate(structs):
        m = len(s["z_idx"])
        i, j = torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")
        mask = i != j
        senders.append(i[mask] + ptr[k])
        receivers.append(j[mask] + ptr[k])
    edge_index = torch.stack([torch.cat(senders), torch.cat(receivers)])
    n_b, n_e = len(structs), edge_index.shape[1]
    y = torch.stack([s["y"] for s in structs])
    batch = {
        "positions": torch.cat([s["pos"] for s in structs]),
        "node_attrs": nn.functional.one_hot(z_idx, len(ELEMENTS)).to(torch.float64),
        "atomic_numbers": torch.tensor(ELEMENTS)[z_idx],
        "edge_index": edge_index,
        "shifts": torch.zeros(n_e, 3, dtype=torch.float64),
        "unit_shifts": torch.zeros(n_e, 3, dtype=torch.float64),
        "cell": torch.zeros(n_b * 3, 3, dtype=torch.float64),
        "batch": torch.repeat_interleave(torch.arange(n_b), n_atoms),
        "ptr": ptr,
        "head": torch.zeros(n_b, dtype=torch.long),
        "weight": torch.ones(n_b, dtype=torch.float64),
        "energy_weight": torch.ones(n_b, dtype=torch.float64),
        "forces_weight": torch.ones(n_b, dtype=torch.float64),
        "y": y,
        "energy": y,
        "n_atoms": n_atoms,
    }
    if with_forces:
        batch["forces"] = torch.cat([s["forces"] for s in structs])
    return batch


class ToyLoader:
    """Re-iterable loader; ``set_epoch`` fixes the shuffle order of that epoch."""

    def __init__(self, structs, batch_size, shuffle, seed=0, with_forces=False, hook=None):
        self.structs = structs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.with_forces = with_forces
        self.epoch = 0
        self.hook = hook  # hook(epoch, batch_index, batch) -> batch, for fault injection

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.structs) / self.batch_size)

    def __iter__(self):
        order = list(range(len(self.structs)))
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(len(order), generator=g).tolist()
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            batch = collate([self.structs[i] for i in idx], self.with_forces)
            if self.hook is not None:
                batch = self.hook(self.epoch, b + 1, batch)
            yield batch


class ToyModel(nn.Module):
    """Per-atom MLP on the one-hot element + learned pair term; forces by autograd (eV/Å)."""

    def __init__(self, n_elements: int = len(ELEMENTS), hidden: int = 16, dropout: float = 0.0):
        super().__init__()
        self.atom = nn.Sequential(nn.Linear(n_elements, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.pair = nn.Sequential(
            nn.Linear(2 * n_elements, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

    def forward(self, batch: dict, compute_forces: bool = False) -> dict:
        pos = batch["positions"]
        if compute_forces:
            pos.requires_grad_(True)
        x = batch["node_attrs"]
        s, r = batch["edge_index"]
        dist = (pos[r] - pos[s]).norm(dim=-1)
        coef = self.pair(torch.cat([x[s], x[r]], dim=-1)).squeeze(-1)
        e_atom = self.atom(x).squeeze(-1)
        e_atom = e_atom.index_add(0, r, 0.5 * coef * torch.exp(-dist))
        n_b = batch["ptr"].shape[0] - 1
        energy = e_atom.new_zeros(n_b).index_add(0, batch["batch"], e_atom)
        forces = None
        if compute_forces:
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=self.training)
            forces = -grad
        return {"energy": energy, "forces": forces}


class EnergyOnlyModel(ToyModel):
    """Never returns forces (like a model without a force head)."""

    def forward(self, batch: dict, compute_forces: bool = False) -> dict:
        return {"energy": super().forward(batch, False)["energy"], "forces": None}


def loaders(with_forces=False, seed=0, n_train=32, batch_size=8, train_hook=None):
    """Train/val/test loaders over fixed synthetic splits."""
    structs = make_structures(n_train + 32, seed=1234)
    train = ToyLoader(structs[:n_train], batch_size, True, seed, with_forces, train_hook)
    val = ToyLoader(structs[n_train : n_train + 16], 16, False, seed, with_forces)
    test = ToyLoader(structs[n_train + 16 :], 16, False, seed, with_forces)
    return train, val, test


BASE_CONFIG = {
    "epochs": 6,
    "lr": 0.01,
    "optimizer": "amsgrad",
    "scheduler": "cosine",
    "ema": True,
    "ema_decay": 0.9,
    "dtype": "float64",
    "seed": 0,
    "threads": 1,
    "progress": False,
    "device": "cpu",
}


def run(workdir, config=None, with_forces=False, model_cls=ToyModel, train_hook=None, **kw):
    """Build the toy model (seeded) and train it in ``workdir``; returns the metrics dict."""
    from fusion.train.trainer import train

    cfg = {**BASE_CONFIG, **(config or {})}
    torch.manual_seed(cfg["seed"])
    model = model_cls(dropout=0.1)
    tr, va, te = loaders(with_forces=with_forces, train_hook=train_hook)
    return train(model, tr, va, te, cfg, workdir, log=kw.pop("log", lambda s: None), **kw)


def run_and_kill(workdir, after_epoch=None, mid_epoch=None, config=None):
    """Entry point of the resume tests' subprocess: train, SIGKILL self at a given point.

    ``after_epoch=k``: right after epoch k's checkpoint is written.
    ``mid_epoch=(k, b)``: while training batch b of epoch k (its checkpoint not written).
    """

    def kill():
        os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(epoch):
        if epoch == after_epoch:
            kill()

    def hook(epoch, b, batch):
        if mid_epoch is not None and (epoch, b) == tuple(mid_epoch):
            kill()
        return batch

    run(workdir, config=config, train_hook=hook, on_epoch_end=on_epoch_end)
    raise SystemExit("not killed")
