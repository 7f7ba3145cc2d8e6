"""Stilbene surface-hopping dynamics as a workflow step: spec, run, config helpers.

``fusion dynamics --spec JSON`` (rule ``dynamics`` in ``workflow/rules/dynamics.smk``) calls
:func:`run_dynamics` with a :class:`DynamicsSpec`: it loads a trained multi-state model from
its run directory (:meth:`~fusion.dynamics.calculator.FusionCalculator.from_run_dir`), starts
``n_trajectories`` trajectories on S1 from each Franck–Condon start (cis, trans:
:func:`~fusion.dynamics.hopping.stilbene_starts`), runs
:func:`~fusion.dynamics.hopping.run_ensemble` and
:func:`~fusion.dynamics.analysis.analyse_ensemble`, and adds to ``analysis.json`` what the
combined table and figures (:mod:`fusion.dynamics.tables`, ``fusion dynamics-table``) need
(the run it came from, the spec, numbers per start and the time series). The config helpers
at the end (:func:`dynamics_settings`, :func:`dynamics_targets`, ...) are what
``workflow/rules/dynamics.smk`` builds its jobs from.

Units: times fs, temperatures K, torsion angles degrees, energies eV (as in
:mod:`fusion.dynamics.hopping`).

Files in ``out_dir`` (``results/dynamics/<dataset>/<model>/<variant>/seed-<n>/``):
``trajectories.csv``, ``hops.csv``, ``summary.csv`` (the ensemble), ``ensemble_spec.json``
(the spec the ensemble CSVs were made with, written after them), ``analysis.json``,
``population.csv``, ``branching.csv``, ``torsion.{png,svg}``, ``population.{png,svg}``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

__all__ = [
    "STARTS",
    "DynamicsSpec",
    "run_dynamics",
    "per_start_numbers",
]

STARTS = ("cis", "trans")  # Franck–Condon starts known to stilbene_starts, in seeding order
ENSEMBLE_SPEC_FILE = "ensemble_spec.json"
ENSEMBLE_FILES = ("trajectories.csv", "hops.csv", "summary.csv")
TRANS_THRESHOLD_DEG = 90.0  # final torsion >= this: trans (as analyse_ensemble)
SAMPLINGS = ("normal-modes", "cartesian")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class DynamicsSpec:
    """What one dynamics job runs (JSON keys = field names).

    ``run_dir``: training run directory with ``metrics.json`` and ``model.pt`` of a
    multi-state model; ``out_dir``: where the ensemble and its analysis go; ``starts``:
    Franck–Condon starts, a subset of ``["cis", "trans"]``; ``n_trajectories`` per start;
    ``n_steps`` velocity-Verlet steps of ``dt_fs`` (fs); ``temperature_k`` (K) of the initial
    displacements and velocities; ``seed`` of the ensemble (initial conditions, hops, and the
    rdkit geometry of the starts); ``record_every``: keep every n-th step; ``threads``: torch
    CPU threads; ``cache_dir``: dataset caches, needed only when the run directory has no
    ``model_stats.json``; ``sampling``: initial conditions, ``"normal-modes"`` (classical
    thermal sample in the GFN2-xTB normal modes of the cis/trans S0 minima,
    :func:`~fusion.dynamics.hopping.stilbene_normal_mode_starts`; the trajectories start
    around those minima) or ``"cartesian"`` (the rdkit/MMFF geometries with independent
    Cartesian kicks sized for a 1000 cm^-1 oscillator: far hotter than 300 K, kept for
    comparison).
    """

    run_dir: str
    out_dir: str
    starts: list[str] = field(default_factory=lambda: list(STARTS))
    n_trajectories: int = 8
    n_steps: int = 400
    dt_fs: float = 0.25
    temperature_k: float = 300.0
    seed: int = 0
    record_every: int = 5
    threads: int = 1
    cache_dir: str | None = None
    sampling: str = "normal-modes"

    # Fields that change the numbers (threads, out_dir and cache_dir do not).
    SCIENCE_KEYS = ("run_dir", "starts", "n_trajectories", "n_steps", "dt_fs", "temperature_k",
                    "seed", "record_every", "sampling")

    @classmethod
    def from_dict(cls, d: dict) -> DynamicsSpec:
        if not isinstance(d, dict):
            raise ValueError(f"dynamics spec must be a JSON object, got {type(d).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"dynamics spec has unknown key(s) {unknown}; valid: {valid}")
        for key in ("run_dir", "out_dir"):
            if key not in d:
                raise ValueError(f"dynamics spec is missing required key {key!r} (a path)")
        checks: dict[str, tuple[Callable, str]] = {
            "run_dir": (lambda v: isinstance(v, str) and v != "", "a non-empty path"),
            "out_dir": (lambda v: isinstance(v, str) and v != "", "a non-empty path"),
            "cache_dir": (lambda v: v is None or isinstance(v, str), "a path or null"),
            "starts": (lambda v: isinstance(v, list) and len(v) > 0 and len(set(v)) == len(v)
                       and all(s in STARTS for s in v),
                       f"a non-empty list of distinct names from {list(STARTS)}"),
            "n_trajectories": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "n_steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "dt_fs": (lambda v: _is_number(v) and math.isfinite(v) and v > 0,
                      "a number > 0 (fs)"),
            "temperature_k": (lambda v: _is_number(v) and math.isfinite(v) and v > 0,
                              "a number > 0 (K)"),
            "seed": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
            "record_every": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "threads": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
            "sampling": (lambda v: v in SAMPLINGS, f"one of {list(SAMPLINGS)}"),
        }
        for key, value in d.items():
            ok, expected = checks[key]
            if not ok(value):
                raise ValueError(f"dynamics spec key {key!r} should be {expected}, got {value!r}")
        spec = cls(**d)
        # Canonical order: a start's random stream depends on its position (run_ensemble).
        spec.starts = [s for s in STARTS if s in spec.starts]
        spec.dt_fs, spec.temperature_k = float(spec.dt_fs), float(spec.temperature_k)
        return spec

    @classmethod
    def from_json(cls, text: str) -> DynamicsSpec:
        """From JSON text, or ``@path`` to a JSON file."""
        if text.startswith("@"):
            path = Path(text[1:])
            if not path.exists():
                raise FileNotFoundError(f"dynamics spec file {path} not found")
            text = path.read_text()
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"dynamics spec is not valid JSON: {err}") from err
        return cls.from_dict(d)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def science(self) -> dict:
        """The fields that change the results (compared on resume)."""
        return {key: getattr(self, key) for key in self.SCIENCE_KEYS}


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing or unreadable."""
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _run_identity(run_dir: Path) -> dict:
    """dataset, model, variant and training seed of a run directory (from metrics.json)."""
    metrics_path = run_dir / "metrics.json"
    metrics = _read_json(metrics_path)
    if metrics is None:
        raise FileNotFoundError(f"{metrics_path} not found or not JSON: is {run_dir} a training "
                                "run directory (results/train/<dataset>/<model>/<variant>/"
                                "seed-<n>)?")
    spec = metrics.get("hyperparameters", {})
    identity = {key: metrics.get(key, spec.get(key)) for key in
                ("dataset", "model", "variant", "seed")}
    missing = [key for key, value in identity.items() if value is None]
    if missing:
        raise ValueError(f"{metrics_path}: no {missing} (expected the keys dataset, model, "
                         "variant, seed that fusion train writes)")
    return identity


