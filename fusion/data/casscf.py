"""SA2-CASSCF(2,2) S0/S1 energies and analytic forces (pyscf), the multireference stand-in
for stilbene (issue 20), plus the geometry measures its validation reports.

Method: RHF (density-fitted by default) → state-averaged CASSCF with 2 electrons in 2
orbitals, equal weights on the two lowest **singlet** roots (``fci.direct_spin0``: the CI
vector is spin-symmetric, so the Ms = 0 triplet component of the ππ* configuration cannot
enter the average). Gradients: S1's is the state-specific gradient of the SA object
(``mc.nuc_grad_method().kernel(state=1)``, which solves the SA Lagrangian; pyscf's
``df.grad.sacasscf`` when density-fitted); S0's follows from the gradient of the
state-averaged energy, which needs no Lagrangian (:func:`_state_gradients`).

Active-space choice: ``active="homo-lumo"`` (default, deterministic, no history) starts
from the RHF HOMO and LUMO, the π and π* of the whole conjugated system in planar stilbene.
``active="central"`` instead takes the occupied orbital among the highest
:data:`ACTIVE_WINDOW` and the virtual among the lowest :data:`ACTIVE_WINDOW` with the largest
Mulliken weight on the two central carbons (for twisted geometries where a phenyl π may lie
above the central one). Why ``direct_spin0``: with pyscf's default solver the two lowest
Ms = 0 roots of (2,2) are S0 and the **triplet** ππ*, so a "state average" silently averages
S0 with T1 (measured: a 4.34 eV "gap" at the MMFF trans geometry, which is S0→T1; the
singlet S1 is 6.9 eV above S0 at the GFN2-xTB trans minimum).
Along a path (scan, crossing search) the converged orbitals of the previous
point can be passed as ``mo_guess`` instead (projected onto the new geometry with
``mcscf.project_init_guess``), which tracks the active orbitals continuously.

Roots are ordered by energy (pyscf sorts the FCI roots), so S1 ≥ S0 always;
a root flip between S1 and the doubly excited (π*)² state would show as a jump in the
active-orbital occupations, which :func:`sa_casscf_labels` returns in ``info``.

Units: positions Å, energies eV (total), forces eV/Å.
"""

from __future__ import annotations

import math
import time

import numpy as np

from fusion.data.stilbene import converged_scf

__all__ = [
    "ACTIVE_WINDOW",
    "sa_casscf_labels",
    "central_active_orbitals",
    "pyramidalisation_deg",
    "HARTREE_TO_EV",
    "BOHR_TO_ANGSTROM",
]

HARTREE_TO_EV = 27.211386245988
BOHR_TO_ANGSTROM = 0.529177210903
ACTIVE_WINDOW = 6  # frontier orbitals searched on each side for the central π / π*


def _mol(z, pos, basis: str):
    from pyscf import gto

    atoms = [(int(zi), tuple(float(x) for x in p)) for zi, p in zip(z, pos)]
    return gto.M(atom=atoms, basis=basis, unit="Angstrom", verbose=0)


def central_active_orbitals(mf, central_atoms: tuple[int, int],
                            window: int = ACTIVE_WINDOW) -> tuple[int, int]:
    """Indices (occupied, virtual) of the RHF orbitals with the largest Mulliken weight on
    ``central_atoms`` among the ``window`` highest occupied / lowest virtual orbitals."""
    mol = mf.mol
    nocc = mol.nelectron // 2
    c = mf.mo_coeff
    sc = mf.get_ovlp() @ c  # [nao, nmo]
    aoslices = mol.aoslice_by_atom()
    ao = np.concatenate([np.arange(*aoslices[a, 2:4]) for a in central_atoms])
    weight = np.einsum("pi,pi->i", c[ao], sc[ao])  # Mulliken population on the atoms
    occ = list(range(max(0, nocc - window), nocc))
    vir = list(range(nocc, min(c.shape[1], nocc + window)))
    return (occ[int(np.argmax(weight[occ]))], vir[int(np.argmax(weight[vir]))])


