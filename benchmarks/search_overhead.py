"""Where a study's time goes, and what early stopping saves.

1. Overhead: share of wall time of a digits study spent outside build, latency and
   training (sampling, checks, storage writes, weights upload). Target: <= 2%.
2. Early stopping: the same candidates (RandomSampler, same seed: the sampler does not
   look at results) with early stopping on and off; training seconds spent, and the
   Pareto hypervolume (accuracy up, latency down) each run reached.

Prints one JSON line.   python benchmarks/search_overhead.py [--trials 24] [--epochs 6]
"""

import argparse
import functools
import json
import tempfile
import time
from pathlib import Path

import optuna
import search_quality  # this folder: one hypervolume for both benchmarks
import torch

from cnnsearch.objective import Objective
from cnnsearch.recipe import load_recipe
from cnnsearch.storage import open_storage
from cnnsearch.study import open_study, run_worker
from cnnsearch.trials import Status

ROOT = Path(__file__).resolve().parent.parent


def hypervolume(points: list[tuple[float, float]], ref_latency: float) -> float:
    """Area dominated by (accuracy, latency) points above accuracy 0, left of ref_latency:
    the hypervolume of (error, latency) against (1, ref_latency)."""
    return search_quality.hypervolume([(1 - acc, lat) for acc, lat in points], (1.0, ref_latency))


SAMPLER_SECONDS = [0.0]


def _timed(method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            SAMPLER_SECONDS[0] += time.perf_counter() - t0
    return wrapper


# time spent inside the sampler (Optuna's TPE), to split the overhead into its parts
for _name in ("infer_relative_search_space", "sample_relative", "sample_independent"):
    setattr(optuna.samplers.TPESampler, _name, _timed(getattr(optuna.samplers.TPESampler, _name)))


def run(tmp: Path, *, name: str, trials: int, epochs: int, sampler: str, early: bool):
    text = (ROOT / "studies" / "digits.toml").read_text()
    text = text.replace('name = "digits"', f'name = "{name}"').replace("seed = 0\n", f'seed = 0\nsampler = "{sampler}"\n', 1)
    assert f'sampler = "{sampler}"' in text, "studies/digits.toml changed: the sampler line was not written"
    text = text.replace("trials = 24", f"trials = {trials}").replace("epochs = 6", f"epochs = {epochs}")
    text = text.replace("enabled = true", f"enabled = {'true' if early else 'false'}")
    text = text.replace("../spaces/", f"{ROOT}/spaces/")
    path = tmp / f"{name}.toml"
    path.write_text(text)
    recipe = load_recipe(path)
    # set-up, not per-trial overhead: loading the data, opening (creating) the study
    objective = Objective.create(recipe)
    study = open_study(recipe, open_storage(recipe.storage))
    SAMPLER_SECONDS[0] = 0.0
    t0 = time.perf_counter()
    run_worker(study, objective, until=trials, infeasible_after=min(20, trials))
    wall = time.perf_counter() - t0
    done = [t for t in study.trials if t.user_attrs.get("status") == Status.OK]
    return {
        "wall_s": wall,
        "inside_s": sum(objective.timings.values()),
        "sampler_s": SAMPLER_SECONDS[0],
        "train_s": sum(t.user_attrs.get("train_seconds", 0.0) for t in study.trials),
        "points": [(t.user_attrs["accuracy"], t.user_attrs["latency_ms"]) for t in done],
        "early_stopped": sum(t.user_attrs.get("status") == Status.EARLY_STOPPED for t in study.trials),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tpe = run(tmp, name="overhead", trials=args.trials, epochs=args.epochs, sampler="tpe", early=True)
        on = run(tmp, name="es_on", trials=args.trials, epochs=args.epochs, sampler="random", early=True)
        off = run(tmp, name="es_off", trials=args.trials, epochs=args.epochs, sampler="random", early=False)
    ref = 1.1 * max(lat for _, lat in on["points"] + off["points"])
    hv_on, hv_off = hypervolume(on["points"], ref), hypervolume(off["points"], ref)
    print(json.dumps({
        "benchmark": "search_overhead",
        "trials": args.trials,
        "epochs": args.epochs,
        "wall_s": round(tpe["wall_s"], 2),
        "overhead_share": round(1 - tpe["inside_s"] / tpe["wall_s"], 4),
        "overhead_ms_per_trial": round(1000 * (tpe["wall_s"] - tpe["inside_s"]) / args.trials, 1),
        "work_ms_per_trial": round(1000 * tpe["inside_s"] / args.trials, 1),
        "tpe_sampler_ms_per_trial": round(1000 * tpe["sampler_s"] / args.trials, 1),
        "overhead_share_without_sampler": round(1 - (tpe["inside_s"] + tpe["sampler_s"]) / tpe["wall_s"], 4),
        "target_overhead_share": 0.02,
        "es_train_s_on": round(on["train_s"], 2),
        "es_train_s_off": round(off["train_s"], 2),
        "es_compute_saved": round(1 - on["train_s"] / off["train_s"], 3),
        "es_trials_stopped": on["early_stopped"],
        "es_hypervolume_on": round(hv_on, 5),
        "es_hypervolume_off": round(hv_off, 5),
        "es_hypervolume_ratio": round(hv_on / hv_off, 4),
    }))


if __name__ == "__main__":
    main()
