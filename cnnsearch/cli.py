"""The ``cnnsearch`` command line. Each command returns an exit code:

0 success; 2 bad input (one ``error: ...`` line, no traceback); 1 internal fault.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from . import latency_server
from .cli_args import Parser, UsageError, checked_seed, workers_count
from .cli_format import human
from .cli_show import cmd_show
from .errors import CnnSearchError, FailingTrials, RecipeError
from .interrupt import ctrl_c_stops
from .shapes import check
from .spec import ArchSpec


def _outputs(*paths) -> None:
    """Make the folders that output files go into (after every input was validated), or
    say in one line why they cannot be."""
    for path in paths:
        if path == "":  # not "no file": the empty path, which no file can be written to
            raise UsageError("an output path is empty; give a file name")
        if path:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"{path}: cannot create its folder ({exc.strerror})") from None
            if Path(path).is_dir():
                raise UsageError(f"{path}: is a folder; give a file name")


def cmd_export(args) -> int:
    from .export import export_files

    if args.spec and args.recipe:
        raise UsageError("give a recipe (with --trial) or --spec, not both")
    if not (args.spec or args.recipe or (args.storage and args.study)):
        raise UsageError("give --spec SPEC.json, a recipe (.toml), or --storage URL --study NAME")
    if args.spec:
        spec = ArchSpec.from_json(args.spec)
        _outputs(args.output, args.weights)
        out = export_files(spec, args.output, class_name=args.class_name, weights=args.weights,
                           seed=checked_seed(args.seed, bits=64))
        what = f"{spec.summary} ({check(spec).params:,} params)"
    else:
        from .exporting import export_trial

        recipe, study = _study_of(args, weights=True)
        _outputs(args.output, args.weights)
        out, what = export_trial(study, which=args.trial, artifacts=recipe.artifacts, output=args.output,
                                 class_name=args.class_name, weights=args.weights)
    print(f"wrote {out}" + (f" and {args.weights}" if args.weights else "") + f": {what}")
    return 0


def cmd_search(args) -> int:
    from .recipe import resolve_recipe
    from .runner import search

    if args.workers < 1 or (args.trials is not None and args.trials < 1):
        raise UsageError("--workers and --trials must be at least 1")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UsageError(f"--timeout: {args.timeout} is not a positive number of seconds")
    recipe = resolve_recipe(args.recipe, args.storage, args.study)
    artifacts = None
    if args.artifacts is not None:  # a folder relative to the working directory, or s3://bucket/prefix
        from dataclasses import replace

        from .artifacts import parse_location

        try:
            artifacts = parse_location(args.artifacts, Path.cwd())
        except RecipeError as exc:
            raise UsageError(f"--{exc}") from None
        if not artifacts:
            raise UsageError("--artifacts: give a folder or an s3://bucket/prefix URL")
        recipe = replace(recipe, artifacts=artifacts)
    if args.baseline:
        from dataclasses import replace

        from .baselines import check_sampler, load_baseline

        extra = tuple(load_baseline(p, base=Path.cwd(), where=f"--baseline {p}") for p in args.baseline)
        recipe = replace(recipe, baselines=recipe.baselines + extra)
        check_sampler(recipe.sampler, recipe.baselines)
    return search(args.recipe, recipe, trials=args.trials, timeout=args.timeout, workers=args.workers,
                  until=args.until, worker_index=args.worker_index, quiet=args.quiet,
                  worker_id=args.worker_id, artifacts=artifacts)


def _study_of(args, *, weights: bool = False):
    """The recipe and its existing study; with ``weights``, the recipe's artifacts are where
    the study keeps its weights (recorded when it was made)."""
    from dataclasses import replace

    import optuna

    from .artifacts import settle
    from .recipe import resolve_recipe
    from .storage import load_existing_study

    recipe = resolve_recipe(args.recipe, args.storage, args.study)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = load_existing_study(recipe.storage, recipe.name)
    if weights:
        recipe = replace(recipe, artifacts=settle(study.user_attrs.get("artifacts"), recipe.artifacts))
    return recipe, study


def cmd_status(args) -> int:
    from .report import SCORE_LABELS, leaderboard, quality_metric, trials_frame

    recipe, study = _study_of(args)
    df = trials_frame(study)
    if args.csv:
        if args.json:
            raise UsageError("--csv and --json: give one")
        df.to_csv(sys.stdout, index=False)
        return 0
    by = quality_metric(study.metric_names)
    board = leaderboard(df, by=by)
    counts = df["status"].value_counts().to_dict()
    if args.json:
        print(json.dumps({
            "study": recipe.name, "storage": recipe.storage,
            "artifacts": study.user_attrs.get("artifacts", recipe.artifacts),  # where its weights live
            "objectives": study.metric_names,
            "trials": len(df), "counts": counts,
            "pareto": [int(n) for n in df.loc[df["pareto"], "trial"]],
            "leaderboard": json.loads(board.to_json(orient="records", date_format="iso")),
        }, indent=2))
        return 0
    if df.empty:
        print(f"study {recipe.name!r} ({recipe.storage}): no trials yet (`cnnsearch search` runs them)")
        return 0
    print(f"study {recipe.name!r} ({recipe.storage}): {len(df)} trials: "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if board.empty:
        print("no feasible trial has finished training yet")
        return 0
    balanced = by == "balanced_accuracy"  # the study's score: mean per-class recall, validation and test alike
    print(f"{'rank':>4} {'trial':>5} {'val ' + SCORE_LABELS[by]:>8} {'test (finalized)':>16} "
          f"{'latency':>10} {'params':>10} {'FLOPs':>7}  pareto  architecture")
    for row in board.head(args.top).itertuples():
        test = ("-" if row.test_mean != row.test_mean else f"{row.test_balanced_mean:.4f}" if balanced
                else f"{row.test_mean:.4f}+-{row.test_std:.4f}")
        print(f"{row.rank:>4} {row.trial:>5} {getattr(row, by):>8.4f} {test:>16} {row.latency_ms:>7.3f} ms "
              f"{int(row.params):>10,} {human(row.flops):>7}  {'  *   ' if row.pareto else '      '}  {row.summary}"
              + (f"  [baseline {row.baseline}]" if row.baseline else ""))
    print(("val bal: balanced accuracy (mean per-class recall) after " if balanced else "val acc: ")
          + "the search's brief training, on the validation split that chose the front; "
          "test: `cnnsearch finalize` (longer training, several seeds, the held-out test split)")
    return 0


def cmd_finalize(args) -> int:
    from .artifacts import check_writable
    from .finalize import DEFAULT_SEEDS, finalize
    from .recipe import check_runnable

    recipe, study = _study_of(args, weights=True)
    check_runnable(recipe, timing=False)  # finalize times nothing: its latency server may be off
    check_writable(recipe.artifacts, create="artifacts" not in study.user_attrs or recipe.storage.startswith("sqlite"))
    seeds = args.seeds if args.seeds is not None else DEFAULT_SEEDS
    if not args.json:
        print(f"finalizing trial {args.trial} of {recipe.name!r}: {seeds} seeds, "
              f"{args.epochs or f'3 x {recipe.train.epochs}'} epochs, scored on the held-out test split")

    def on_seed(seed, test_acc, val_acc, seconds):
        if not args.json:
            print(f"  seed {seed}: test accuracy {test_acc:.4f} (validation {val_acc:.4f}) in {seconds:.1f} s",
                  flush=True)

    number, final = finalize(study, recipe, which=args.trial, epochs=args.epochs, seeds=seeds,
                             progress=not args.json and sys.stderr.isatty(), on_seed=on_seed)
    if args.json:
        print(json.dumps({"trial": number, **final}, indent=2))
    else:
        print(f"trial {number}: test accuracy {final['test_accuracy_mean']:.4f} +- "
              f"{final['test_accuracy_std']:.4f} over {final['seeds']} seeds ({final['epochs']} epochs); "
              f"recorded as user_attrs['final']")
    return 0


def cmd_demo(args) -> int:
    from .recipe import resolve_recipe
    from .runner import search

    recipe_path = str(Path(__file__).resolve().parent.parent / "studies" / "digits.toml")
    if not Path(recipe_path).exists():
        raise UsageError(f"{recipe_path} is missing: run the demo from a cnnsearch checkout")
    recipe = resolve_recipe(recipe_path, None, None)
    try:
        code = search(recipe_path, recipe, trials=None, timeout=None, workers=1, until=None,
                      worker_index=0, quiet=False)
        if code:
            return code
        print()
        code = cmd_finalize(make_parser().parse_args(["finalize", recipe_path, "--trial", "best"]))
    except RecipeError as exc:  # e.g. a demo study left by an older cnnsearch
        raise RecipeError(f"{exc} (the demo's study is {recipe.storage[len('sqlite:///'):]}: "
                          "delete it to start the demo afresh)") from None
    if code:
        return code
    print()
    status = make_parser().parse_args(["status", recipe_path, "--top", "10"])
    cmd_status(status)
    out = Path(recipe_path).parent / "exports"
    out.mkdir(exist_ok=True)
    export = make_parser().parse_args(["export", recipe_path, "--trial", "best", "-o", str(out / "digits_best.py"),
                                       "--weights", str(out / "digits_best.safetensors")])
    print()
    return cmd_export(export)


def _default_report(paths: list[str], name: str) -> Path:
    """``NAME_report.html`` beside the first recipe, or in the working directory for a study
    given by --storage and --study (it has no file to sit beside)."""
    return (Path(paths[0]).parent if paths else Path.cwd()) / f"{name}_report.html"


def cmd_report(args) -> int:
    import optuna

    from .recipe import resolve_recipe
    from .report_page import write_report
    from .storage import load_existing_study

    if not args.recipes and not (args.storage and args.study):
        raise UsageError("give one or more recipes, or --storage URL --study NAME [--study NAME ...]")
    if args.study and len(args.recipes) > 1:  # whose storage would each --study be in?
        raise UsageError("--study goes with one recipe or with --storage, not with several recipes")
    if args.recipes and args.study:  # these studies, in the recipe's storage (or --storage)
        recipes = [resolve_recipe(args.recipes[0], args.storage, name) for name in args.study]
    else:
        recipes = [resolve_recipe(path, args.storage, None) for path in args.recipes]
        recipes += [resolve_recipe(None, args.storage, name) for name in (args.study or [])]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    studies = [load_existing_study(r.storage, r.name) for r in recipes]
    out = Path(args.output or _default_report(args.recipes, recipes[0].name))
    _outputs(out)
    written = write_report(studies, out)
    print(f"wrote {written[0]} ({len(studies)} studies) and " + ", ".join(str(p) for p in written[1:]))
    return 0


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cnnsearch", description="Search CNN architectures for image classification: "
                    "shape-checked networks, a measured Pareto front of accuracy against latency, "
                    "standalone PyTorch export.",
                    epilog="Exit codes: 0 success; 1 a failure mid-run or an internal fault; "
                           "2 bad input (one 'error: ...' line); 130 interrupted.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    _add_show(sub)
    _add_search(sub)
    _add_results(sub)
    _add_finalize(sub)
    p = sub.add_parser("latency-server", help="time ONNX models on this machine for studies elsewhere "
                                              "(GET /device, POST /measure?shape=...; runs without torch)")
    latency_server.add_arguments(p)
    p.set_defaults(func=latency_server.serve)
    p = sub.add_parser("demo", help="the embedded default end to end: digits study, status, export")
    p.set_defaults(func=cmd_demo)
    _add_export(sub)
    return parser


def _add_show(sub) -> None:
    """``show``: a spec's table, a space's samples, a dataset's classes."""
    p = sub.add_parser("show", help="shape table of a spec (.json), samples of a space (.toml), or a dataset's "
                                    "classes (digits, shapes, folder:PATH, CIFAR10, ...)")
    p.add_argument("target")
    p.add_argument("--sample", type=int, default=10, help="samples to draw from a space")
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed for a space's samples")
    p.add_argument("--input", default="3,32,32", help="C,H,W of the images (spaces only)")
    p.add_argument("--classes", type=int, default=10, help="number of classes (spaces only)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)


def _add_search(sub) -> None:
    """``search``: make or resume a study and run trials."""
    p = sub.add_parser("search", help="create or resume a study and run trials")
    p.add_argument("recipe", nargs="?", help="study recipe (.toml)")
    p.add_argument("--trials", type=int, help="run this many more trials (default: up to the recipe's budget)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--workers", type=workers_count, default=1,
                   help="worker processes on this machine, or auto (runner.auto_workers: two per GPU, "
                        "else one per 4 cores)")
    p.add_argument("--storage", help="Optuna storage URL (overrides the recipe's)")
    p.add_argument("--study", help="study name: with --storage alone, the recipe stored in that study is "
                                       "used; beside a recipe, that study is made or resumed with the recipe")
    p.add_argument("--artifacts", metavar="FOLDER|s3://BUCKET/PREFIX",
                   help="where trained weights go when the study is made (overrides the recipe's; an "
                        "existing study keeps its own); s3:// takes AWS_ENDPOINT_URL and AWS credentials")
    p.add_argument("--until", type=int, help=argparse.SUPPRESS)  # set by the worker launcher
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--worker-id", help="this worker's name, unique across machines (seeds its sampler; "
                                       "search/worker.sh sets it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, one line per trial")
    p.add_argument("--baseline", action="append", metavar="SPEC.json",
                   help="a known network to run as a trial of the study (once per study; repeatable); "
                        "its input and classes come from the data")
    p.set_defaults(func=cmd_search)