def sa_casscf_labels(z: np.ndarray, pos: np.ndarray, central_atoms: tuple[int, int],
                     basis: str = "sto-3g", density_fit: bool = True,
                     mo_guess: tuple | None = None, conv_tol: float = 1e-9,
                     gradients: bool = True, active: str = "homo-lumo"
                     ) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """S0 and S1 energies (eV) [2], forces (eV/Å) [2, n, 3] (None if ``gradients`` is False)
    and ``info`` of one geometry (Å) at SA2-CASSCF(2,2).

    ``central_atoms``: the two atoms whose π/π* form the active space (see module docstring);
    ``mo_guess``: ``(mol, mo_coeff)`` of a previous point to start from instead. ``info``:
    ``mo`` (``(mol, mo_coeff)`` for the next point), ``natocc`` (active natural occupations
    of the state-averaged density), ``seconds`` (wall time), ``active`` (RHF orbital indices
    used; None with ``mo_guess``). ``active``: how the active orbitals are chosen without
    ``mo_guess`` (module docstring). Raises ``RuntimeError`` when RHF or CASSCF does not
    converge, or the two roots are not singlets.
    """
    from pyscf import fci, mcscf, scf
    from pyscf.fci.spin_op import spin_square0

    started = time.perf_counter()
    mol = _mol(z, pos, basis)
    mf = scf.RHF(mol)
    if density_fit:
        mf = mf.density_fit()
    mf = converged_scf(mf, conv_tol, f"RHF/{basis}")
    mc = mcscf.CASSCF(mf, 2, 2)
    mc.fcisolver = fci.direct_spin0.FCI(mol)
    mc.conv_tol = conv_tol
    mc = mc.state_average_([0.5, 0.5])
    if active not in ("homo-lumo", "central"):
        raise ValueError(f"active must be 'homo-lumo' or 'central', got {active!r}")
    chosen = None
    if mo_guess is not None:
        prev_mol, prev_mo = mo_guess
        mo = mcscf.project_init_guess(mc, prev_mo, prev_mol)
    elif active == "central":
        chosen = central_active_orbitals(mf, tuple(central_atoms))
        mo = mc.sort_mo([i + 1 for i in chosen])  # sort_mo counts from 1
    else:
        nocc = mol.nelectron // 2
        chosen = (nocc - 1, nocc)
        mo = mf.mo_coeff
    mc.kernel(mo)
    if not mc.converged:
        raise RuntimeError("SA2-CASSCF(2,2) did not converge")
    for k, ci in enumerate(mc.ci):
        ss, _ = spin_square0(ci, 2, (1, 1))
        if abs(ss) > 1e-4:
            raise RuntimeError(f"SA2-CASSCF root {k} is not a singlet (<S^2> = {ss:.3f})")
    energies = np.asarray(mc.e_states, dtype=np.float64) * HARTREE_TO_EV
    forces = None
    if gradients:
        g = _state_gradients(mc, density_fit)  # [2, n, 3] Hartree/Bohr
        forces = -g * (HARTREE_TO_EV / BOHR_TO_ANGSTROM)
    casdm1 = mc.fcisolver.make_rdm1(mc.ci, 2, (1, 1))
    info = {"mo": (mol, mc.mo_coeff.copy()), "natocc": np.linalg.eigvalsh(casdm1)[::-1],
            "seconds": time.perf_counter() - started, "active": chosen}
    return energies, forces, info


def _state_gradients(mc, density_fit: bool) -> np.ndarray:
    """S0 and S1 gradients [2, n, 3] (Hartree/Bohr) from **one** Lagrangian solve.

    The state-averaged energy Ē = (E0 + E1)/2 is variational in orbitals and CI, so its
    gradient needs no response (pyscf's plain CASSCF gradient on the SA object, built from
    the averaged density matrices); only S1 needs the SA Lagrangian, and
    g0 = 2 ḡ − g1. Measured on a stilbene point: 16 s for ḡ against 95 s per
    state-specific gradient (1 thread), and ḡ equal to (g0 + g1)/2 within 1.3e-6 Eh/Bohr.
    """
    if density_fit:
        from pyscf.df.grad import casscf as mean_grad
    else:
        from pyscf.grad import casscf as mean_grad
    g_mean = mean_grad.Gradients(mc).kernel()
    g1 = mc.nuc_grad_method().kernel(state=1)
    return np.stack([2.0 * g_mean - g1, g1])


def pyramidalisation_deg(pos: np.ndarray, centre: int, bonded: int,
                         others: tuple[int, int]) -> float:
    """Out-of-plane angle (degrees) of the bond ``centre``–``bonded`` from the plane through
    ``centre`` spanned by its bonds to ``others``: 0 for a planar sp2 carbon, 54.7 for an
    ideal tetrahedral one."""
    p = np.asarray(pos, dtype=np.float64)
    n = np.cross(p[others[0]] - p[centre], p[others[1]] - p[centre])
    n /= np.linalg.norm(n)
    u = p[bonded] - p[centre]
    u /= np.linalg.norm(u)
    return float(math.degrees(math.asin(min(1.0, abs(float(n @ u))))))
