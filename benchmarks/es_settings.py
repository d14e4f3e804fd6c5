"""Early-stopping settings compared on the tabular benchmarks: the evolution sampler with
each setting, replayed as ``search_quality.py --table`` replays a strategy (20 seeds, 200
trials), against random search without early stopping on the same seeds.

Per table and setting: the rung epochs it stops at, the median fraction of random search's
epochs needed to reach random's 200-trial hypervolume (``to_random``, and on how many seeds
it did), and the hypervolume against random's at 50 and 200 trials. The recipe default
(``[early_stopping]``, recipe_sections.py) was picked from these; picking on the same
tables that score it flatters it, so ``confirm.py`` checks the pick on real studies.

    python benchmarks/es_settings.py benchmarks/tables/shapes.jsonl.gz benchmarks/tables/shapes-hard.jsonl.gz
"""

from __future__ import annotations

import importlib.util
import json
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]  # see tabulate.py

import optuna  # noqa: E402

from cnnsearch.early_stopping import rung_epochs  # noqa: E402
from cnnsearch.recipe import EarlyStopping  # noqa: E402

# each setting changes the recipe defaults' early stopping in these fields
SETTINGS = {"defaults": {}, "margin 0": {"margin": 0.0}, "min_epoch 2": {"min_epoch": 2},
            "rung 1/2": {"rungs": (0.5,)}, "keep 1/2": {"keep": 0.5}, "margin 0.05": {"margin": 0.05},
            "min_epoch 2, keep 1/2": {"min_epoch": 2, "keep": 0.5}}
SEEDS, TRIALS = 20, 200


def sibling(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: python benchmarks/es_settings.py TABLE.jsonl.gz [TABLE ...]")
    tabulate, replay = sibling("tabulate"), sibling("replay")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for path in sys.argv[1:]:
        table = replay.Table(*tabulate.read_table(Path(path)))
        budgets = [50, TRIALS]
        random = [replay.curve_of(table, replay.replay_study(table, replay.STRATEGIES["random"](s), trials=TRIALS,
                                                             early=False), budgets) for s in range(SEEDS)]
        final = statistics.median(r["at"][TRIALS][0] for r in random)
        epochs = statistics.median(r["at"][TRIALS][1] for r in random)
        for name, change in SETTINGS.items():
            es = replace(EarlyStopping(), enabled=True, **change)
            runs = [replay.curve_of(table, replay.replay_study(table, replay.STRATEGIES["evolution"](s), trials=TRIALS,
                                                               early=True, settings=es), budgets) for s in range(SEEDS)]
            to = [replay.epochs_to_reach(r, final) / epochs for r in runs]
            print(json.dumps({
                "table": table.header["task"], "setting": name, "rungs_at_epochs": sorted(rung_epochs(
                    table.epochs, es.rungs, es.min_epoch)),
                "to_random": round(statistics.median(to), 3) if statistics.median(to) < math.inf else None,
                "reached": f"{sum(x < math.inf for x in to)}/{SEEDS}",
                "hv50_vs_random": round(statistics.median(r["at"][50][0] / q["at"][50][0] for r, q in zip(runs, random)), 3),
                "hv200_vs_random": round(statistics.median(r["at"][TRIALS][0] / q["at"][TRIALS][0]
                                                           for r, q in zip(runs, random)), 3),
                "epochs200_vs_random": round(statistics.median(r["at"][TRIALS][1] for r in runs) / epochs, 3)}),
                flush=True)


if __name__ == "__main__":
    main()
