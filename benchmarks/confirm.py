"""The default search strategy against random search on real studies (issue 22, item 5):
the replay's verdict (``search_quality.py --table``) checked with real training.

Per seed, two studies of ``--trials`` trials run as ``cnnsearch search`` runs them (same
Objective, worker loop and sampler construction), on a tabular benchmark's task and space
(``benchmarks/tabulate.py``'s ``TASKS`` and ``tables/space.toml``): one from a recipe that
writes no ``sampler`` line and no ``[early_stopping]`` table (so whatever the defaults are),
one with ``sampler = "random"`` and early stopping off. Every trained trial's stored weights
are then scored on the test split, which the search never sees. The figure of merit is the
hypervolume of (test error, latency) over the trained trials, up to (1 - chance accuracy,
the largest latency timed); compute is the trials' summed training seconds. With ``--keep DIR``
a rerun resumes the studies there (a finished one then reports ``wall_s`` near 0).

Prints one JSON line: per strategy the median final hypervolume and training seconds, and
``default_train_s_to_random_final``: the training seconds the default needed (per seed) to
reach random search's final hypervolume of the same seed, as a fraction of random's; median.

    python benchmarks/confirm.py --task shapes --trials 100 --seeds 3 --jobs 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # see tabulate.py

import optuna  # noqa: E402
import torch  # noqa: E402

from cnnsearch.data import load_data  # noqa: E402
from cnnsearch.objective import Objective  # noqa: E402
from cnnsearch.recipe import load_recipe  # noqa: E402
from cnnsearch.storage import open_storage  # noqa: E402
from cnnsearch.study import open_worker, record_data, run_worker  # noqa: E402
from cnnsearch.trials import Status  # noqa: E402


def sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def recipe_text(task: dict, *, name: str, trials: int, seed: int, default: bool) -> str:
    data = "".join(f"{k} = {v}\n" for k, v in task["data"].items())
    # the default writes neither a sampler nor early stopping: it gets whatever ships
    search = "" if default else 'sampler = "random"\n'
    early = "" if default else "[early_stopping]\nenabled = false\n"
    return (f'name = "{name}"\nspace = "{HERE / "tables" / "space.toml"}"\ndataset = "{task["dataset"]}"\n'
            f'objectives = ["accuracy", "latency_ms"]\ntrials = {trials}\nseed = {seed}\n{search}'
            f'[data]\n{data}[train]\nepochs = {task["epochs"]}\ndevice = "cpu"\n'
            f'[latency]\ndevice = "cpu"\nbatch_size = 1\nthreads = 1\n{early}')


def run_study(tmp: Path, task: dict, *, default: bool, seed: int, trials: int, test_data) -> dict:
    """One real study; per trial (in order) its training seconds and test accuracy if trained."""
    name = f"{'default' if default else 'random'}-{seed}"
    path = tmp / f"{name}.toml"
    path.write_text(recipe_text(task, name=name, trials=trials, seed=seed, default=default))
    recipe = load_recipe(path)
    objective = Objective.create(recipe)
    seat = open_worker(recipe, open_storage(recipe.storage))
    record_data(seat.study, objective.data.description())
    objective.run_attrs = {"sampler_seed": seat.sampler_seed, "worker": seat.worker, "owner": "confirm.py"}
    objective.fingerprint = seat.study.user_attrs["fingerprint"]  # as runner.py: early stopping's peers
    t0 = time.perf_counter()
    run_worker(seat.study, objective, until=trials, infeasible_after=trials)
    wall = time.perf_counter() - t0
    test_accuracy = sibling("search_quality").test_accuracy  # the live benchmark's scoring, loaded once
    rows = []
    for t in seat.study.get_trials(deepcopy=False):
        a = t.user_attrs
        row = {"train_s": a.get("train_seconds", 0.0), "latency_ms": a.get("latency_ms"), "status": a.get("status")}
        if a.get("status") == Status.OK:
            row["test"] = test_accuracy(t, recipe, test_data, tmp / f"{name}-{t.number}.safetensors")
        rows.append(row)
    record = seat.study.user_attrs["search"]
    out = {"strategy": record["sampler"] + ("+es" if record["early_stopping"]["enabled"] else ""), "seed": seed,
           "wall_s": round(wall, 1), "rows": rows}
    print(json.dumps({k: v for k, v in out.items() if k != "rows"} | {
        "train_s": round(sum(r["train_s"] for r in rows), 1), "trained": sum("test" in r for r in rows),
        "stopped": sum(r["status"] == Status.EARLY_STOPPED for r in rows)}), file=sys.stderr, flush=True)
    return out


def _one(tmp: Path, task: dict, trials: int, test_data, job: tuple[str, int]) -> dict:
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return run_study(tmp, task, default=job[0] == "default", seed=job[1], trials=trials, test_data=test_data)


def curve(rows: list[dict], ref: tuple[float, float], hypervolume) -> list[tuple[float, float]]:
    """(training seconds so far, hypervolume so far) after each trial."""
    points, spent, out = [], 0.0, []
    for r in rows:
        spent += r["train_s"]
        if "test" in r:
            points.append((1 - r["test"], r["latency_ms"]))
        out.append((spent, hypervolume(points, ref)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="shapes", help="a task of benchmarks/tabulate.py")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--keep", help="keep the studies in this folder")
    parser.add_argument("--jobs", type=int, default=1, help="studies run side by side (one core each)")
    args = parser.parse_args()
    tabulate, replay = sibling("tabulate"), sibling("replay")
    if args.task not in tabulate.TASKS:
        parser.error(f"--task: one of {', '.join(tabulate.TASKS)}")
    task = tabulate.TASKS[args.task]
    torch.set_num_threads(1)  # as the tables: one thread, steady training seconds
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    test_data = load_data(task["dataset"], **task["data"])
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        jobs = [(kind, s) for kind in ("random", "default") for s in range(args.seeds)]
        # spawned, not forked: torch is not fork-safe once it has run
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            done = list(pool.map(partial(_one, tmp, task, args.trials, test_data), jobs))
        runs = {kind: [run for (k, _), run in zip(jobs, done) if k == kind] for kind in ("random", "default")}
    lat = max(r["latency_ms"] for rs in runs.values() for run in rs for r in run["rows"] if r["latency_ms"])
    ref = (1 - 1 / test_data.num_classes, lat)  # as the replay's: chance error, the slowest network timed
    curves = {k: [curve(run["rows"], ref, replay.hypervolume) for run in rs] for k, rs in runs.items()}
    to_random = []
    for d, r in zip(curves["default"], curves["random"]):
        final_s, final_hv = r[-1]
        if final_hv <= 0:  # nothing to reach: no figure rather than a free win
            raise SystemExit("error: a random-search study found nothing better than chance; use more --trials")
        to_random.append(next((s for s, hv in d if hv >= final_hv), math.inf) / final_s)
    med = lambda v: round(statistics.median(v), 4)  # noqa: E731
    print(json.dumps({
        "benchmark": "confirm", "task": args.task, "trials": args.trials, "seeds": args.seeds,
        "default": runs["default"][0]["strategy"], "ref": [round(x, 5) for x in ref],
        "hv_final": {k: med([c[-1][1] for c in cs]) for k, cs in curves.items()},
        "train_s": {k: med([c[-1][0] for c in cs]) for k, cs in curves.items()},
        "wall_s": {k: med([run["wall_s"] for run in rs]) for k, rs in runs.items()},
        "default_train_s_to_random_final": med(to_random) if statistics.median(to_random) < math.inf else None,
        "default_reaches_random_final": f"{sum(x < math.inf for x in to_random)}/{len(to_random)}",
        "per_seed_to_random_final": [round(x, 3) if x < math.inf else None for x in to_random],
    }), flush=True)


if __name__ == "__main__":
    main()
