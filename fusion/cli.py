"""``fusion``: the command line the Snakemake rules (and users) call.

    fusion list                          # datasets, models and variants
    fusion prepare qm9                   # build the dataset cache under resources/
    fusion data import DIR               # place real benchmark files by hand (sha256-checked)
    fusion composition --spec JSON       # composition baseline -> metrics.json
    fusion train --spec JSON             # train one (dataset, model, variant, seed)
    fusion evaluate --spec JSON          # a transfer test set (acac-600K) with its trained run
    fusion params --model mace --variant baseline [--hparams JSON]
    fusion cards qm9-U0 --out results/tables/dataset_cards.md
    fusion aggregate METRICS... --out-dir results/tables
    fusion study --config config/study.yaml --out-dir results/study   # publish the study
    fusion states-table --summary results/tables/summary.csv --out-dir results/tables
    fusion figures --summary results/tables/summary.csv --logs LOGS... --out-dir results/figures
    fusion figures --kernels results/benchmarks/product.csv --out-dir results/figures
    fusion dynamics --spec JSON|@file    # stilbene surface hopping with a multi-state run
    fusion dynamics-table ANALYSIS... --tables-dir results/tables --figures-dir results/figures

Every error a user can cause ends in one line ``error: ...`` and exit status 2; an
operating-system error (full disk, read-only folder, a file where a folder should be, a name
too long) in one line naming the path, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_list(args) -> None:
    from fusion.data.registry import dataset_keys
    from fusion.models.registry import model_names

    print("datasets:", ", ".join(dataset_keys()))
    for model, variants in model_names().items():
        print(f"model {model}: {', '.join(variants)}")


def _cmd_prepare(args) -> None:
    import time

    from fusion.data.registry import (
        FAMILIES,
        dataset_cache_path,
        load_builtin_datasets,
        prepare_family,
    )

    load_builtin_datasets()

    started = time.time()
    if args.family in FAMILIES:
        path = prepare_family(args.family, args.cache_dir)
    else:  # a dataset key: build (or check) the cache it loads from
        from fusion.data.registry import get_dataset

        get_dataset(args.family, cache_dir=args.cache_dir)
        path = dataset_cache_path(args.family, args.cache_dir)
    print(f"{args.family}: cache {path} ready in {time.time() - started:.1f} s")


def _cmd_data_import(args) -> None:
    from fusion.data.sources import import_files

    report = import_files(args.folder, args.cache_dir)
    if report.refused:
        raise ValueError(f"{len(report.refused)} file(s) refused (sha256 mismatch, listed "
                         f"above); {len(report.copied) + len(report.present)} in place")


def _cmd_composition(args) -> None:
    from fusion.experiment import run_composition, spec_from_env_or_arg

    m = run_composition(spec_from_env_or_arg(args.spec))
    print(f"composition baseline test MAE {m['test']['mae']:.3f} {m['units']['y']}")


def _cmd_train(args) -> None:
    from fusion.experiment import run_training, spec_from_env_or_arg

    m = run_training(spec_from_env_or_arg(args.spec))
    print(
        f"test MAE {m['test']['mae']:.3f} {m['units']['y']}, "
        f"{m['n_params']:,} parameters, {m['train']['seconds_per_epoch']:.1f} s/epoch"
    )


def _cmd_evaluate(args) -> None:
    from fusion.experiment import spec_from_env_or_arg
    from fusion.transfer import run_transfer_evaluation

    run_transfer_evaluation(spec_from_env_or_arg(args.spec))


def _cmd_study(args) -> None:
    from fusion.analysis.study import publish_from_files

    publish_from_files(args.config, args.results, args.out_dir, args.wall_seconds)


def _cmd_readme(args) -> None:
    from pathlib import Path

    from fusion.analysis.readme import render_readme, stale_blocks

    path = Path(args.readme)
    text = path.read_text(encoding="utf-8")
    if args.check:
        stale = stale_blocks(text, path.parent)
        if stale:
            raise ValueError(f"{path}: generated block(s) differ from {', '.join(stale)}; "
                             "run `fusion readme` to rewrite them")
        print(f"{path}: every generated block matches its file")
        return
    path.write_text(render_readme(text, path.parent), encoding="utf-8")
    print(f"{path}: generated blocks rewritten")


def _cmd_params(args) -> None:
    import numpy as np

    from fusion.models.registry import ModelStats, build_model, count_parameters

    elements = args.elements
    stats = ModelStats(
        elements=elements, atomic_energies=np.zeros(len(elements)), avg_num_neighbors=10.0
    )
    hparams = args.hparams or {}
    model = build_model(args.model, args.variant, hparams, stats)
    print(count_parameters(model))


def _cmd_cards(args) -> None:
    from pathlib import Path

    from fusion.data.cards import card_with_stats

    lines = ["# Dataset cards", ""]
    for key in args.datasets:
        card = card_with_stats(key, args.cache_dir)  # + statistics when the cache exists
        lines += [f"## {key}", "", "| field | value |", "|:---|:---|"]
        for field, value in card.items():
            text = str(value).replace("|", "\\|")
            lines.append(f"| {field} | {text} |")
        lines.append("")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def _cmd_aggregate(args) -> None:
    from fusion.analysis.aggregate import main_aggregate

    main_aggregate(args.metrics, args.out_dir, model_pages=args.model_pages,
                   study_page=args.study_page)


def _cmd_states_table(args) -> None:
    from fusion.analysis.states import main_states

    for path in main_states(args.summary, args.out_dir).values():
        print(f"wrote {path}")


def _cmd_figures(args) -> None:
    from fusion.analysis.figures import main_figures

    main_figures(
        args.summary,
        args.logs,
        args.out_dir,
        datasets=args.datasets,
        kernels=args.kernels,
        kernel_name=args.kernel_name,
    )


def _cmd_dynamics(args) -> None:
    from fusion.dynamics.workflow import DynamicsSpec, run_dynamics

    if not args.spec:
        raise ValueError("no dynamics spec given (pass --spec JSON or --spec @file.json)")
    run_dynamics(DynamicsSpec.from_json(args.spec))


def _cmd_dynamics_table(args) -> None:
    from fusion.dynamics.tables import dynamics_figures, dynamics_table

    for path in (*dynamics_table(args.analysis, args.tables_dir),
                 *dynamics_figures(args.analysis, args.figures_dir)):
        print(f"wrote {path}")


def _json_object(text: str) -> dict:
    """argparse type: a JSON object (bad text -> usage error naming the argument)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON ({err}): {text!r}") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f'expected a JSON object such as \'{{"num_channels": 8}}\', got {text!r}'
        )
    return value


