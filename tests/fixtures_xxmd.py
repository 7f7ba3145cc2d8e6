"""xxMD fixtures in the real layout, shared by the dataset tests (tests/data/test_xxmd_states.py)
and the dynamics test on xxmd-stilbene (tests/dynamics/test_xxmd_dynamics.py).

The GitHub archive ``xxMD-main.zip`` holds one zip per state
(``xxMD-CASSCF/sti/s0/sti_s0.zip``) with the three extxyz split files
(``sti_{train,val,test}_s0.xyz``, written as ASE writes them). :func:`write_archive` writes
such an archive into ``<cache_dir>/downloads/``, where a user puts a file by hand, so the
loaders find it without a download; :func:`no_network` is an ``opener`` that fails the test
wherever a download could happen.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

STATES = ("s0", "s1", "s2")
SPLIT_SIZES = {"train": 3, "val": 2, "test": 2}
TORSION_TARGETS = (10.0, 45.0, 80.0, 100.0, 135.0, 160.0, 175.0)  # degrees, one per frame
SYMBOLS = {1: "H", 6: "C", 8: "O"}


def no_network(request):
    pytest.fail(f"test tried to download {request.full_url}")


class Frames:
    """Fixture frames in file order (train, val, test): ``z`` [n], ``pos`` [F, n, 3] Å, and
    per state ``energy`` [S, F] eV (S0 < S1 < S2, about 4 eV apart), ``forces``
    [S, F, n, 3] eV/Å."""

    def __init__(self, z, pos, seed=0):
        rng = np.random.default_rng(seed)
        f, n = pos.shape[:2]
        self.z, self.pos = z, pos
        self.energy = -14000.0 + np.arange(3)[:, None] * 4.0 + rng.normal(size=(3, f))
        self.forces = rng.normal(size=(3, f, n, 3))


def stilbene_frames() -> tuple[Frames, tuple[int, int, int, int]]:
    """Stilbene along its torsion (one frame per :data:`TORSION_TARGETS`), atoms shuffled
    (xxMD's atom order is not rdkit's); also the shuffled indices of the torsion atoms."""
    from fusion.data.stilbene import (
        STILBENE_SMILES,
        STILBENE_TORSION_SMARTS,
        TorsionGeometryBuilder,
    )

    builder = TorsionGeometryBuilder(STILBENE_SMILES, STILBENE_TORSION_SMARTS, seed=0)
    order = np.random.RandomState(0).permutation(len(builder.z))  # new atom k = old order[k]
    pos = np.stack([builder.geometry(angle)[order] for angle in TORSION_TARGETS])
    where = {int(old): new for new, old in enumerate(order)}
    atoms = tuple(where[a] for a in builder.torsion_atoms)
    return Frames(builder.z[order], pos), atoms


def small_frames(n_frames=7, seed=3) -> Frames:
    """Malonaldehyde-like frames (C3H4O2), random geometry: enough for the file format."""
    rng = np.random.default_rng(seed)
    z = np.array([6, 6, 6, 8, 8, 1, 1, 1, 1])
    base = rng.uniform(-1.5, 1.5, size=(9, 3))
    return Frames(z, base + 0.05 * rng.normal(size=(n_frames, 9, 3)), seed)


def xyz_text(z, pos, energy, forces, drop_forces_in=None) -> str:
    """Frames as ASE writes extxyz: species, pos, forces columns and ``energy=`` (eV)."""
    out = []
    for f in range(pos.shape[0]):
        props = "species:S:1:pos:R:3" + ("" if f == drop_forces_in else ":forces:R:3")
        out += [str(len(z)), f'Properties={props} energy={float(energy[f])!r} pbc="F F F"']
        for k in range(len(z)):
            row = [SYMBOLS[int(z[k])], *(f"{v:.10f}" for v in pos[f, k])]
            if f != drop_forces_in:
                row += [f"{v:.10f}" for v in forces[f, k]]
            out.append(" ".join(row))
    return "\n".join(out) + "\n"


def write_archive(cache_dir: Path, frames: Frames, code="sti", nested=True, moved=None,
                  dropped=None, drop_forces=None, corrupt_zip=None) -> Path:
    """``<cache_dir>/downloads/xxMD-main.zip`` with the CASSCF files of ``code``; returns its
    path. ``nested=False``: the per-state zips unpacked. ``moved``: {(state, frame): (atom,
    displacement [3] Å)}; ``dropped``: (state, frame) left out; ``drop_forces``: (state,
    frame) written without forces; ``corrupt_zip``: a state whose zip is garbage."""
    path = Path(cache_dir) / "downloads" / "xxMD-main.zip"
    path.parent.mkdir(parents=True, exist_ok=True)
    bounds = np.cumsum([0, *SPLIT_SIZES.values()])
    with zipfile.ZipFile(path, "w") as outer:
        outer.writestr("xxMD-main/README.md", "# xxMD\n")
        for s, state in enumerate(STATES):
            pos = frames.pos.copy()
            for (where, frame), (atom, shift) in (moved or {}).items():
                if where == state:
                    pos[frame, atom] += shift
            keep = [f for f in range(len(pos)) if (state, f) != dropped]
            texts = {}
            for k, split in enumerate(SPLIT_SIZES):
                idx = [f for f in keep if bounds[k] <= f < bounds[k + 1]]
                bare = drop_forces is not None and drop_forces[0] == state
                no_forces = idx.index(drop_forces[1]) if bare and drop_forces[1] in idx else None
                texts[f"{code}_{split}_{state}.xyz"] = xyz_text(
                    frames.z, pos[idx], frames.energy[s, idx], frames.forces[s, idx], no_forces)
            folder = f"xxMD-main/xxMD-CASSCF/{code}/{state}"
            if not nested:
                for name, text in texts.items():
                    outer.writestr(f"{folder}/{code}_{state}/{name}", text)
                continue
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as inner:
                for name, text in texts.items():
                    inner.writestr(f"{code}_{state}/{name}", text)
            data = b"PK\x03\x04 not a zip" if state == corrupt_zip else buffer.getvalue()
            outer.writestr(f"{folder}/{code}_{state}.zip", data)
    return path
