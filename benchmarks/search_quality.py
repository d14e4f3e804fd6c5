"""Does the search beat random sampling, and what does early stopping cost? Measured on
held-out test accuracy, which the search never sees.

For each task, sampler and seed, one study of ``--trials`` trials runs as ``cnnsearch
search`` would (same Objective, same worker loop). Afterwards every trained trial's stored
weights are scored on the test split. The figure of merit is the hypervolume of
(test error, latency) dominated up to a fixed reference point per task (Optuna's own
hypervolume code); "half" is the same study's first half of trials.

- ``default_half_vs_random_full``: the default sampler's half-budget hypervolume over random
  search's full-budget one (median over seeds). Goal: >= 1.
- ``es_compute_saved`` / ``es_hv_ratio``: random search with and without early stopping,
  same seeds: training seconds saved, and hypervolume kept (median of per-seed ratios).
  Random search because its candidates do not depend on results: on and off train the very
  same networks, so the difference is early stopping's alone (with TPE, stopped trials
  steer the sampler elsewhere and the comparison mixes two searches).
- ``kendall_tau``: validation accuracy after the search's brief training against test
  accuracy after ``finalize``'s longer training (``EPOCHS_FACTOR`` x, one seed), for
  ``--tau-trials`` trained architectures of one study: does the brief proxy rank networks right?

Prints one JSON line per task (and a per-run line on stderr as it goes).
    python benchmarks/search_quality.py                 # the full run (about 2 h on 2 CPU cores)
    python benchmarks/search_quality.py --live-quick    # real studies, under 15 minutes
    --keep DIR keeps the study databases; a rerun with the same DIR reuses finished studies

Replayed on tabular benchmarks (``benchmarks/tabulate.py``, ``benchmarks/replay.py``):
whole studies in seconds, every strategy with and without early stopping, N seeds:
    python benchmarks/search_quality.py --table benchmarks/tables/shapes.jsonl.gz --seeds 20
    python benchmarks/search_quality.py --quick         # the shipped tables, 20 seeds, minutes
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

# run as a script, this folder comes first on sys.path, where benchmarks/tabulate.py would
# shadow the `tabulate` package torch imports: take it off, and load the siblings by path
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402
from optuna._hypervolume import compute_hypervolume  # noqa: E402 (Optuna's exact hypervolume; benchmarks only)
from scipy.stats import kendalltau  # noqa: E402

from cnnsearch.artifacts import download_weights  # noqa: E402
from cnnsearch.build import build  # noqa: E402
from cnnsearch.data import load_data  # noqa: E402
from cnnsearch.early_stopping import Peer, rung_epochs, should_stop  # noqa: E402
from cnnsearch.evolution import EvolutionSampler  # noqa: E402
from cnnsearch.export import load_weights  # noqa: E402
from cnnsearch.finalize import EPOCHS_FACTOR, finalize  # noqa: E402
from cnnsearch.objective import Objective  # noqa: E402
from cnnsearch.recipe import EarlyStopping, load_recipe  # noqa: E402
from cnnsearch.report import trial_spec  # noqa: E402
from cnnsearch.samplers import SAMPLER_OPTIONS  # noqa: E402
from cnnsearch.storage import open_storage  # noqa: E402
from cnnsearch.study import open_study, run_worker  # noqa: E402
from cnnsearch.train import evaluate  # noqa: E402
from cnnsearch.trials import Status  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Tasks: each with a fixed hypervolume reference point (test error, latency ms). digits is
# saturated (most networks score 97-99%); shapes at 32x32 with 8 classes and heavy noise is
# where depth, width and pooling move test accuracy by 10+ points.
TASKS = {
    "digits": {
        "dataset": "digits", "data": {}, "space": "small-images.toml", "epochs": 6,
        "max_params": 200_000, "ref": (0.2, 1.0),
    },
    "shapes": {
        "dataset": "shapes", "data": {"n": 2400, "size": 16, "classes": 8, "noise": 0.35},
        "space": "small-images.toml", "epochs": 6, "max_params": 200_000, "ref": (0.9, 1.0),
    },
}

# Samplers by name, for the live (real-study) mode that measured the earlier figures: "tpe"
# was the recipe default then. The default now (evolution + early stopping) was picked on
# the tables (--quick) and is confirmed on real studies by benchmarks/confirm.py.
SAMPLERS = {
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True),
    "tpe-plain": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed, population_size=12),
    "gp": lambda seed: optuna.samplers.GPSampler(seed=seed),
    "evolution": lambda seed: EvolutionSampler(seed=seed, **SAMPLER_OPTIONS["evolution"]),
}


def recipe_text(task: dict, *, name: str, trials: int, seed: int, early: bool) -> str:
    data = "".join(f"{k} = {v}\n" for k, v in task["data"].items())
    return f"""name = "{name}"