def per_start_numbers(summary, initial_state: int = 1,
                      trans_threshold_deg: float = TRANS_THRESHOLD_DEG,
                      hops=None) -> list[dict]:
    """Lifetime, hops and branching of each start in a ``summary.csv`` table (pandas).

    Per start: ``n_states``; ``n_trajectories``; ``n_exits`` (trajectories that left
    ``initial_state``) and ``n_exits_to`` (``{"S0": k}``, with three states
    ``{"S0": k, "S2": k}``: where those first exits went); ``final_states`` (``{"S0": k,
    "S1": k, ...}``: trajectories ending on each state);
    ``lifetime_fs`` and ``lifetime_stderr_fs`` (exponential maximum likelihood with censoring,
    :func:`~fusion.dynamics.analysis.exponential_lifetime`; None without exits);
    ``observed_fs`` (total time on the initial state) and ``lifetime_lower95_fs`` (one-sided
    95 % lower bound, :func:`~fusion.dynamics.analysis.lifetime_lower_bound`); ``n_hops``
    (accepted hops, all directions) and, given the ``hops.csv`` table ``hops``,
    ``hops_by_transition`` (accepted hops per ``"S<from>->S<to>"``, e.g. ``{"S1->S0": 2,
    "S1->S2": 1, "S2->S1": 1}``); ``n_frustrated``; ``n_on_s0``, ``n_trans`` (final torsion
    >= ``trans_threshold_deg``), ``fraction_trans`` and its 95 % Wilson interval (None when no
    trajectory ended on S0).
    """
    from fusion.dynamics.analysis import ensemble_numbers

    rows = []
    for start, group in summary.groupby("start", sort=False):
        row = {"start": str(start), **ensemble_numbers(group, trans_threshold_deg,
                                                       initial_state=initial_state)}
        row.pop("lifetime_note", None)
        row.update(n_hops=int(group["n_hops"].sum()), n_frustrated=int(group["n_frustrated"].sum()))
        if hops is not None:
            accepted = hops[(hops["start"] == start) & (hops["outcome"] == "hop")]
            pairs = accepted.groupby(["from_state", "to_state"], sort=True).size()
            row["hops_by_transition"] = {f"S{int(a)}->S{int(b)}": int(n)
                                         for (a, b), n in pairs.items()}
        rows.append(row)
    return rows


