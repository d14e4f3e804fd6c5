"""How many specs check() handles per second (target: >= 20,000 on a 2-core CPU).

Specs are drawn from the shipped spaces up front, so only validation and shape arithmetic
are timed. Prints one JSON line.
"""

import json
import time
from pathlib import Path

import optuna

from cnnsearch import ArchSpec, ShapeError, check
from cnnsearch.space import load_space

ROOT = Path(__file__).resolve().parent.parent


def main(n_per_space: int = 2000, repeats: int = 5) -> dict:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    specs = []
    for path in sorted((ROOT / "spaces").glob("*.toml")):
        space = load_space(path)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for i in range(n_per_space):
            trial = study.ask()
            specs.append(space.sample(trial, input=[(1, 8, 8), (3, 32, 32), (3, 64, 64)][i % 3],
                                      num_classes=10))
    dicts = [s.to_dict() for s in specs]

    def check_all():
        invalid = 0
        for spec in specs:
            try:
                check(spec)
            except ShapeError:
                invalid += 1
        return invalid

    def parse_and_check_all():
        for d in dicts:
            try:
                check(ArchSpec.from_dict(d))
            except ShapeError:
                pass

    best_check = best_full = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        invalid = check_all()
        best_check = min(best_check, time.perf_counter() - t)
        t = time.perf_counter()
        parse_and_check_all()
        best_full = min(best_full, time.perf_counter() - t)
    return {
        "benchmark": "shapes_speed",
        "specs": len(specs),
        "invalid": invalid,
        "checks_per_s": round(len(specs) / best_check),
        "from_dict_and_checks_per_s": round(len(specs) / best_full),
        "target_checks_per_s": 20000,
    }


if __name__ == "__main__":
    print(json.dumps(main()))