def _atomic_numbers(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated atomic numbers, e.g. ``1,6,7,8,9``."""
    try:
        numbers = tuple(int(z) for z in text.split(","))
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated atomic numbers such as 1,6,7,8,9, got {text!r}"
        )
    return numbers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="list datasets, models and variants").set_defaults(func=_cmd_list)

    p = sub.add_parser("prepare", help="build a dataset family's cache (e.g. qm9)")
    p.add_argument("family", help="dataset family (qm9) or dataset key (qm9-U0)")
    p.add_argument("--cache-dir", default="resources")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser("data", help="manage raw benchmark files")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser(
        "import", help="copy pinned benchmark files from a folder into the cache, sha256-checked"
    )
    p.add_argument("folder", help="folder holding e.g. rmd17-npz/*.npz or dataset_acac/*.xyz")
    p.add_argument("--cache-dir", default="resources")
    p.set_defaults(func=_cmd_data_import)

    for name, func, text in (
        ("composition", _cmd_composition, "fit the composition baseline"),
        ("train", _cmd_train, "train one model (resumes from its checkpoint)"),
        ("evaluate", _cmd_evaluate, "test a trained run on a transfer dataset (trained_as)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--spec", help="run spec as JSON, or @file.json")
        p.set_defaults(func=func)

    p = sub.add_parser("params", help="print a model's trainable parameter count")
    p.add_argument("--model", required=True)
    p.add_argument("--variant", default="baseline")
    p.add_argument(
        "--hparams", type=_json_object, help="hyperparameters as JSON (defaults otherwise)"
    )
    p.add_argument(
        "--elements", type=_atomic_numbers, default="1,6,7,8,9",
        help="atomic numbers, comma separated",
    )
    p.set_defaults(func=_cmd_params)

    p = sub.add_parser("cards", help="dataset cards (source, license, units, split) as markdown")
    p.add_argument("datasets", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--cache-dir", default="resources", help="where the dataset caches are")
    p.set_defaults(func=_cmd_cards)

    p = sub.add_parser("aggregate", help="metrics.json files -> summary and comparison tables")
    p.add_argument("metrics", nargs="+")
    p.add_argument("--out-dir", required=True)
    p.add_argument(
        "--model-pages", nargs="*", default=[], help="models that get a models/<model>.html page"
    )
    p.add_argument("--study-page", help="the committed study.rst, shown first on the landing page")
    p.set_defaults(func=_cmd_aggregate)

    p = sub.add_parser("study", help="publish a finished study: runs, tables, figures")
    p.add_argument("--config", default="config/study.yaml", help="the study's workflow config")
    p.add_argument("--results", default="results", help="where the workflow wrote its runs")
    p.add_argument("--out-dir", default="results/study")
    p.add_argument("--wall-seconds", type=float, help="measured wall time of the workflow")
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser("readme", help="rewrite README.md's generated result tables")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--check", action="store_true", help="only check; fail when stale")
    p.set_defaults(func=_cmd_readme)

    p = sub.add_parser("states-table", help="summary.csv -> per-state errors (states.csv/md/html)")
    p.add_argument("--summary", required=True, help="summary.csv written by fusion aggregate")
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=_cmd_states_table)

    p = sub.add_parser("figures", help="summary table, logs and benchmark CSVs -> figures")
    p.add_argument("--summary", help="summary.csv (leave out to draw only --kernels)")
    p.add_argument("--logs", nargs="*", default=[])
    p.add_argument("--out-dir", required=True)
    p.add_argument("--datasets", nargs="*", help="datasets that get their own figures")
    p.add_argument("--kernels", nargs="*", default=[], help="kernel benchmark CSVs")
    p.add_argument("--kernel-name", default="kernel_speed", help="file stem of the kernel figure")
    p.set_defaults(func=_cmd_figures)

    p = sub.add_parser("dynamics", help="surface-hopping ensemble of a multi-state run (stilbene)")
    p.add_argument("--spec", help="dynamics spec as JSON, or @file.json (DynamicsSpec)")
    p.set_defaults(func=_cmd_dynamics)

    from fusion.dynamics.augment import add_commands as add_augment_commands

    add_augment_commands(sub)

    p = sub.add_parser("dynamics-table", help="analysis.json files -> dynamics table and figures")
    p.add_argument("analysis", nargs="+", help="analysis.json of fusion dynamics runs")
    p.add_argument("--tables-dir", required=True, help="where dynamics.csv/.md go")
    p.add_argument("--figures-dir", required=True, help="where dynamics_*.png/.svg go")
    p.set_defaults(func=_cmd_dynamics_table)
    return parser


def _os_error(err: OSError) -> str:
    """One line for an operating-system error, naming the path(s) involved."""
    what = err.strerror or str(err)
    if err.filename is None:
        return str(err)
    paths = f"{err.filename}" + (f" -> {err.filename2}" if err.filename2 else "")
    return f"{paths}: {what} (errno {err.errno})"


def _terminate(signum, frame):
    """SIGTERM (pre-emption, `kill`, Snakemake stopping a job) unwinds like an exception, so
    temporary files of interrupted writes are removed; finished files are untouched."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    args = build_parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        args.func(args)
    except (KeyError, ValueError, FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as err:
        # Expected operating-system errors: a full disk, a read-only folder, a file where a
        # folder should be, a name too long, a folder given as a file.
        print(f"error: {_os_error(err)}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        # Our own failures (diverged training, corrupt cache or checkpoint) already say
        # what went wrong and what was kept: one line, not a traceback.
        if not type(err).__module__.startswith("fusion."):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
