"""Do mobile blocks buy accuracy at low latency on this CPU? mobile.toml against compact.toml.

Both spaces get the same budget: one TPE study each, the same trials, on the procedural
``shapes`` set at 32x32 (the search-quality benchmark's harder task), latency at batch 1 on
one CPU thread. Every trained network is timed in eager torch and in onnxruntime, so each
space has a Pareto front (validation accuracy up, latency down) per runtime. Reported per
runtime: each front, the best accuracy within latency budgets set by the conv front (its
fastest network x1, x1.5, x2 and its median), and the hypervolume of each front under a
shared reference (the slower space's slowest trained network).

Prints one JSON line.   python benchmarks/mobile_vs_conv.py [--trials 24] [--epochs 4] [--n 3000]
"""

import argparse
import json
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import optuna

from cnnsearch import build
from cnnsearch.latency import measure
from cnnsearch.objective import Objective
from cnnsearch.recipe import load_recipe
from cnnsearch.spec import ArchSpec
from cnnsearch.storage import open_storage
from cnnsearch.study import open_study, record_data, run_worker
from cnnsearch.trials import Status

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from search_overhead import hypervolume  # noqa: E402

RUNTIMES = ("torch", "onnxruntime")


def front(points):
    """Pareto-optimal (accuracy, latency) points, fastest first."""
    out, best = [], -1.0
    for acc, lat in sorted(points, key=lambda p: (p[1], -p[0])):
        if acc > best:
            out.append((acc, lat))
            best = acc
    return out


def run_space(space: str, folder: Path, args) -> list[dict]:
    name = Path(space).stem.replace("-", "_")
    recipe_path = folder / f"{name}.toml"
    recipe_path.write_text(textwrap.dedent(f"""
        name = "{name}"
        space = "{ROOT / 'spaces' / space}"
        dataset = "shapes"
        trials = {args.trials}
        seed = {args.seed}
        sampler = "tpe"  # as the figures were measured (the default then)
        [data]
        n = {args.n}
        size = 32
        classes = 6
        [train]
        epochs = {args.epochs}
        device = "cpu"
        [limits]
        max_params = 1_000_000
        [early_stopping]
        enabled = false
    """))
    recipe = load_recipe(recipe_path)
    study = open_study(recipe, open_storage(recipe.storage))
    objective = Objective.create(recipe)
    record_data(study, objective.data.description())
    start = time.perf_counter()
    run_worker(study, objective, until=args.trials, infeasible_after=args.trials,
               max_consecutive_failures=5)
    seconds = time.perf_counter() - start
    trained = []
    for t in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        if t.user_attrs.get("status") != Status.OK.value:
            continue
        spec = ArchSpec.from_dict(t.user_attrs["arch"])
        model = build(spec)
        ort = measure(model, spec.input, runtime="onnxruntime").median_ms
        trained.append({"trial": t.number, "summary": spec.summary, "accuracy": t.user_attrs["accuracy"],
                        "params": t.user_attrs["params"], "flops": t.user_attrs["flops"],
                        "torch": t.user_attrs["latency_ms"], "onnxruntime": ort})
    print(f"{space}: {len(trained)} trained of {args.trials} in {seconds:.0f} s", file=sys.stderr)
    return trained


def main() -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = {space: run_space(space, Path(tmp), args) for space in ("compact.toml", "mobile.toml")}
    out = {"benchmark": "mobile_vs_conv", "trials": args.trials, "epochs": args.epochs, "n": args.n,
           "dataset": "shapes 32x32, 6 classes", "trained": {s: len(r) for s, r in results.items()}}
    for runtime in RUNTIMES:
        fronts = {s: front([(r["accuracy"], r[runtime]) for r in rows]) for s, rows in results.items()}
        conv = sorted(lat for _, lat in fronts["compact.toml"])
        budgets = {"conv_fastest": conv[0], "x1.5": conv[0] * 1.5, "x2": conv[0] * 2,
                   "conv_front_median": statistics.median(conv)}
        best = {s: {b: max([round(r["accuracy"], 4) for r in rows if r[runtime] <= limit], default=None)
                    for b, limit in budgets.items()} for s, rows in results.items()}
        ref = max(r[runtime] for rows in results.values() for r in rows)
        out[runtime] = {
            "fronts": {s: [(round(a, 4), round(lat, 4)) for a, lat in f] for s, f in fronts.items()},
            "budgets_ms": {b: round(v, 4) for b, v in budgets.items()},
            "best_accuracy_within": best,
            "hypervolume": {s: round(hypervolume([(r["accuracy"], r[runtime]) for r in rows], ref), 4)
                            for s, rows in results.items()},
            "fastest_ms": {s: round(min(r[runtime] for r in rows), 4) for s, rows in results.items()},
        }
    out["seconds"] = round(time.perf_counter() - start)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
