"""A study's trials as data: the DataFrame, the Pareto set, and the trial a user picks.

Everything here is computed apart from plotting (see ``plots.py``), so it is tested
without plotly, and the CLI's ``status`` and ``export --trial`` share it.
"""

from __future__ import annotations

import math

import optuna
import pandas as pd

from .early_stopping import known_objectives
from .errors import RecipeError
from .objectives import METRICS
from .recipe import Recipe
from .spec import ArchSpec
from .trials import is_feasible, pareto_mask, status_of

SHOWN = ["trial", "state", "status", "feasible", "pareto", "accuracy", "test_mean", "test_std", "latency_ms",
         "params", "flops", "train_seconds", "epochs", "summary", "reason"]  # what the report and status show
# then everything else a trial records, every objective of the registry among it
COLUMNS = [*SHOWN, "balanced_accuracy", *(n for n in METRICS if n not in (*SHOWN, "balanced_accuracy")),
           "test_balanced_mean", "latency_remeasured_ms", "latency_iqr_ms", "baseline", "worker", "device", "started",
           "seconds", "curve"]
FLOAT_COLUMNS = (*METRICS, "test_mean", "test_std", "train_seconds", "test_balanced_mean", "latency_remeasured_ms",
                 "latency_iqr_ms", "seconds")
PARAM_PREFIX = "params_"  # one column per sampled parameter, named as Optuna's trials_dataframe names them


def pareto_numbers(df: pd.DataFrame, objectives: list[str], directions: list[str]) -> set[int]:
    """Trial numbers of the non-dominated feasible trials (ties kept, as Optuna does)."""
    pool = df[df["feasible"]]
    rows = pool[objectives].itertuples(index=False)  # pragma: no mutate (index=None is false too)
    mask = pareto_mask(list(rows), directions)
    return {int(n) for n, keep in zip(pool["trial"], mask) if keep}


def _row(t: optuna.trial.FrozenTrial) -> dict:
    a = t.user_attrs
    final = a.get("final", {})
    seconds = ((t.datetime_complete - t.datetime_start).total_seconds()
               if t.datetime_complete and t.datetime_start else math.nan)
    return {
        "trial": t.number,
        "state": t.state.name,
        "status": status_of(t),
        "feasible": is_feasible(t),
        # finalize's held-out test accuracy over seeds (NaN: not finalized)
        "test_mean": final.get("test_accuracy_mean", math.nan),
        "test_std": final.get("test_accuracy_std", math.nan),
        **{name: a.get(name, math.nan) for name in METRICS},  # every objective, whether this study has it or not
        "train_seconds": a.get("train_seconds", math.nan),
        "epochs": a.get("epochs", 0),
        "summary": a.get("summary", ""),
        "reason": a.get("infeasible_reason") or a.get("fail_reason") or "",
        "test_balanced_mean": final.get("test_balanced_accuracy_mean", math.nan),
        # the front re-timed side by side at the end of a search (NaN: not on the front then)
        "latency_remeasured_ms": a.get("latency_remeasured_ms", math.nan),
        "latency_iqr_ms": a.get("latency_iqr_ms", math.nan),
        "baseline": a.get("baseline", ""),  # the name of a known network run as a trial
        "worker": a.get("worker", ""),
        "device": a.get("device", ""),
        "started": t.datetime_start,
        "seconds": seconds,  # wall time of the whole trial (train_seconds: its training)
        "curve": list(a.get("curve", [])),  # validation accuracy after each epoch
        **{PARAM_PREFIX + k: v for k, v in t.params.items()},
    }


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """A study's trials as a DataFrame: one row per trial, whatever its state.

    Args:
        study: any study cnnsearch made (``cnnsearch.open_study``).

    Returns:
        Columns: state, status, feasible, the Pareto flag (feasible and non-dominated on the
        study's objectives), every registered objective (``objectives.METRICS``), finalized
        test figures, latencies (first and re-timed), epochs and seconds, worker and device,
        baseline name, the validation curve, a compact summary, and one ``params_<name>``
        column per sampled parameter (architecture and training). A study with no trial
        gives an empty frame with these columns, typed.
    """
    rows = [_row(t) for t in study.get_trials(deepcopy=False)]
    params = sorted({k for row in rows for k in row if k.startswith(PARAM_PREFIX)})
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "pareto"] + params)
    if df.empty:  # typed columns, so that filters and sorts work on a study with no trial yet
        df = df.astype({"trial": int, "feasible": bool, "epochs": int, **{c: float for c in FLOAT_COLUMNS}})
    objectives = study.metric_names or list(Recipe.objectives)
    directions = [d.name.lower() for d in study.directions]
    front = pareto_numbers(df, objectives, directions) if len(df) else set()
    df.insert(4, "pareto", df["trial"].isin(front))
    return df


