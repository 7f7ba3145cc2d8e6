"""Molecular dynamics with trained models of the suite.

- :mod:`fusion.dynamics.calculator`: :class:`~fusion.dynamics.calculator.FusionCalculator`, an
  ASE calculator for any trained (single- or multi-state) model.
- :mod:`fusion.dynamics.hopping`: velocity Verlet, NVE on one surface, Landau–Zener surface
  hopping driven by the adiabatic gap, ensembles from Franck–Condon geometries.
- :mod:`fusion.dynamics.analysis`: the analysis of an ensemble (S1 lifetime, cis/trans
  branching ratio, per-run figures).
- :mod:`fusion.dynamics.workflow`: one dynamics job (spec, run, analysis.json) and the
  config helpers of the workflow.
- :mod:`fusion.dynamics.tables`: the combined table and figures over many dynamics runs.

Submodules are imported on demand (``from fusion.dynamics.hopping import run_ensemble``).
"""
