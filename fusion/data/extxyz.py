"""A small, strict extended-XYZ reader for molecular force-field data (3BPA, xxMD).

Each frame is ``N`` / a comment line of ``key=value`` pairs (values may be quoted) with
``Properties=name:type:count:...`` / ``N`` atom lines. We read the species (symbol or
atomic number), positions (Å), forces (eV/Å) and the total energy (eV) from the comment
line. Unlike ``ase.io.read`` every problem is reported with the file, the frame (0-based)
and the line number (1-based): a missing energy or forces column, a wrong atom count, a
non-numeric or non-finite value, a truncated last frame.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusion.data.structures import MAX_Z

__all__ = ["FrameError", "XYZFrames", "read_extxyz", "parse_extxyz", "parse_comment"]

ENERGY_KEYS = ("energy", "REF_energy", "DFT_energy", "dft_energy", "total_energy")
FORCES_KEYS = ("forces", "REF_forces", "DFT_forces", "dft_forces")

_PAIR = re.compile(r'([A-Za-z_][\w\-]*)\s*=\s*("([^"]*)"|\'([^\']*)\'|\{([^}]*)\}|(\S+))')


class FrameError(ValueError):
    """A frame of a data file is malformed; the message names file, frame and line."""


@dataclass
class XYZFrames:
    """Frames of one file, flat: ``z`` [A], ``pos`` [A, 3] Å, ``n_atoms`` [M],
    ``energy`` [M] eV, ``forces`` [A, 3] eV/Å, ``info`` (per-frame comment pairs)."""

    z: np.ndarray
    pos: np.ndarray
    n_atoms: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    info: list[dict[str, str]] = field(default_factory=list)


def parse_comment(line: str) -> dict[str, str]:
    """``key=value`` pairs of an extxyz comment line (quotes and braces stripped)."""
    out = {}
    for m in _PAIR.finditer(line):
        value = next(g for g in m.groups()[2:] if g is not None)
        out[m.group(1)] = value
    return out


def _columns(props: str, where: str) -> dict[str, tuple[int, int, str]]:
    """``Properties`` string -> {name: (first column, count, type)}."""
    parts = props.split(":")
    if len(parts) % 3:
        raise FrameError(f"{where}: Properties={props!r} is not name:type:count triples")
    cols, start = {}, 0
    for i in range(0, len(parts), 3):
        name, kind, count = parts[i], parts[i + 1], parts[i + 2]
        if not count.isdigit():
            raise FrameError(f"{where}: Properties={props!r}: count {count!r} of {name!r} "
                             "is not an integer")
        cols[name] = (start, int(count), kind)
        start += int(count)
    return cols


def _symbol_to_z() -> dict[str, int]:
    from ase.data import atomic_numbers

    return dict(atomic_numbers)


def read_extxyz(path: str | os.PathLike, energy_keys: Sequence[str] = ENERGY_KEYS,
                forces_keys: Sequence[str] = FORCES_KEYS) -> XYZFrames:
    """Read every frame of the extxyz file ``path`` (see module docstring).

    The energy is the first of ``energy_keys`` present in the comment line, forces the
    first of ``forces_keys`` present in ``Properties``. Raises :class:`FrameError`
    naming the file, frame and line on any malformed or incomplete frame.
    """
    data = Path(path).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FrameError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); "
                         "a binary or corrupt file where extxyz text was expected") from None
    return parse_extxyz(text, str(path), energy_keys, forces_keys)


def parse_extxyz(text: str, path: str, energy_keys: Sequence[str] = ENERGY_KEYS,
                 forces_keys: Sequence[str] = FORCES_KEYS,
                 require_forces: bool = True) -> XYZFrames:
    """As :func:`read_extxyz` for the contents ``text`` of a file named ``path`` (used in
    messages, e.g. ``archive.tar.gz:member.xyz``). ``require_forces=False`` reads
    energy-only files (e.g. the acac dihedral scan): frames without a forces column get
    zero forces and ``info["has_forces"] = "F"``."""
    lines = text.splitlines()
    sym = _symbol_to_z()
    zs, poss, fs, ns, es, infos = [], [], [], [], [], []
    i, frame = 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        where = f"{path}: frame {frame} (line {i + 1})"
        try:
            n = int(lines[i].strip())
        except ValueError:
            raise FrameError(f"{where}: expected the atom count, got {lines[i][:60]!r}") from None
        if n < 1:
            raise FrameError(f"{where}: atom count {n} < 1")
        if i + 2 + n > len(lines):
            raise FrameError(f"{where}: truncated frame: {n} atoms announced, only "
                             f"{max(0, len(lines) - i - 2)} atom lines before end of file")
        info = parse_comment(lines[i + 1])
        props = info.get("Properties", "species:S:1:pos:R:3")
        cols = _columns(props, where)
        ekey = next((k for k in energy_keys if k in info), None)
        if ekey is None:
            raise FrameError(f"{where}: no energy in the comment line; expected one of "
                             f"{list(energy_keys)}, found keys {sorted(info)}")
        fkey = next((k for k in forces_keys if k in cols), None)
        if fkey is None and not require_forces:
            info["has_forces"] = "F"
        elif fkey is None:
            raise FrameError(f"{where}: no forces column; expected one of {list(forces_keys)} "
                             f"in Properties={props!r}")
        for need in ("species", "pos"):
            if need not in cols:
                raise FrameError(f"{where}: Properties={props!r} has no {need!r} column")
        # The columns we read must have their fixed widths, or every later one would shift.
        for name, width, kinds in (("species", 1, "SI"), ("pos", 3, "R"), (fkey, 3, "R")):
            if name is not None and (cols[name][1] != width or cols[name][2] not in kinds):
                raise FrameError(
                    f"{where}: Properties={props!r}: {name!r} is {cols[name][2]}:"
                    f"{cols[name][1]}, expected {' or '.join(kinds)}:{width}"
                )
        try:
            energy = float(info[ekey])
        except ValueError:
            raise FrameError(f"{where}: {ekey}={info[ekey]!r} is not a number") from None
        rows = [ln.split() for ln in lines[i + 2:i + 2 + n]]
        width = sum(c for _, c, _ in cols.values())
        for k, row in enumerate(rows):
            if len(row) != width:
                raise FrameError(f"{path}: frame {frame} (line {i + 3 + k}): {len(row)} "
                                 f"columns, Properties={props!r} needs {width}")
        s0 = cols["species"][0]
        species = [row[s0] for row in rows]
        try:
            z = np.array([int(s) if s.isdigit() else sym[s] for s in species], dtype=np.int64)
        except KeyError as err:
            raise FrameError(f"{where}: unknown element symbol {err.args[0]!r}") from None
        out_of_range = np.flatnonzero((z < 1) | (z > MAX_Z))
        if out_of_range.size:
            k = int(out_of_range[0])
            raise FrameError(f"{path}: frame {frame} (line {i + 3 + k}): atomic number "
                             f"{int(z[k])} of atom {k}; expected 1..{MAX_Z}")
        p0 = cols["pos"][0]
        try:
            if fkey is None:  # energy-only frame: zero forces, flagged in info
                table = np.array([[float(v) for v in row[p0:p0 + 3]] + [0.0] * 3
                                  for row in rows])
            else:
                f0 = cols[fkey][0]
                table = np.array([[float(v) for v in row[p0:p0 + 3] + row[f0:f0 + 3]]
                                  for row in rows])  # [n, 6]
        except ValueError as err:
            raise FrameError(f"{where}: non-numeric position or force ({err})") from None
        bad = ~np.isfinite(table)
        if bad.any() or not np.isfinite(energy):
            atom = int(np.argwhere(bad)[0][0]) if bad.any() else -1
            what = f"atom {atom} (line {i + 3 + atom})" if bad.any() else f"{ekey}={energy}"
            raise FrameError(f"{where}: non-finite value (NaN/inf) at {what}; expected finite "
                             "positions, forces and energy")
        zs.append(z)
        poss.append(table[:, :3])
        fs.append(table[:, 3:])
        ns.append(n)
        es.append(energy)
        infos.append(info)
        i += 2 + n
        frame += 1
    if not ns:
        raise FrameError(f"{path}: no frames found (empty file?)")
    return XYZFrames(np.concatenate(zs), np.concatenate(poss), np.array(ns, dtype=np.int64),
                     np.array(es), np.concatenate(fs), infos)