def _series(trajectories, initial_state: int = 1, n_states: int = 2) -> dict:
    """Per start: time (fs), S1 (``initial_state``) population, every state's population
    (``state_populations``: ``{"S0": [...], "S1": [...], ...}``), torsion mean and population
    std (deg) over the trajectories at each recorded time."""
    series = {}
    for start, group in trajectories.groupby("start", sort=False):
        by_time = group.groupby("time_fs")
        torsion = by_time["torsion_deg"]
        series[str(start)] = {
            "time_fs": [float(t) for t in by_time.size().index],
            "s1_population": [float(p) for p in
                              by_time["state"].apply(lambda s: (s == initial_state).mean())],
            "state_populations": {
                f"S{k}": [float(p) for p in by_time["state"].apply(lambda s, k=k: (s == k).mean())]
                for k in range(n_states)},
            "torsion_mean_deg": [float(m) for m in torsion.mean()],
            "torsion_std_deg": [float(s) for s in torsion.std(ddof=0)],
            "n_trajectories": int(group["trajectory"].nunique()),
        }
    return series


def _print_now(message: str) -> None:
    print(message, flush=True)  # progress reaches a piped log (Snakemake's tee) at once


def run_dynamics(spec: DynamicsSpec, log: Callable[[str], None] = _print_now) -> dict:
    """Run the surface-hopping ensemble of ``spec`` and analyse it; returns ``analysis.json``.

    Resuming: if ``analysis.json`` in ``out_dir`` records the same spec (the fields in
    :attr:`DynamicsSpec.SCIENCE_KEYS`) and the same ``model.pt`` (SHA-256), nothing is run.
    If the ensemble CSVs are complete for this spec (``ensemble_spec.json`` matches) but the
    analysis is missing, only the analysis is redone. A killed ensemble is **not** resumed
    trajectory by trajectory: ``run_ensemble`` writes its CSVs at the end, so it restarts from
    the first trajectory (a few minutes at demo size). Any other change (spec, weights) reruns
    everything.

    Raises ``ValueError`` if the model has one electronic state (``surface hopping needs >= 2
    states``) or the spec is bad; ``FileNotFoundError`` if the run directory is incomplete.
    """
    import torch

    from fusion.data.download import sha256_of
    from fusion.dynamics.calculator import FusionCalculator
    from fusion.dynamics.hopping import run_ensemble, stilbene_starts
    from fusion.train.checkpoint import atomic_write_text

    run_dir, out = Path(spec.run_dir), Path(spec.out_dir)
    weights = run_dir / "model.pt"
    identity = _run_identity(run_dir)
    if not weights.exists():
        raise FileNotFoundError(f"{weights} not found (the trainer writes model.pt when a run "
                                "finishes)")
    recorded = {**spec.science(), "model_sha256": sha256_of(weights)}

    previous = _read_json(out / "analysis.json")
    if previous is not None and previous.get("spec") == recorded and "per_start" in previous:
        log(f"{out / 'analysis.json'} is up to date with this spec and model: nothing to run")
        return previous

    old_threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        ensemble_done = (_read_json(out / ENSEMBLE_SPEC_FILE) == recorded
                         and all((out / name).exists() for name in ENSEMBLE_FILES))
        if ensemble_done:
            log(f"{out}: ensemble already complete for this spec; analysing it again")
        else:
            (out / ENSEMBLE_SPEC_FILE).unlink(missing_ok=True)
            # float64 whatever the training dtype: float32 total energies (~ -14,400 eV for
            # stilbene) are rounded to ~1 meV, noise in the gap's second difference.
            calculator = FusionCalculator.from_run_dir(run_dir, cache_dir=spec.cache_dir,
                                                       dtype=torch.float64)
            all_starts, torsion_atoms = stilbene_starts(spec.seed)
            starts = {name: all_starts[name] for name in spec.starts}
            samplers = None
            if spec.sampling == "normal-modes":
                from ase import Atoms

                from fusion.dynamics.hopping import (
                    normal_mode_sampler,
                    stilbene_normal_mode_starts,
                )

                modes, _ = stilbene_normal_mode_starts(spec.seed)
                starts = {name: Atoms(numbers=atoms.numbers, positions=modes[name].pos)
                          for name, atoms in starts.items()}
                samplers = {name: normal_mode_sampler(modes[name], spec.temperature_k)
                            for name in starts}
            probe = next(iter(starts.values())).copy()
            probe.calc = calculator
            probe.get_potential_energy()
            if calculator.n_states < 2:
                raise ValueError(f"surface hopping needs >= 2 states; {run_dir} was trained on "
                                 f"{calculator.n_states} (train on data labelled with several "
                                 "states, such as stilbene-tddft, or set hparams n_states)")
            total = len(starts) * spec.n_trajectories
            started = time.time()
            done = [0]

            def progress(message: str) -> None:
                done[0] += 1
                elapsed = time.time() - started
                log(f"[{done[0]}/{total}] {message} ({elapsed:.0f} s elapsed, "
                    f"~{elapsed / done[0] * (total - done[0]):.0f} s left)")

            log(f"{run_dir}: {calculator.n_states} states; {total} trajectories x "
                f"{spec.n_steps} steps of {spec.dt_fs} fs on {spec.threads} thread(s)")
            run_ensemble(lambda: calculator, starts, out, n_trajectories=spec.n_trajectories,
                         n_steps=spec.n_steps, dt_fs=spec.dt_fs,
                         temperature_k=spec.temperature_k, initial_state=1, seed=spec.seed,
                         torsion_atoms=torsion_atoms, record_every=spec.record_every,
                         log=progress, samplers=samplers)
            atomic_write_text(out / ENSEMBLE_SPEC_FILE, json.dumps(recorded, indent=1))
    finally:
        torch.set_num_threads(old_threads)

    analysis = analyse_dynamics(out, {**identity, "run_dir": str(run_dir)}, recorded)
    for row in analysis["per_start"]:
        lifetime = row.get("lifetime_fs")
        where = ", ".join(f"{n} to {s}" for s, n in (row.get("n_exits_to") or {}).items())
        log(f"{out}: start {row['start']}: {row['n_exits']}/{row['n_trajectories']} left S1"
            + (f" ({where})" if where else "") + f", {row['n_hops']} hop(s), S1 lifetime "
            + (f"{lifetime:.1f} ± {row['lifetime_stderr_fs']:.1f} fs" if lifetime is not None
               else f"> {row['lifetime_lower95_fs']:.0f} fs (95 %, no exit)")
            + f", max drift {row.get('max_drift_ev', float('nan')):.3f} eV")
    return analysis


