"""Trajectory-driven augmentation, the dynamics side: which geometries to label, and whether
retraining on them helped (issue 20; the data side is :mod:`fusion.data.stilbene_aug`).

``fusion augment select``: the driver (a trained multi-state model of the base dataset) runs
``n_trajectories`` surface-hopping trajectories from each of cis and trans (normal-mode 300 K
starts, as ``fusion dynamics``); every ``record_every``-th force call's geometry is a
candidate. Half of the frames are the smallest-predicted-gap candidate of each trajectory
(smallest first: where hops would happen, and where the base data is thinnest), the rest are
spread evenly over the remaining candidates in time order.

``fusion augment compare``: energy, gap and force errors of the driver and of the model
retrained on ``<base>-aug`` on two frame sets neither was trained on: the base test split and
the held-out dynamics frames. Written as CSV and markdown.

Units: positions Å, energies eV, errors meV and meV/Å, times fs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["select_frames", "pick_frames", "compare_models"]


def _print(message: str) -> None:
    print(message, flush=True)


def pick_frames(gaps: np.ndarray, trajectory: np.ndarray, n_frames: int) -> list[tuple[int, str]]:
    """Indices into the candidates (in time order within each trajectory) and why each was
    picked: ``gap`` (the smallest-gap candidate of a trajectory, smallest first, at most
    ``n_frames // 2``), then ``time`` (evenly spaced over the rest)."""
    gaps, trajectory = np.asarray(gaps, dtype=np.float64), np.asarray(trajectory)
    if n_frames < 1 or n_frames > len(gaps):
        raise ValueError(f"cannot pick {n_frames} frames from {len(gaps)} candidates")
    minima = [int(np.flatnonzero(trajectory == t)[np.argmin(gaps[trajectory == t])])
              for t in np.unique(trajectory)]
    minima.sort(key=lambda k: gaps[k])
    picked = [(k, "gap") for k in minima[: n_frames // 2]]
    chosen = {k for k, _ in picked}
    rest = [k for k in range(len(gaps)) if k not in chosen]
    spread = np.linspace(0, len(rest) - 1, n_frames - len(picked)).round().astype(int)
    picked += [(rest[i], "time") for i in spread]
    return picked


def _recording(surfaces, rows: list, every: int, dt_fs: float, labels: dict):
    """``surfaces`` that also appends every ``every``-th geometry it is asked for (with its
    predicted energies and ``labels``) to ``rows``; and a function giving the call count."""
    calls = [0]

    def recording(x: np.ndarray):
        energies, forces = surfaces(x)
        if calls[0] % every == 0:
            rows.append({"pos": np.array(x), "predicted": energies.copy(),
                         "time_fs": calls[0] * dt_fs, **labels})
        calls[0] += 1
        return energies, forces

    return recording, lambda: calls[0]


def select_frames(run_dir: str | os.PathLike, out: str | os.PathLike, n_frames: int,
                  n_trajectories: int = 4, n_steps: int = 400, dt_fs: float = 0.25,
                  record_every: int = 20, temperature_k: float = 300.0, seed: int = 0,
                  threads: int = 1, cache_dir: str | os.PathLike | None = None,
                  log: Callable[[str], None] = _print) -> Path:
    """Run the driver's ensemble and write ``n_frames`` picked geometries to ``out`` (the
    ``selected.npz`` of :func:`fusion.data.stilbene_aug.load_selected`)."""
    import torch
    from ase import Atoms

    from fusion.data.cache import save_npz_atomic
    from fusion.data.download import sha256_of
    from fusion.data.stilbene_aug import SELECTED_FORMAT_VERSION
    from fusion.dynamics.calculator import FusionCalculator
    from fusion.dynamics.hopping import (
        ase_surfaces,
        normal_mode_sampler,
        run_trajectory,
        stilbene_normal_mode_starts,
        stilbene_starts,
    )
    from fusion.dynamics.workflow import STARTS

    if n_trajectories < 1 or n_steps < record_every or record_every < 1:
        raise ValueError(f"need n_trajectories >= 1 and n_steps >= record_every >= 1, got "
                         f"{n_trajectories}, {n_steps}, {record_every}")
    run_dir = Path(run_dir)
    torch.set_num_threads(threads)
    calculator = FusionCalculator.from_run_dir(run_dir, cache_dir=cache_dir,
                                               dtype=torch.float64)
    templates, torsion_atoms = stilbene_starts(seed)
    modes, _ = stilbene_normal_mode_starts(seed)
    rows: list[dict] = []
    for i, name in enumerate(STARTS):
        atoms = Atoms(numbers=templates[name].numbers, positions=modes[name].pos)
        surfaces = ase_surfaces(calculator, atoms)
        if surfaces(atoms.positions)[0].shape[0] < 2:
            raise ValueError(f"{run_dir}: the driver has one state; augmentation for surface "
                             "hopping needs a multi-state model")
        sampler = normal_mode_sampler(modes[name], temperature_k)
        for j in range(n_trajectories):
            recording, calls = _recording(surfaces, rows, record_every, dt_fs,
                                          {"start": name, "trajectory": i * n_trajectories + j})
            rng = np.random.default_rng([int(seed), i, j])
            x0, v0 = sampler(rng)
            result = run_trajectory(recording, x0, v0, atoms.get_masses(), 1, n_steps, dt_fs,
                                    rng=rng, torsion_atoms=torsion_atoms,
                                    record_every=n_steps)
            log(f"{name} trajectory {j}: {calls()} force calls, final state "
                f"{result.state[-1]}, torsion {result.torsion_deg[-1]:.1f} deg")
    predicted = np.stack([r["predicted"] for r in rows])  # [C, S] eV
    picked = pick_frames(predicted[:, 1] - predicted[:, 0],
                         np.array([r["trajectory"] for r in rows]), n_frames)
    settings = {"driver": str(run_dir), "model_sha256": sha256_of(run_dir / "model.pt"),
                "n_trajectories": n_trajectories, "n_steps": n_steps, "dt_fs": dt_fs,
                "record_every": record_every, "temperature_k": temperature_k, "seed": seed,
                "n_candidates": len(rows), "n_frames": n_frames}
    take = [k for k, _ in picked]
    save_npz_atomic(out, {
        "z": templates["cis"].numbers.astype(np.int64),
        "pos": np.stack([rows[k]["pos"] for k in take]),
        "predicted": predicted[take],
        "start": np.asarray([rows[k]["start"] for k in take]),
        "trajectory": np.asarray([rows[k]["trajectory"] for k in take], dtype=np.int64),
        "time_fs": np.asarray([rows[k]["time_fs"] for k in take], dtype=np.float64),
        "why": np.asarray([why for _, why in picked]),
        "settings": np.asarray(json.dumps(settings, sort_keys=True)),
    }, SELECTED_FORMAT_VERSION)
    gaps = predicted[take, 1] - predicted[take, 0]
    log(f"{out}: {len(take)} of {len(rows)} candidates, predicted S1-S0 gap "
        f"{gaps.min():.2f}-{gaps.max():.2f} eV")
    return Path(out)


def _errors(surfaces, frames, index: np.ndarray) -> dict:
    """MAE of per-state energies, of the S1-S0 gap (meV) and of forces (meV/Å) of a model
    (its ``surfaces`` function) over ``frames[index]``."""
    e_err, f_err = [], []
    for k in index:
        energies, forces = surfaces(frames.pos[k])  # [S] eV, [S, n, 3] eV/Å
        e_err.append(energies[:2] - frames.energies[k])
        f_err.append(np.abs(forces[:2] - frames.forces[k]).mean())
    e_err = np.asarray(e_err) * 1000.0  # meV
    return {"n_frames": len(index), "s0_mae_mev": float(np.abs(e_err[:, 0]).mean()),
            "s1_mae_mev": float(np.abs(e_err[:, 1]).mean()),
            "gap_mae_mev": float(np.abs(e_err[:, 1] - e_err[:, 0]).mean()),
            "forces_mae_mev_a": float(np.mean(f_err) * 1000.0)}


def compare_models(driver: str | os.PathLike, retrained: str | os.PathLike,
                   augmented_cache: str | os.PathLike, out_csv: str | os.PathLike,
                   cache_dir: str | os.PathLike | None = None,
                   split: tuple[int | None, int | None, int | None] = (None, None, None),
                   log: Callable[[str], None] = _print) -> list[dict]:
    """Errors of both models on the base test frames (``split``: the base dataset's
    n_train, n_val, n_test, as both runs were given) and the held-out dynamics frames of
    ``augmented_cache``; writes ``out_csv`` and the same table as markdown next to it."""
    import pandas as pd
    import torch
    from ase import Atoms

    from fusion.data.stilbene import load_stilbene
    from fusion.data.stilbene_aug import augmented_split
    from fusion.dynamics.calculator import FusionCalculator
    from fusion.dynamics.hopping import ase_surfaces

    frames = load_stilbene(augmented_cache)
    _, base_test, dynamics_test = augmented_split(int(frames.settings["n_base"]), len(frames),
                                                  *split)
    subsets = {"base test": base_test, "held-out dynamics": dynamics_test}
    template = Atoms(numbers=frames.z, positions=frames.pos[0])
    rows = []
    for role, run in (("driver", Path(driver)), ("retrained on -aug", Path(retrained))):
        calc = FusionCalculator.from_run_dir(run, cache_dir=cache_dir, dtype=torch.float64)
        surfaces = ase_surfaces(calc, template)
        for subset, index in subsets.items():
            rows.append({"model": role, "run": str(run), "frames": subset,
                         **_errors(surfaces, frames, index)})
            log(f"{role} on {subset}: {rows[-1]}")
    table = pd.DataFrame(rows)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False, float_format="%.6g")
    shown = table.drop(columns=["run"]).round(1)
    out_csv.with_suffix(".md").write_text(shown.to_markdown(index=False) + "\n")
    return rows


def add_commands(sub) -> None:
    """``fusion augment select|label|compare`` (argparse subparsers of the ``fusion`` CLI)."""
    p = sub.add_parser("augment", help="one round of trajectory-driven augmentation (stilbene)")
    steps = p.add_subparsers(dest="augment_command", required=True)

    p = steps.add_parser("select", help="run the driver's ensemble, keep frames to label")
    p.add_argument("--run-dir", required=True, help="trained multi-state run (the driver)")
    p.add_argument("--out", required=True, help="selected.npz to write")
    p.add_argument("--n-frames", type=int, required=True)
    p.add_argument("--n-trajectories", type=int, default=4, help="per start (cis, trans)")
    p.add_argument("--n-steps", type=int, default=400, help="steps per trajectory")
    p.add_argument("--dt-fs", type=float, default=0.25)
    p.add_argument("--record-every", type=int, default=20, help="candidate every n-th step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", default=None)
    p.set_defaults(func=lambda a: select_frames(
        a.run_dir, a.out, a.n_frames, a.n_trajectories, a.n_steps, a.dt_fs, a.record_every,
        seed=a.seed, threads=a.threads, cache_dir=a.cache_dir))

    p = steps.add_parser("label", help="label one shard of the selection (resumable)")
    p.add_argument("--base", required=True, help="base dataset whose reference labels them")
    p.add_argument("--selected", required=True)
    p.add_argument("--out", required=True, help="shard .npz (rewritten after every frame)")
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--n-shards", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)

    def label(a):
        from fusion.data.stilbene_aug import label_shard

        label_shard(a.base, a.selected, a.out, a.shard, a.n_shards, a.threads)

    p.set_defaults(func=label)

    p = steps.add_parser("compare", help="driver vs retrained errors on unseen frames")
    p.add_argument("--driver", required=True, help="run directory of the driver")
    p.add_argument("--retrained", required=True, help="run directory trained on <base>-aug")
    p.add_argument("--augmented", required=True, help="the <base>-aug cache .npz")
    p.add_argument("--out", required=True, help="comparison CSV (markdown written next to it)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--split", type=json.loads, default={},
                   help='JSON split sizes of the base frames, e.g. {"n_train": 120}')
    p.set_defaults(func=lambda a: compare_models(
        a.driver, a.retrained, a.augmented, a.out, a.cache_dir,
        tuple(a.split.get(k) for k in ("n_train", "n_val", "n_test"))))
