"""Molecular dynamics with trained models of the suite.

- :mod:`fusion.dynamics.calculator`: :class:`~fusion.dynamics.calculator.FusionCalculator`, an
  ASE calculator for any trained (single- or multi-state) model.
- :mod:`fusion.dynamics.hopping`: velocity Verlet, NVE on one surface, Landau–Zener surface
  hopping driven by the adiabatic gap, ensembles from Franck–Condon geometries and their
  analysis (S1 lifetime, cis/trans branching ratio).

Submodules are imported on demand (``from fusion.dynamics.hopping import run_ensemble``).
"""