def analyse_dynamics(out_dir: str | os.PathLike, run: dict, spec: dict) -> dict:
    """``analysis.json`` of the ensemble in ``out_dir`` (the CSVs of
    :func:`~fusion.dynamics.hopping.run_ensemble`, started on S1): what
    :func:`~fusion.dynamics.analysis.analyse_ensemble` writes, plus ``run`` (dataset, model,
    variant, seed, run_dir), ``spec``, ``per_start`` (:func:`per_start_numbers`, with the hops
    per transition) and ``series`` (:func:`_series`); written and returned."""
    import pandas as pd

    from fusion.dynamics.analysis import analyse_ensemble
    from fusion.train.checkpoint import atomic_write_text

    out = Path(out_dir)
    analysis = analyse_ensemble(out, initial_state=1, trans_threshold_deg=TRANS_THRESHOLD_DEG)
    summary = pd.read_csv(out / "summary.csv")
    trajectories = pd.read_csv(out / "trajectories.csv")
    hops = pd.read_csv(out / "hops.csv")
    analysis.update(run=run, spec=spec, per_start=per_start_numbers(summary, hops=hops),
                    series=_series(trajectories, n_states=analysis["n_states"]))
    atomic_write_text(out / "analysis.json", json.dumps(analysis, indent=1, default=float))
    return analysis