space = "{ROOT}/spaces/{task['space']}"
dataset = "{task['dataset']}"
objectives = ["accuracy", "latency_ms"]
trials = {trials}
seed = {seed}
sampler = "random"
[data]
{data}
[train]
epochs = {task['epochs']}
device = "cpu"
[latency]
device = "cpu"
batch_size = 1
threads = 1
[limits]
max_params = {task['max_params']}
[early_stopping]
enabled = {'true' if early else 'false'}
"""


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (error, latency) points, both minimised, up to ``ref``."""
    inside = np.array([p for p in points if p[0] < ref[0] and p[1] < ref[1]], dtype=float)
    if not len(inside):
        return 0.0
    return float(compute_hypervolume(inside, np.array(ref, dtype=float)))


def test_accuracy(trial, recipe, test_data, weights: Path) -> float:
    """A trained trial's stored weights (downloaded to ``weights``) scored on the test split."""
    model = build(trial_spec(trial))
    download_weights(trial.user_attrs["weights"], recipe.artifacts, weights, what="weights")
    load_weights(model, weights)
    return evaluate(model, test_data.x_test, test_data.y_test, prepare=test_data.prepare)[1]


def run_study(tmp: Path, task_name: str, *, sampler: str, seed: int, trials: int, early: bool,
              test_data) -> dict:
    """One study; every trained trial scored on the test split from its stored weights."""
    task = TASKS[task_name]
    name = f"{task_name}-{sampler}-{seed}-{'es' if early else 'full'}"
    path = tmp / f"{name}.toml"
    path.write_text(recipe_text(task, name=name, trials=trials, seed=seed, early=early))
    recipe = load_recipe(path)
    objective = Objective.create(recipe)
    study = open_study(recipe, open_storage(recipe.storage))
    study.sampler = SAMPLERS[sampler](seed)
    if "data" not in study.user_attrs:  # as `cnnsearch search` records it: finalize checks it
        study.set_user_attr("data", objective.data.description())
    t0 = time.perf_counter()
    run_worker(study, objective, until=trials, infeasible_after=trials)
    wall = time.perf_counter() - t0
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row = {"number": t.number, "status": a.get("status"), "train_s": a.get("train_seconds", 0.0),
               "latency_ms": a.get("latency_ms"), "val": a.get("accuracy"), "curve": a.get("curve"),
               "steps_per_epoch": a.get("steps_per_epoch")}
        if a.get("status") == Status.OK:
            row["test"] = test_accuracy(t, recipe, test_data, tmp / f"{name}-{t.number}.safetensors")
        rows.append(row)

    def hv(limit: int) -> float:
        return hypervolume([(1 - r["test"], r["latency_ms"]) for r in rows
                            if "test" in r and r["number"] < limit], task["ref"])

    result = {"task": task_name, "sampler": sampler, "seed": seed, "early": early, "wall_s": round(wall, 1),
              "train_s": round(sum(r["train_s"] for r in rows), 2), "hv_full": hv(trials), "hv_half": hv(trials // 2),
              "trained": sum("test" in r for r in rows),
              "stopped": sum(r["status"] == Status.EARLY_STOPPED for r in rows),
              "best_test": max((r["test"] for r in rows if "test" in r), default=0.0)}
    print(json.dumps(result), file=sys.stderr, flush=True)
    result["_study"], result["_recipe"], result["_rows"] = study, recipe, rows
    return result


def replay_early_stopping(rows: list[dict], *, epochs: int, ref, margin: float, keep: float,
                          rungs: tuple[float, ...]) -> tuple[float, float]:
    """Early stopping replayed on a study that ran without it: (share of training seconds
    saved, hypervolume kept). Exact for random search, whose candidates do not depend on
    results, and a seeded CPU training, whose stopped run equals the full run's first epochs:
    each trial meets the earlier trials as they would have ended (stopped ones cut short)."""
    stops = rung_epochs(epochs, rungs, EarlyStopping.min_epoch)
    done, spent, total, kept = [], 0.0, 0.0, []
    for r in sorted(rows, key=lambda r: r["number"]):
        if not r.get("curve") or "test" not in r:
            continue
        curve, per_epoch = r["curve"], r["train_s"] / len(r["curve"])
        ended = len(curve)
        for e in sorted(stops):
            if should_stop((r["latency_ms"],), curve[e - 1], epoch=e, steps=e * r["steps_per_epoch"], peers=done,
                           margin=margin, keep=keep):
                ended = e
                break
        total += r["train_s"]
        spent += per_epoch * ended
        done.append(Peer((r["latency_ms"],), tuple(curve[:ended]), r["steps_per_epoch"]))
        if ended == len(curve):
            kept.append((1 - r["test"], r["latency_ms"]))
    full = hypervolume([(1 - r["test"], r["latency_ms"]) for r in rows if "test" in r], ref)
    return 1 - spent / total if total else 0.0, hypervolume(kept, ref) / full if full else math.nan


def rank_correlation(run: dict, count: int) -> tuple[float, int]:
    """Kendall tau between the search's validation accuracy and finalize's test accuracy for
    ``count`` trained trials of one study, spread over its accuracy range."""
    study, recipe = run["_study"], run["_recipe"]
    trained = sorted((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("status") == Status.OK),
                     key=lambda t: t.user_attrs["accuracy"])
    if count < 2:
        raise SystemExit("--tau-trials: a rank correlation needs at least 2 trials")
    if len(trained) > count:  # evenly spaced by rank: the whole range, not only the good ones
        trained = [trained[round(i * (len(trained) - 1) / (count - 1))] for i in range(count)]
    val, test = [], []
    for t in trained:
        _, final = finalize(study, recipe, which=str(t.number), seeds=1)
        val.append(t.user_attrs["accuracy"])
        test.append(final["test_accuracy_mean"])
    tau = kendalltau(val, test).statistic
    return (round(float(tau), 3) if tau == tau else math.nan), len(val)


def median(values):
    return round(statistics.median(values), 5) if values else math.nan


def run_task(tmp: Path, task_name: str, *, samplers: list[str], default: str, seeds: int, trials: int,
             es: bool, tau_trials: int) -> dict:
    test_data = load_data(TASKS[task_name]["dataset"], **TASKS[task_name]["data"])
    runs = {s: [run_study(tmp, task_name, sampler=s, seed=seed, trials=trials, early=False, test_data=test_data)
                for seed in range(seeds)] for s in samplers}
    out = {"task": task_name, "seeds": seeds, "trials": trials, "epochs": TASKS[task_name]["epochs"],
           "ref": list(TASKS[task_name]["ref"]), "default_sampler": default}
    for s, rs in runs.items():
        out[f"hv_{s}_full"] = median([r["hv_full"] for r in rs])
        out[f"hv_{s}_half"] = median([r["hv_half"] for r in rs])
    out["hv_random_full"] = out.get("hv_random_full", math.nan)
    out["hv_default_half"] = out.get(f"hv_{default}_half", math.nan)
    out["hv_default_full"] = out.get(f"hv_{default}_full", math.nan)
    # per seed, then the median: how often the half budget catches up, not one lucky seed
    if "random" in runs:
        for s, rs in runs.items():
            ratios = [r["hv_half"] / q["hv_full"] for r, q in zip(rs, runs["random"]) if q["hv_full"]]
            out[f"{s}_half_vs_random_full"] = median(ratios)
            out[f"{s}_half_reaches_random_full"] = f"{sum(x >= 1 for x in ratios)}/{len(ratios)}"
        out["default_half_vs_random_full"] = out.get(f"{default}_half_vs_random_full", math.nan)
    out["train_seconds"] = {s: round(statistics.fmean(r["train_s"] for r in rs), 1) for s, rs in runs.items()}
    out["best_test"] = {s: median([r["best_test"] for r in rs]) for s, rs in runs.items()}
    if "random" in runs:  # early-stopping settings replayed on the random-search studies
        sweep = []
        for rungs in ((1 / 3, 2 / 3), (1 / 3,), (0.5,), (1 / 6, 1 / 3, 2 / 3)):
            for keep in (1 / 3, 0.5):
                for margin in (0.0, 0.02, 0.05):
                    got = [replay_early_stopping(r["_rows"], epochs=TASKS[task_name]["epochs"], ref=TASKS[task_name]["ref"],
                                                 margin=margin, keep=keep, rungs=rungs) for r in runs["random"]]
                    sweep.append({"rungs": [round(f, 3) for f in rungs], "keep": round(keep, 3), "margin": margin,
                                  "saved": median([g[0] for g in got]), "hv_ratio": median([g[1] for g in got]),
                                  "hv_ratio_min": round(min(g[1] for g in got), 4)})
        out["es_replay"] = sweep
    if es:
        on = [run_study(tmp, task_name, sampler="random", seed=seed, trials=trials, early=True, test_data=test_data)
              for seed in range(seeds)]
        off = runs.get("random") or [run_study(tmp, task_name, sampler="random", seed=seed, trials=trials,
                                               early=False, test_data=test_data) for seed in range(seeds)]
        out["es_compute_saved"] = round(1 - sum(r["train_s"] for r in on) / sum(r["train_s"] for r in off), 3)
        ratios = [a["hv_full"] / b["hv_full"] for a, b in zip(on, off) if b["hv_full"]]
        out["es_hv_ratio"] = median(ratios)
        out["es_hv_ratio_min"] = round(min(ratios), 4) if ratios else math.nan
        out["es_trials_stopped"] = sum(r["stopped"] for r in on)
    if tau_trials:
        out["kendall_tau"], out["kendall_n"] = rank_correlation((runs.get("random") or runs[default])[0], tau_trials)
        out["kendall_final_epochs"] = EPOCHS_FACTOR * TASKS[task_name]["epochs"]
    return out


def sibling(name: str):
    """benchmarks/NAME.py, loaded by path (not importable by name: see the sys.path note above)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SHIPPED_TABLES = ("shapes.jsonl.gz", "shapes-hard.jsonl.gz")  # 584 architectures each (tabulate.py)


def replay_tables(paths: list[str], *, strategies: list[str], seeds: int, budgets: list[int]) -> None:
    """``--table`` / ``--quick``: one JSON line per table (benchmarks/replay.py)."""
    tabulate, replay = sibling("tabulate"), sibling("replay")
    for path in paths:
        header, rows = tabulate.read_table(Path(path))
        if header is None:
            raise SystemExit(f"error: {path}: no such table (benchmarks/tabulate.py makes one)")
        out = replay.run_table(header["task"], replay.Table(header, rows), strategies=strategies, seeds=seeds,
                               budgets=budgets)
        print(json.dumps({"benchmark": "search_quality", "table": str(path), **out}), flush=True)
        print(replay.markdown(out) + "\n", file=sys.stderr, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="replay on the shipped tables (benchmarks/tables/shapes*.jsonl.gz): 20 seeds, minutes")
    parser.add_argument("--table", action="append", help="replay on this tabular benchmark (repeatable)")
    parser.add_argument("--strategies", default="random,tpe,tpe-independent,evolution", help="replay strategies")
    parser.add_argument("--budgets", default="25,50,100,200", help="replay budgets (trials)")
    parser.add_argument("--live-quick", action="store_true", help="real studies: 2 seeds, 16 trials, shapes only")
    parser.add_argument("--tasks", default="digits,shapes")
    parser.add_argument("--samplers", default="random,tpe,nsga2,gp")
    parser.add_argument("--default", default="tpe", help="live mode: the sampler its figures call the default")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--tau-trials", type=int, default=10)
    parser.add_argument("--no-es", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--keep", help="keep the studies in this folder (a rerun reuses finished ones)")
    args = parser.parse_args()
    if args.quick or args.table:
        tables = args.table or [str(HERE / "tables" / name) for name in SHIPPED_TABLES]
        replay = sibling("replay")
        default = replay.DEFAULT.split("+")[0]  # a sampler: each strategy runs with and without es
        if default not in replay.STRATEGIES:
            parser.error(f"the default sampler {default!r} has no replay strategy: add it to replay.STRATEGIES")
        if not {"random", default} <= set(args.strategies.split(",")):  # the figures compare the two
            parser.error(f"--strategies must include random and {default}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        replay_tables(tables, strategies=args.strategies.split(","), seeds=20 if args.quick else args.seeds,
                      budgets=[int(b) for b in args.budgets.split(",")])
        return
    if args.live_quick:
        args.tasks, args.samplers, args.seeds, args.trials, args.tau_trials = "shapes", "random,tpe", 2, 16, 0
    # one thread: on a shared 2-core machine two threads spin against each other's load and
    # a trial can take 30x longer; one thread gives steady, comparable training seconds
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        for task in args.tasks.split(","):
            out = run_task(tmp, task, samplers=args.samplers.split(","), default=args.default,
                           seeds=args.seeds, trials=args.trials, es=not args.no_es, tau_trials=args.tau_trials)
            print(json.dumps({"benchmark": "search_quality", **out}), flush=True)


if __name__ == "__main__":
    main()
