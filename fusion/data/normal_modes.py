"""Normal modes of an optimised minimum and thermal sampling from them (issue 20).

Replaces independent Cartesian kicks (which over-excite C–H and C–C stretches) with
sampling in the harmonic normal modes of a minimum:

- :func:`optimise`: minimum of any ``force_fn`` (positions Å → energy eV, forces eV/Å) with
  ASE's BFGS, optionally holding dihedrals fixed (``FixInternals``).
- :func:`hessian`: central differences of the forces (step ``h`` Å), symmetrised, [3n, 3n]
  eV/Å².
- :func:`normal_modes`: mass-weighted Hessian with the 3 translations and 3 rotations
  projected out (Eckart vectors at the reference geometry); returns the 3n − 6 vibrational
  frequencies (cm⁻¹) and mass-weighted eigenvectors; an imaginary mode below
  ``-imag_tol_cm`` raises ``ValueError`` (the geometry is not a minimum).
- :func:`thermal_sample`: positions and velocities from the classical Boltzmann distribution
  of the harmonic oscillators (``kind="classical"``: each mode's coordinate has variance
  kT/ω², velocity variance kT) or the harmonic Wigner distribution (``kind="wigner"``:
  variances multiplied by (ħω/2kT) coth(ħω/2kT), which includes zero-point motion).

The classical harmonic mean potential energy is (3n − 6) kT / 2 (0.853 eV for stilbene at
300 K); :func:`harmonic_mean_potential` gives it (and the Wigner value) for a mode set.

Units: Å, eV, amu, fs (velocities Å/fs), wavenumbers cm⁻¹, temperatures K.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["optimise", "hessian", "normal_modes", "NormalModes", "thermal_sample",
           "harmonic_mean_potential", "K_B_EV"]

K_B_EV = 8.617333262e-5  # eV/K
HBAR_EV_S = 6.582119569e-16  # eV s
AMU_KG = 1.66053906660e-27
EV_J = 1.602176634e-19
C_CM_S = 2.99792458e10

ForceFn = Callable[[np.ndarray], tuple[float, np.ndarray]]


def _ase_calculator(force_fn: ForceFn):
    from ase.calculators.calculator import Calculator, all_changes

    class _Calc(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            energy, forces = force_fn(self.atoms.get_positions())
            self.results = {"energy": float(energy), "forces": np.asarray(forces)}

    return _Calc()


def optimise(force_fn: ForceFn, z: np.ndarray, pos: np.ndarray, fmax: float = 0.005,
             steps: int = 2000, dihedrals: Sequence[tuple[float, Sequence[int]]] = ()
             ) -> np.ndarray:
    """Positions [n, 3] (Å) of the minimum reached from ``pos`` by BFGS (forces below
    ``fmax`` eV/Å). ``dihedrals``: ``(angle_deg, (a, b, c, d))`` held fixed (the current value
    of each is replaced by ``angle_deg``, so set it in ``pos`` first). Raises
    ``RuntimeError`` if not converged within ``steps``."""
    from ase import Atoms
    from ase.constraints import FixInternals
    from ase.optimize import BFGS

    atoms = Atoms(numbers=np.asarray(z), positions=np.asarray(pos, dtype=np.float64))
    atoms.calc = _ase_calculator(force_fn)
    if dihedrals:
        atoms.set_constraint(FixInternals(
            dihedrals_deg=[[float(a), [int(i) for i in idx]] for a, idx in dihedrals]))
    opt = BFGS(atoms, logfile=None, maxstep=0.1)
    if not opt.run(fmax=fmax, steps=steps):
        raise RuntimeError(f"optimisation did not reach fmax {fmax} eV/Å in {steps} steps")
    return atoms.get_positions()


def hessian(force_fn: ForceFn, pos: np.ndarray, h: float = 0.005) -> np.ndarray:
    """Cartesian Hessian [3n, 3n] (eV/Å²) by central differences of the forces."""
    x0 = np.asarray(pos, dtype=np.float64)
    n3 = x0.size
    hess = np.zeros((n3, n3))
    for k in range(n3):
        plus, minus = x0.copy().reshape(-1), x0.copy().reshape(-1)
        plus[k] += h
        minus[k] -= h
        _, f_plus = force_fn(plus.reshape(x0.shape))
        _, f_minus = force_fn(minus.reshape(x0.shape))
        hess[k] = -(np.asarray(f_plus) - np.asarray(f_minus)).reshape(-1) / (2 * h)
    return 0.5 * (hess + hess.T)


@dataclass
class NormalModes:
    """Vibrational modes at ``pos`` [n, 3] Å: ``frequencies_cm`` [k] (cm⁻¹), ``vectors``
    [k, n, 3] (orthonormal, mass-weighted), ``masses`` [n] amu, ``omega`` [k] in
    sqrt(eV/Å²/amu) (ASE's frequency unit), ``energy`` (eV) at ``pos``."""

    pos: np.ndarray
    masses: np.ndarray
    frequencies_cm: np.ndarray
    vectors: np.ndarray
    omega: np.ndarray
    energy: float = 0.0


def _omega_to_cm(omega: np.ndarray) -> np.ndarray:
    # omega in sqrt(eV / (Å² amu)) -> rad/s -> cm^-1
    rad_s = omega * math.sqrt(EV_J / (1e-20 * AMU_KG))
    return rad_s / (2 * math.pi * C_CM_S)


def normal_modes(hess: np.ndarray, pos: np.ndarray, masses: np.ndarray,
                 imag_tol_cm: float = 20.0, energy: float = 0.0) -> NormalModes:
    """Vibrational normal modes of a (non-linear) molecule from a Cartesian Hessian."""
    x = np.asarray(pos, dtype=np.float64)
    m = np.asarray(masses, dtype=np.float64)
    n = m.shape[0]
    if hess.shape != (3 * n, 3 * n):
        raise ValueError(f"Hessian shape {hess.shape} does not match {n} atoms")
    sqm = np.repeat(np.sqrt(m), 3)  # [3n]
    hmw = hess / sqm[:, None] / sqm[None, :]
    com = (m[:, None] * x).sum(0) / m.sum()
    r = x - com
    ext = []
    for axis in range(3):
        t = np.zeros((n, 3))
        t[:, axis] = 1.0
        ext.append((t * np.sqrt(m)[:, None]).reshape(-1))
        e = np.zeros(3)
        e[axis] = 1.0
        ext.append((np.cross(e, r) * np.sqrt(m)[:, None]).reshape(-1))
    q, _ = np.linalg.qr(np.stack(ext, axis=1))  # [3n, 6] orthonormal external space
    proj = np.eye(3 * n) - q @ q.T
    hp = proj @ hmw @ proj
    vals, vecs = np.linalg.eigh(hp)
    # drop the 6 external directions: the eigenvectors with the largest overlap with q
    overlap = np.linalg.norm(q.T @ vecs, axis=0)  # [3n]
    keep = np.sort(np.argsort(overlap)[: 3 * n - 6])
    vals, vecs = vals[keep], vecs[:, keep]
    freqs = np.sign(vals) * _omega_to_cm(np.sqrt(np.abs(vals)))
    if freqs.min() < -imag_tol_cm:
        raise ValueError(f"imaginary mode of {freqs.min():.1f} cm^-1 (below -{imag_tol_cm}): "
                         "the geometry is not a minimum; optimise it further")
    freqs = np.abs(freqs)
    return NormalModes(pos=x, masses=m, frequencies_cm=freqs,
                       vectors=vecs.T.reshape(-1, n, 3), omega=np.sqrt(np.abs(vals)),
                       energy=float(energy))


def _variance_factor(modes: NormalModes, temperature_k: float, kind: str) -> np.ndarray:
    if kind == "classical":
        return np.ones_like(modes.omega)
    if kind == "wigner":
        hbar_omega = HBAR_EV_S * modes.omega * math.sqrt(EV_J / (1e-20 * AMU_KG))  # eV
        if temperature_k == 0:
            return np.full_like(hbar_omega, np.inf)  # handled by the caller
        u = hbar_omega / (2 * K_B_EV * temperature_k)
        return u / np.tanh(u)
    raise ValueError(f"kind must be 'classical' or 'wigner', got {kind!r}")


def harmonic_mean_potential(modes: NormalModes, temperature_k: float,
                            kind: str = "classical", min_cm: float = 0.0) -> float:
    """Mean harmonic potential energy (eV) above the minimum of the distribution that
    :func:`thermal_sample` draws (modes below ``min_cm`` are not displaced)."""
    kt = K_B_EV * temperature_k
    displaced = modes.frequencies_cm >= min_cm
    return float(0.5 * kt * _variance_factor(modes, temperature_k, kind)[displaced].sum())


def thermal_sample(modes: NormalModes, temperature_k: float, rng: np.random.Generator,
                   kind: str = "classical", min_cm: float = 0.0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Positions [n, 3] (Å) and velocities [n, 3] (Å/fs) sampled in the normal modes.

    Each vibrational mode k gets a mass-weighted coordinate ~ N(0, f_k kT / ω_k²) and
    velocity ~ N(0, f_k kT) with f_k = 1 (``classical``) or (ħω/2kT) coth(ħω/2kT)
    (``wigner``). Modes below ``min_cm`` get their velocity but no displacement: a linear
    normal-mode displacement of a large-amplitude torsion (stilbene's phenyl torsions, 2–80
    cm⁻¹ at GFN2-xTB, thermal amplitude tens of degrees) stretches bonds far from the axis.
    No net translation or rotation is introduced (the modes are orthogonal to them).
    """
    if temperature_k <= 0:
        raise ValueError(f"temperature must be > 0 K, got {temperature_k}")
    from ase import units

    kt = K_B_EV * temperature_k
    f = _variance_factor(modes, temperature_k, kind)
    active = modes.frequencies_cm >= min_cm
    q = rng.standard_normal(modes.omega.shape) * np.sqrt(f * kt) / modes.omega
    p = rng.standard_normal(modes.omega.shape) * np.sqrt(f * kt)
    q = np.where(active, q, 0.0)
    sqm = np.sqrt(modes.masses)[:, None]
    disp = np.einsum("k,kia->ia", q, modes.vectors) / sqm  # Å
    vel = np.einsum("k,kia->ia", p, modes.vectors) / sqm  # Å / ASE time
    return modes.pos + disp, vel * units.fs