# --------------------------------------------------------------------------- Snakemake glue

# The config section ``dynamics:`` (workflow/schemas/config.schema.yaml); a config without it
# runs no dynamics. Keys left out take these values.
DYNAMICS_DEFAULTS = {
    "datasets": ["stilbene-tddft"],  # datasets whose trained multi-state runs drive dynamics
    "models": {"mace": ["baseline", "fusion"]},  # model -> variants
    "seeds": [0],  # training seeds
    "starts": list(STARTS),
    "n_trajectories": 8,  # per start
    "n_steps": 400,
    "dt_fs": 0.25,  # drift per trajectory is reported (dynamics table); 0.5 fs drifts more
    "temperature_k": 300,
    "seed": 0,  # ensemble seed
    "record_every": 5,
    "sampling": "normal-modes",  # initial conditions (DynamicsSpec.sampling)
}
DYNAMICS_TABLE_OUTPUTS = ("results/tables/dynamics.csv", "results/tables/dynamics.md")
DYNAMICS_FIGURE_STEMS = ("results/figures/dynamics_population", "results/figures/dynamics_torsion")


def dynamics_settings(config) -> dict | None:
    """``config["dynamics"]`` over :data:`DYNAMICS_DEFAULTS`, or None without the section."""
    section = config.get("dynamics")
    if section is None:
        return None
    unknown = sorted(set(section) - set(DYNAMICS_DEFAULTS))
    if unknown:
        raise ValueError(f"config: dynamics has unknown key(s) {unknown}; valid: "
                         f"{sorted(DYNAMICS_DEFAULTS)}")
    return {**DYNAMICS_DEFAULTS, **section}


def dynamics_dir(dataset: str, model: str, variant: str, seed) -> str:
    return f"results/dynamics/{dataset}/{model}/{variant}/seed-{seed}"


def dynamics_runs(config, training_runs) -> list[tuple[str, str, str, int]]:
    """(dataset, model, variant, seed) of every dynamics job; each must be a run of the
    training grid ``training_runs`` (common.smk's ``grid()``), else a ``ValueError`` naming
    it."""
    settings = dynamics_settings(config)
    if settings is None:
        return []
    trained = {(d, m, v, int(s)) for d, m, v, s in training_runs}
    runs = []
    for dataset in settings["datasets"]:
        for model, variants in settings["models"].items():
            for variant in variants:
                for seed in settings["seeds"]:
                    run = (dataset, model, variant, int(seed))
                    if run not in trained:
                        raise ValueError(
                            f"config: dynamics asks for {dataset}/{model}/{variant} seed {seed}, "
                            "which the training grid does not train; add it to datasets/models/"
                            "seeds (or dataset_overrides), or drop it from dynamics")
                    runs.append(run)
    return runs


def dynamics_spec_json(config, dataset: str, model: str, variant: str, seed,
                       cache_dir: str = "resources") -> str:
    """The ``fusion dynamics --spec`` JSON of one job (checked by :class:`DynamicsSpec`)."""
    settings = dynamics_settings(config) or dict(DYNAMICS_DEFAULTS)
    spec = {key: settings[key] for key in ("starts", "n_trajectories", "n_steps", "dt_fs",
                                           "temperature_k", "seed", "record_every",
                                           "sampling")}
    spec.update(run_dir=f"results/train/{dataset}/{model}/{variant}/seed-{seed}",
                out_dir=dynamics_dir(dataset, model, variant, seed), cache_dir=cache_dir,
                threads=int(config.get("threads", 1)))
    DynamicsSpec.from_dict(spec)  # fail at DAG build, naming the bad key
    return json.dumps(spec, sort_keys=True)


def dynamics_analysis_files(config, training_runs) -> list[str]:
    return [f"{dynamics_dir(*run)}/analysis.json" for run in dynamics_runs(config, training_runs)]


def dynamics_targets(config, training_runs) -> list[str]:
    """What rule all asks for: every job's analysis and the combined table and figures
    (nothing without a ``dynamics:`` section)."""
    analyses = dynamics_analysis_files(config, training_runs)
    if not analyses:
        return []
    return [*analyses, *DYNAMICS_TABLE_OUTPUTS,
            *(f"{stem}.png" for stem in DYNAMICS_FIGURE_STEMS)]