def _add_results(sub) -> None:
    """``status`` and ``report``: a study's results."""
    p = sub.add_parser("status", help="leaderboard and Pareto set of a study")
    p.add_argument("recipe", nargs="?")
    p.add_argument("--storage")
    p.add_argument("--study")
    p.add_argument("--top", type=int, default=20, help="rows of the leaderboard to print")
    p.add_argument("--json", action="store_true")
    p.add_argument("--csv", action="store_true", help="every trial as CSV (cnnsearch.trials_frame's columns)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("report", help="offline HTML report: Pareto plot, history, importances, tables")
    p.add_argument("recipes", nargs="*", help="one or more study recipes (.toml): compared on one plot")
    p.add_argument("-o", "--output", help="HTML file (default: <first study>_report.html beside its recipe, "
                                              "or here with --storage)")
    p.add_argument("--storage")
    p.add_argument("--study", action="append", help="study name (with --storage); repeat to compare")
    p.set_defaults(func=cmd_report)


def _add_finalize(sub) -> None:
    """``finalize``: retrain a trial longer, several seeds, scored on the test split."""
    p = sub.add_parser("finalize", help="retrain a trial from scratch, longer, several seeds; score it on "
                                        "the held-out test split")
    p.add_argument("recipe", nargs="?", help="study recipe (.toml)")
    p.add_argument("--trial", default="best", help="best, fastest or a trial number")
    p.add_argument("--epochs", type=int, help="training epochs (default: 3x the recipe's)")
    p.add_argument("--seeds", type=int, help="independent trainings, seeds 0..S-1 (default 3)")
    p.add_argument("--json", action="store_true", help="print the recorded result as JSON")
    p.add_argument("--storage", help="Optuna storage URL (instead of the recipe's)")
    p.add_argument("--study", help="study name (with --storage)")
    p.set_defaults(func=cmd_finalize)


def _add_export(sub) -> None:
    """``export``: standalone code and weights of a spec or a trial."""
    p = sub.add_parser("export", help="standalone PyTorch code (+ safetensors weights) of a spec or trial")
    p.add_argument("recipe", nargs="?", help="study recipe (.toml) whose trial to export")
    p.add_argument("--spec", help="export this spec (.json) instead of a study's trial")
    p.add_argument("--trial", default="best", help="best, fastest or a trial number (with a recipe)")
    p.add_argument("-o", "--output", required=True, help="the .py file to write")
    p.add_argument("--class-name", default="Net", help="the exported module's class name")
    p.add_argument("--weights", help="also write weights (.safetensors): the trial's trained ones, "
                                     "or freshly initialised ones for --spec")
    p.add_argument("--seed", type=int, default=0, help="initialisation seed for --spec --weights")
    p.add_argument("--storage", help="Optuna storage URL (instead of the recipe's)")
    p.add_argument("--study", help="study name (with --storage)")
    p.set_defaults(func=cmd_export)


def main(argv: list[str] | None = None) -> int:
    try:
        args = make_parser().parse_args(argv)
        try:
            with ctrl_c_stops():
                return args.func(args)
        except OSError as exc:  # an output the OS refuses (a full disk, /proc, permissions): no traceback
            if exc.filename is None:
                raise
            raise UsageError(f"{exc.filename}: {exc.strerror or exc}") from None
    except CnnSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except FailingTrials as exc:  # not bad input: the machine or the code is failing
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `cnnsearch status --csv | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 1
    except KeyboardInterrupt:  # Optuna has already marked the running trial FAIL
        print("error: interrupted", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Not `return 130`: CPython 3.11 exits by SIGINT anyway when the interrupt was raised
        # inside exec() of a string (as in torch's lazy `import torch._dynamo` on the first
        # optimizer), even though it was caught here. End with 130 every time.
        os._exit(130)


if __name__ == "__main__":
    sys.exit(main())
