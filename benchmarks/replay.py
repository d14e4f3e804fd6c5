"""Whole searches replayed on a tabular benchmark (``benchmarks/tabulate.py``): the real
Optuna samplers propose, the table answers (``search_quality.py --table FILE``).

Each trial samples through the table's own space (``SearchSpace.sample``, as a search
does) and is looked up by its spec's digest. With early stopping, the real rule
(``early_stopping.should_stop`` at ``rung_epochs``, the recipe defaults of
``EarlyStopping``) runs on the stored per-epoch validation curve against the study's
earlier trials, as the Objective's peers; a stopped trial is PRUNED, as in a search.
Compute is counted in epochs trained (and the table's training seconds for them). A
repeated architecture is trained and counted again, as a real study would (it has another
seed there; the table has one run per architecture, so it gives the same figures).
The figure of merit is the hypervolume of (brief weights' test error, latency) over the
trials not stopped, up to (1 - chance accuracy, the table's largest latency).
"""

from __future__ import annotations

import math
import statistics
import time
import warnings

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume  # benchmarks only: no public one in Optuna
from scipy.stats import kendalltau

from cnnsearch.early_stopping import Peer, rung_epochs, should_stop
from cnnsearch.evolution import EvolutionSampler
from cnnsearch.recipe import EarlyStopping, Recipe
from cnnsearch.samplers import SAMPLER_OPTIONS
from cnnsearch.space import parse_space
from cnnsearch.trials import CONSTRAINT

# strategies: a sampler; each also runs with early stopping ("+es"). "tpe" is TPE as cnnsearch
# builds it, the default before issue 22 (multivariate, group, constant liar: Optuna 5's default, so the
# issue's "TPE multivariate+group+constant_liar" is this one); "tpe-independent" is
# Optuna's plain TPESampler (independent per parameter for several objectives).
STRATEGIES = {
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed, **SAMPLER_OPTIONS["tpe"]),
    "tpe-independent": lambda seed: optuna.samplers.TPESampler(seed=seed, multivariate=False, constant_liar=False),
    "evolution": lambda seed: EvolutionSampler(seed=seed, **SAMPLER_OPTIONS["evolution"]),
}
# what a recipe without a `sampler` line or an [early_stopping] table gets today, as a strategy label
DEFAULT = Recipe.sampler + ("+es" if EarlyStopping.enabled else "")


class Table:
    """A tabular benchmark: its space, rows by spec digest, and the hypervolume reference."""

    def __init__(self, header: dict, rows: list[dict]):
        self.header, self.rows = header, {r["digest"]: r for r in rows}
        self.space = parse_space(header["space"], "table space")
        spec = next(iter(self.rows.values()))["spec"]
        self.input, self.num_classes = tuple(spec["input"]), spec["num_classes"]
        self.epochs = header["brief_epochs"]
        self.ref = (1 - 1 / self.num_classes, max(r["latency_ms"] for r in self.rows.values()))
        if len(self.rows) < header["architectures_in_space"]:
            raise SystemExit(f"error: the table holds {len(self.rows)} of the space's "
                             f"{header['architectures_in_space']} architectures: a replay needs all of them "
                             "(finish it with benchmarks/tabulate.py)")

    def best_hv(self) -> float:
        return hypervolume([(1 - r["brief"]["test"], r["latency_ms"]) for r in self.rows.values()], self.ref)


def hypervolume(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    inside = np.array([p for p in points if p[0] < ref[0] and p[1] < ref[1]], dtype=float)
    return float(compute_hypervolume(inside, np.array(ref, dtype=float))) if len(inside) else 0.0


def replay_study(table: Table, sampler: optuna.samplers.BaseSampler, *, trials: int, early: bool,
                 settings: EarlyStopping | None = None) -> list[dict]:
    """One study of ``trials`` trials; per trial: its row, epochs trained, whether stopped.
    With ``early``, early stopping has ``settings`` (default: a recipe's defaults, switched on)."""
    es = settings or EarlyStopping(enabled=True)
    rungs = rung_epochs(table.epochs, es.rungs, es.min_epoch) if early else frozenset()
    log: list[dict] = []
    peers: list[Peer] = []

    def objective(trial: optuna.Trial):
        spec = table.space.sample(trial, input=table.input, num_classes=table.num_classes)
        table.space.sample_train(trial)
        row = table.rows[spec.digest]
        curve, steps = row["brief"]["val"], row["brief"]["steps_per_epoch"]
        ended = len(curve)
        for e in sorted(rungs):
            if should_stop((row["latency_ms"],), curve[e - 1], epoch=e, steps=e * steps, peers=peers,
                           margin=es.margin, keep=es.keep):
                ended = e
                break
        peers.append(Peer((row["latency_ms"],), tuple(curve[:ended]), steps))
        log.append({"row": row, "epochs": ended, "stopped": ended < len(curve),
                    "train_s": sum(row["brief"]["train_s"][:ended])})
        if ended < len(curve):
            raise optuna.TrialPruned()
        trial.set_constraint(CONSTRAINT, 0.0)  # as the Objective: samplers read it
        return curve[-1], row["latency_ms"]

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group=
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=trials)
    return log