# the Pareto plot's x-axis title for each objective that is not accuracy (known_objectives)
AXIS_TITLES = {name: m.title for name, m in METRICS.items() if m.known_before_training}
RETIMED = "re-timed"  # latency_from of a trial whose shown latency is latency_remeasured_ms


def shown_latency(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """``df`` with ``latency_ms`` replaced by ``latency_remeasured_ms`` where a trial has one
    (the front re-timed side by side, quiet, at the end of the search: the sounder figure)
    and a ``latency_from`` column ("re-timed" or "search"); and how many were replaced."""
    retimed = df["latency_remeasured_ms"].notna()
    shown = df.assign(latency_ms=df["latency_remeasured_ms"].where(retimed, df["latency_ms"]),
                      latency_from=["re-timed" if r else "search" for r in retimed])
    return shown, int(retimed.sum())


SCORE_LABELS = {"accuracy": "acc", "balanced_accuracy": "bal"}  # a quality_metric in a table's narrow column


def quality_metric(objectives: list[str] | None) -> str:
    """The validation score that ranks a study's trials (leaderboard, ``--trial best``, the
    plots' y axis): ``balanced_accuracy`` for a study that optimises it instead of accuracy
    (imbalanced classes), else ``accuracy``."""
    objectives = objectives or ()
    return "balanced_accuracy" if "balanced_accuracy" in objectives and "accuracy" not in objectives else "accuracy"


def pareto_axis(objectives: list[str] | None) -> str:
    """The Pareto plot's x-axis: the recipe's first objective other than accuracy (latency
    for an accuracy-only study, which still has its latency measured)."""
    return next(iter(known_objectives(objectives or ())), "latency_ms")


def trained_study(study: optuna.Study) -> optuna.Study:
    """An in-memory copy holding only the trained, feasible trials: what parameter
    importances should explain (an infeasible trial's accuracy 0 says nothing about how
    well its parameters train; counted in, the importances mostly explain infeasibility)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory"
    try:
        copy = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    if study.metric_names:
        copy.set_metric_names(study.metric_names)
    # baselines left out too: they have training parameters only, and importances are
    # computed over the parameters every trial has
    copy.add_trials([t for t in study.get_trials(deepcopy=False) if is_feasible(t) and "baseline" not in t.user_attrs])
    return copy


def leaderboard(df: pd.DataFrame, *, by: str = "accuracy") -> pd.DataFrame:
    """Feasible trials, Pareto set first, then by ``by`` (accuracy or balanced_accuracy,
    desc) and latency (asc)."""
    board = df[df["feasible"]].sort_values(["pareto", by, "latency_ms"],
                                           ascending=[False, False, True])
    board = board.reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def pick_trial(study: optuna.Study, which: str) -> optuna.trial.FrozenTrial:
    """``best``: highest accuracy on the front (balanced accuracy in a study that optimises
    it: ``quality_metric``); ``fastest``: lowest latency on the front within one point of
    the best; or a trial number."""
    if which not in ("best", "fastest"):
        try:
            number = int(which)
        except ValueError:
            raise RecipeError(f"--trial: expected best, fastest or a trial number, got {which!r}") from None
        trials = study.get_trials(deepcopy=False)
        if not 0 <= number < len(trials):
            raise RecipeError(f"--trial: study {study.study_name!r} has no trial {number}")
        trial = trials[number]
        if not is_feasible(trial) or "weights" not in trial.user_attrs:
            raise RecipeError(f"--trial: trial {number} has no trained network ({status_of(trial)})")
        return trial
    df = trials_frame(study)
    front = df[df["pareto"]]
    if front.empty:
        raise RecipeError(f"study {study.study_name!r} has no finished feasible trial yet")
    by = quality_metric(study.metric_names)
    best_acc = front[by].max()
    if which == "best":
        row = front.sort_values([by, "latency_ms"], ascending=[False, True]).iloc[0]
    else:
        row = front[front[by] >= best_acc - 0.01].sort_values("latency_ms").iloc[0]
    return study.get_trials(deepcopy=False)[int(row["trial"])]


def trial_spec(trial: optuna.trial.FrozenTrial) -> ArchSpec:
    return ArchSpec.from_dict(trial.user_attrs["arch"])  # validated again: stored data is input too
