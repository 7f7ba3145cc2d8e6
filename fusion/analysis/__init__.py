"""Analysis layer: tables and figures from the workflow's results.

- :mod:`fusion.analysis.aggregate`: ``metrics.json`` -> ``summary.csv`` (tidy) ->
  ``comparison.{csv,md}``; entry point ``main_aggregate(metrics_paths, out_dir)``.
- :mod:`fusion.analysis.figures`: error vs parameters, learning curves (PNG + SVG);
  entry point ``main_figures(summary_csv, log_paths, out_dir)``.
- :mod:`fusion.analysis.style`: colours, markers and labels per (model, variant).
- :mod:`fusion.analysis.literature`: published reference values (not ours).

Submodules are not imported here, so ``fusion.analysis.aggregate`` loads without matplotlib.
"""