def curve_of(table: Table, log: list[dict], budgets: list[int]) -> dict:
    """Hypervolume and epochs after each budget (and after every trial, for catching up)."""
    hv, epochs, points, spent = [], [], [], 0
    for entry in log:
        spent += entry["epochs"]
        if not entry["stopped"]:
            points.append((1 - entry["row"]["brief"]["test"], entry["row"]["latency_ms"]))
        hv.append(hypervolume(points, table.ref))
        epochs.append(spent)
    return {"hv": hv, "epochs": epochs, "at": {b: (hv[b - 1], epochs[b - 1]) for b in budgets if b <= len(hv)}}


def median(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return round(statistics.median(values), 4) if values else math.nan


def epochs_to_reach(run: dict, target: float) -> float:
    """Epochs this run needed to reach hypervolume ``target`` (inf if it never did)."""
    return next((e for h, e in zip(run["hv"], run["epochs"]) if h >= target), math.inf)


def rank_taus(table: Table, *, resamples: int = 1000, seed: int = 0) -> dict:
    """Kendall tau of brief-run proxies against the long run's test accuracy, over all rows,
    with a bootstrap 90% interval for the final validation accuracy."""
    rows = list(table.rows.values())
    long = np.array([r["long"]["test"] for r in rows])
    proxies = {"brief": np.array([r["brief"]["val"][-1] for r in rows]),
               "sotl": -np.array([sum(r["brief"]["train_loss_sum"]) for r in rows])}  # Ru et al. 2021
    out = {f"kendall_tau_{k}_long": round(float(kendalltau(v, long).statistic), 3) for k, v in proxies.items()}
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(resamples):
        idx = rng.integers(0, len(rows), len(rows))
        tau = kendalltau(proxies["brief"][idx], long[idx]).statistic
        if tau == tau:
            boots.append(tau)
    out["kendall_tau_ci90"] = [round(float(np.percentile(boots, 5)), 3), round(float(np.percentile(boots, 95)), 3)]
    return out


def run_table(task: str, table: Table, *, strategies: list[str], seeds: int, budgets: list[int]) -> dict:
    """Every strategy x early stopping x seed on one table: the task's JSON line."""
    t0 = time.perf_counter()
    runs: dict[str, list[dict]] = {}
    for name in strategies:
        for early in (False, True):
            label = name + ("+es" if early else "")
            runs[label] = [curve_of(table, replay_study(table, STRATEGIES[name](seed), trials=max(budgets),
                                                        early=early), budgets) for seed in range(seeds)]
    study_s = (time.perf_counter() - t0) / max(1, sum(len(v) for v in runs.values()))
    top = max(budgets)
    random_final = median([r["at"][top][0] for r in runs["random"]])
    random_epochs = median([r["at"][top][1] for r in runs["random"]])
    per = {}
    for label, rs in runs.items():
        to_random = [epochs_to_reach(r, random_final) / random_epochs for r in rs]
        per[label] = {
            "hv": {b: median([r["at"][b][0] for r in rs]) for b in budgets},
            "hv_fraction_of_best": {b: median([r["at"][b][0] / table.best_hv() for r in rs]) for b in budgets},
            "epochs": {b: median([r["at"][b][1] for r in rs]) for b in budgets},
            "hv_vs_random": {b: median([r["at"][b][0] / q["at"][b][0] for r, q in zip(rs, runs["random"])
                                        if q["at"][b][0]]) for b in budgets},
            "epochs_to_random_final": median(to_random) if statistics.median(to_random) < math.inf else None,
            "reaches_random_final": f"{sum(x < math.inf for x in to_random)}/{len(rs)}",
        }
    default = per[DEFAULT]
    return {"task": task, "architectures": len(table.rows), "seeds": seeds, "budgets": budgets,
            "default": DEFAULT, "brief_epochs": table.epochs, "ref": [round(x, 5) for x in table.ref],
            "best_hv": round(table.best_hv(), 5),
            "default_epochs_to_random_final": default["epochs_to_random_final"],
            "hv50_default_vs_random": default["hv_vs_random"].get(50, math.nan),
            **rank_taus(table), "seconds_per_study": round(study_s, 2), "strategies": per,
            "table_commit": table.header.get("commit"), "table_command": table.header.get("command")}


def markdown(out: dict) -> str:
    """``run_table``'s figures as a Markdown table (the README's search-quality section)."""
    budgets = out["budgets"]
    lines = [f"{out['task']} ({out['architectures']} architectures, {out['seeds']} seeds; medians; "
             f"default `{out['default']}`)", "",
             "| strategy | epochs to random's final HV (x random's) | reached | "
             + " | ".join(f"HV/random @{b}" for b in budgets) + f" | epochs @{budgets[-1]} (x random's) |",
             "|---|---|---|" + "---|" * len(budgets) + "---|"]
    random_epochs = out["strategies"]["random"]["epochs"][budgets[-1]]
    for label, s in out["strategies"].items():
        to = s["epochs_to_random_final"]
        lines.append(f"| {label} | {'never' if to is None else f'{to:.2f}'} | {s['reaches_random_final']} | "
                     + " | ".join(f"{s['hv_vs_random'][b]:.3f}" for b in budgets)
                     + f" | {s['epochs'][budgets[-1]] / random_epochs:.2f} |")
    return "\n".join(lines)
