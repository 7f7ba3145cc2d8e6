"""An ASE calculator for any trained model of the suite (single- or multi-state).

:class:`FusionCalculator` wraps a module with the suite's interface
``forward(batch, compute_forces=True) -> {"energy", "forces"}`` (``docs/architecture.md``):

- single-state models return ``energy`` [B] (eV) and ``forces`` [A, 3] (eV/Å);
- multi-state models return ``energy`` [B, S] and ``forces`` [A, S, 3] (one column per
  electronic state, S0 first).

ASE properties: ``energy`` (eV) and ``forces`` (eV/Å) of the *active* state
``calc.state`` (0 for single-state models), plus ``energies`` [S] and ``state_forces``
[S, n, 3] for all states. Changing ``state`` switches the reported surface without
re-evaluating the model.

The neighbour graph is built with :class:`fusion.data.graphs.GraphLoader` (same radius
graph, one-hot order and dtype as in training). Build the calculator either from a module
(``FusionCalculator(module, elements, r_max)``) or from a training run directory with
:meth:`FusionCalculator.from_run_dir`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from fusion.data.graphs import GraphLoader
from fusion.data.structures import Structures

__all__ = ["FusionCalculator", "MODEL_STATS_FILE", "load_run_model"]

# Optional file in a run directory with the ModelStats the model was built with (JSON:
# elements, atomic_energies [eV], avg_num_neighbors, scale, shift). When present the dataset
# is not needed to rebuild the model; otherwise the stats are recomputed from the run's
# training split exactly as fusion.experiment does.
MODEL_STATS_FILE = "model_stats.json"


def _stats_from_file(path: Path):
    from fusion.models.registry import ModelStats

    try:
        d = json.loads(path.read_text())
        return ModelStats(
            elements=tuple(int(z) for z in d["elements"]),
            atomic_energies=np.asarray(d["atomic_energies"], dtype=np.float64),
            avg_num_neighbors=float(d["avg_num_neighbors"]),
            scale=float(d.get("scale", 1.0)),
            shift=float(d.get("shift", 0.0)),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{path}: not a valid model-stats file ({type(err).__name__}: {err}); expected JSON "
            "with elements, atomic_energies, avg_num_neighbors, scale, shift"
        ) from err


def load_run_model(run_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                   weights: str = "model.pt"):
    """Rebuild the trained module of a run directory.

    ``run_dir``: ``results/train/<dataset>/<model>/<variant>/seed-<n>`` with ``metrics.json``
    (its ``hyperparameters`` is the run spec) and ``weights`` (a state dict, as the trainer
    writes ``model.pt``). ``cache_dir`` overrides the spec's dataset cache directory (used only
    when ``model_stats.json`` is absent). Returns ``(module, elements, r_max, dtype)``.
    """
    from fusion.experiment import RunSpec, _load_split, model_stats
    from fusion.models.registry import build_model, graph_cutoff

    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        raise FileNotFoundError(f"{metrics_path} not found: is {run_dir} a training run "
                                "directory (results/train/<dataset>/<model>/<variant>/seed-<n>)?")
    try:
        metrics = json.loads(metrics_path.read_text())
        spec = RunSpec.from_dict(metrics["hyperparameters"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{metrics_path}: cannot read the run spec from 'hyperparameters' "
                         f"({type(err).__name__}: {err})") from err
    if cache_dir is not None:
        spec.cache_dir = str(cache_dir)
    dtype = torch.float64 if spec.training.get("dtype", "float32") == "float64" else torch.float32
    r_max = graph_cutoff(spec.model, spec.variant, spec.hparams)
    stats_path = run_dir / MODEL_STATS_FILE
    if stats_path.exists():
        stats = _stats_from_file(stats_path)
    else:
        structures, splits = _load_split(spec)
        stats = model_stats(structures, splits["train"], r_max)
    weights_path = run_dir / weights
    if not weights_path.exists():
        raise FileNotFoundError(f"{weights_path} not found (the trainer writes model.pt when a "
                                "run finishes)")
    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        module = build_model(spec.model, spec.variant, spec.hparams, stats)
    finally:
        torch.set_default_dtype(old_dtype)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{weights_path} does not fit {spec.model}/{spec.variant} built from "
                         f"{metrics_path}: {err}") from err
    module.eval()
    return module, stats.elements, r_max, dtype


class FusionCalculator(Calculator):
    """ASE calculator around a suite model (see module docstring).

    ``module``: the model; ``elements``: sorted atomic numbers in the model's one-hot order
    (``ModelStats.elements``); ``r_max``: graph cutoff (Å); ``dtype``: float dtype of the
    model's parameters; ``state``: active electronic state (0 = S0).
    """

    implemented_properties = ["energy", "forces", "energies", "state_forces"]

    def __init__(self, module: torch.nn.Module, elements: Sequence[int], r_max: float,
                 dtype: torch.dtype | None = None, state: int = 0, device: str = "cpu",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.module = module.eval()
        self.elements = [int(z) for z in elements]
        if self.elements != sorted(set(self.elements)):
            raise ValueError(f"elements must be sorted distinct atomic numbers, got {elements}")
        self.r_max = float(r_max)
        if dtype is None:
            dtype = next((p.dtype for p in module.parameters()), torch.get_default_dtype())
        self.dtype = dtype
        self.device = torch.device(device)
        self.module.to(self.device)
        self.n_states: int | None = None
        self._state = int(state)

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                     state: int = 0, dtype: torch.dtype | None = None,
                     **kwargs) -> FusionCalculator:
        """Calculator for the trained model in ``run_dir`` (see :func:`load_run_model`).

        ``dtype``: evaluate in this precision (default: the run's training dtype). Evaluating a
        float32-trained model in float64 keeps its weights (cast exactly) and removes float32
        rounding of total energies (about 1 meV at 10^4 eV), which matters for energy
        conservation and for gap second differences in surface hopping.
        """
        module, elements, r_max, run_dtype = load_run_model(run_dir, cache_dir)
        if dtype is not None and dtype != run_dtype:
            module = module.to(dtype)
        return cls(module, elements, r_max, dtype=dtype or run_dtype, state=state, **kwargs)

    @property
    def state(self) -> int:
        """Active electronic state whose energy/forces ASE sees (0 = ground state)."""
        return self._state

    @state.setter
    def state(self, value: int) -> None:
        value = int(value)
        if value < 0 or (self.n_states is not None and value >= self.n_states):
            raise ValueError(f"state {value} out of range: the model has {self.n_states} state(s)")
        self._state = value
        if "energies" in self.results:
            self._select_state()

    def _select_state(self) -> None:
        self.results["energy"] = float(self.results["energies"][self._state])
        self.results["free_energy"] = self.results["energy"]
        self.results["forces"] = self.results["state_forces"][self._state].copy()

    def _batch(self, atoms) -> dict[str, torch.Tensor]:
        z = np.asarray(atoms.numbers, dtype=np.int64)
        structures = Structures(z=z, pos=np.asarray(atoms.positions, dtype=np.float64),
                                n_atoms=np.array([len(z)]), y=np.zeros(1), forces=None,
                                meta={"name": "FusionCalculator input"})
        loader = GraphLoader(structures, np.array([0]), batch_size=1, r_max=self.r_max,
                             elements=self.elements, dtype=self.dtype)
        return {k: v.to(self.device) for k, v in loader.collate(np.array([0])).items()}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        batch = self._batch(self.atoms)
        with torch.enable_grad():
            out = self.module(batch, compute_forces=True)
        energy, forces = out["energy"], out.get("forces")
        if forces is None:
            raise RuntimeError("the model returned no forces (forward(batch, compute_forces=True)"
                               " must return 'forces')")
        energy = energy.detach().cpu().double().numpy()
        forces = forces.detach().cpu().double().numpy()
        n = len(self.atoms)
        if energy.shape == (1,) and forces.shape == (n, 3):  # single state
            energies, state_forces = energy, forces[None]
        elif energy.ndim == 2 and energy.shape[0] == 1 and forces.shape == (n, energy.shape[1],
                                                                            3):
            energies, state_forces = energy[0], forces.transpose(1, 0, 2)  # [S], [S, n, 3]
        else:
            raise RuntimeError(f"model output shapes energy {list(energy.shape)}, forces "
                               f"{list(forces.shape)} are neither single-state ([1], [{n}, 3]) "
                               f"nor multi-state ([1, S], [{n}, S, 3])")
        self.n_states = int(energies.shape[0])
        if self._state >= self.n_states:
            raise ValueError(f"active state {self._state} but the model has {self.n_states}")
        self.results["energies"] = energies.copy()  # [S] eV
        self.results["state_forces"] = state_forces.copy()  # [S, n, 3] eV/Å
        self._select_state()
