"""The evaluation commands: ``eval``, ``sweep``, ``report``."""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

from .options import (
    build_config,
    check_method,
    check_not_a_file,
    dataset_options,
    eval_options,
    eval_settings,
    fit_snap,
    load,
    log,
    method_options,
    model_options,
    output_options,
    parse_grid,
)


def cmd_eval(args: argparse.Namespace) -> int:
    from ..eval.datasets import load_dataset
    from ..eval.runner import evaluate
    from ..eval.tables import report

    check_method(args)
    check_not_a_file(args.out, "--out")
    settings = eval_settings(args)
    dataset = load_dataset(args.dataset, args.format, args.limit, args.ids)  # validates before loading the model
    if dataset.skipped:
        print(f"skipped {len(dataset.skipped)} invalid record(s): " + "; ".join(dataset.skipped[:5]),
              file=sys.stderr)
    model, tok = load(args)
    cfg = build_config(args, model)
    out = evaluate(model, tok, dataset, cfg, args.out, settings=settings, label=args.label,
                   cache_dir=args.cache_dir, show_progress=not args.quiet)
    print(report([out]))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from ..eval.datasets import load_dataset
    from ..eval.plots import plots
    from ..eval.runner import evaluate
    from ..eval.tables import pareto, report

    check_method(args)
    check_not_a_file(args.out, "--out")
    settings = eval_settings(args)
    dataset = load_dataset(args.dataset, args.format, args.limit, args.ids)
    model, tok = load(args)
    base = build_config(args, model)
    configs = []
    for combo in itertools.product(*[values for _, values in args.grid]):  # every setting checked before the work
        over = {key: v for (key, _), v in zip(args.grid, combo)}
        configs.append((",".join(f"{k}={v}" for k, v in over.items()), base.with_overrides(fit_snap(base, over))))
    dirs = []
    for name, cfg in configs:
        log.info("sweep: %s", name)
        dirs.append(evaluate(model, tok, dataset, cfg, Path(args.out) / name.replace("/", "_"), settings=settings,
                             label=name or cfg.method, cache_dir=args.cache_dir, show_progress=not args.quiet))
    print(report(dirs))
    print()
    print(pareto(dirs))
    for path in plots(dirs, Path(args.out) / "plots"):
        print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from ..eval.plots import plots
    from ..eval.tables import pareto, report

    paired = not args.all_rows
    print(report(args.runs, paired))
    if len(args.runs) > 1:
        print()
        print(pareto(args.runs, paired))
    if not args.no_plots:
        for path in plots(args.runs, args.plots or Path(args.runs[0]) / "plots", paired):
            print(f"wrote {path}")
    return 0


def _run_parser(sub: Any, name: str, out_help: str, **kw: Any) -> argparse.ArgumentParser:
    """A command that evaluates on a dataset into ``--out``: the model, method, dataset and scoring options."""
    sp = sub.add_parser(name, **kw)
    model_options(sp)
    method_options(sp)
    dataset_options(sp)
    sp.add_argument("--out", required=True, metavar="DIR", help=out_help)
    eval_options(sp)
    return sp


def add_commands(sub: Any) -> None:
    ev = _run_parser(sub, "eval", "run directory (run.json + rows.jsonl)",
                     help="evaluate a method on a benchmark file (resumable JSONL rows + table)",
                     description="For each record: answer before, edit, answer the question / paraphrases / "
                     "sub-questions, score, revert (checked bitwise). Rows stream to OUT/rows.jsonl; rerunning "
                     "the same command resumes after the last finished record.")
    ev.add_argument("--label", help="name of this run in reports (default: method, + when chunked)")
    ev.set_defaults(func=cmd_eval)

    sw = _run_parser(sub, "sweep", "directory of the sweep (one run directory per setting, and plots/)",
                     help="evaluate a grid of settings; tables, Pareto front and plots",
                     description="Run `anyedit eval` for every combination of --grid values (resumable, one "
                     "directory each under --out), then print the tables and the efficacy/locality Pareto front "
                     "and write the plots to OUT/plots.")
    sw.add_argument("--grid", action="append", required=True, type=parse_grid, metavar="KEY=V1,V2",
                    help="config field and values, e.g. --grid chunking.window=10,20,40 (repeatable)")
    sw.set_defaults(func=cmd_sweep)

    rp = sub.add_parser("report", help="tables (and plots) from one or more eval runs, side by side",
                        description="Print the paper-style tables of eval runs and write the plots: score vs. "
                        "answer length, per-category bars, the efficacy/locality front and (for runs differing only "
                        "in chunk size) the chunk-size sweep.")
    rp.add_argument("runs", nargs="+", help="run directories written by `anyedit eval --out`, or directories holding "
                    "them (an `anyedit sweep --out` directory)")
    rp.add_argument("--plots", help="directory for the PNG plots (default: RUN/plots, RUN the first directory given)")
    rp.add_argument("--no-plots", action="store_true", help="print the tables only")
    rp.add_argument("--all-rows", action="store_true", help="use every row of each run; by default runs over the "
                    "same dataset are compared on the records all of them have")
    output_options(rp)
    rp.set_defaults(func=cmd_report)
