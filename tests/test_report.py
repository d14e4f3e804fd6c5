"""The report's data (no plotly): DataFrame, Pareto set equal to Optuna's, trial picking."""

import random

import optuna
import pytest

from cnnsearch import RecipeError
from cnnsearch.report import leaderboard, pick_trial, trials_frame

optuna.logging.set_verbosity(optuna.logging.WARNING)
ARCH = {"input": [1, 8, 8], "num_classes": 10, "blocks": [{"out_channels": 8, "kernel_size": 3}]}


def synthetic_study(seed: int, n: int = 60) -> optuna.Study:
    """Trials as the pipeline records them: feasible, infeasible, pruned, failed; ties too."""
    rng = random.Random(seed)
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "latency_ms"])
    for i in range(n):
        trial = study.ask()
        kind = rng.choice(["ok"] * 6 + ["limit", "early_stopped", "error"])
        acc, lat = round(rng.uniform(0.5, 1.0), 2), round(rng.uniform(0.1, 2.0), 1)  # rounding makes ties
        attrs = {"status": kind, "arch": ARCH, "summary": f"c{i}k3", "params": 100 + i, "flops": 1000 + i,
                 "latency_ms": lat}
        if kind == "ok":
            attrs.update(accuracy=acc, train_seconds=1.0, epochs=3, weights=f"artifact-{i}")
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        if kind == "error":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif kind == "early_stopped":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            trial.set_constraint("infeasible", 1.0 if kind == "limit" else 0.0)
            study.tell(trial, [acc if kind == "ok" else 0.0, lat])
    return study


@pytest.mark.parametrize("seed", range(8))
def test_pareto_flags_equal_optunas_best_trials(seed):
    study = synthetic_study(seed)
    df = trials_frame(study)
    assert set(df.loc[df["pareto"], "trial"]) == {t.number for t in study.best_trials}
    assert len(df) == len(study.trials)
    assert not df.loc[~df["feasible"], "pareto"].any()


def test_frame_columns_and_states():
    df = trials_frame(synthetic_study(1))
    assert {"trial", "state", "status", "feasible", "pareto", "accuracy", "latency_ms", "params", "flops",
            "train_seconds", "summary"} <= set(df.columns)
    assert set(df.loc[df["status"] == "early_stopped", "state"]) <= {"PRUNED"}
    assert df.loc[df["status"] == "ok", "feasible"].all()
    assert not df.loc[df["status"] == "limit", "feasible"].any()
    assert df.loc[df["status"] == "error", "accuracy"].isna().all()


def test_leaderboard_puts_the_front_first_then_accuracy():
    board = leaderboard(trials_frame(synthetic_study(2)))
    n_front = int(board["pareto"].sum())
    assert board["pareto"].iloc[:n_front].all() and not board["pareto"].iloc[n_front:].any()
    rest = board.iloc[n_front:]["accuracy"].tolist()
    assert rest == sorted(rest, reverse=True)
    assert board["rank"].tolist() == list(range(1, len(board) + 1))


def test_pick_best_and_fastest():
    study = synthetic_study(3)
    df = trials_frame(study)
    front = df[df["pareto"]]
    best = pick_trial(study, "best")
    assert best.user_attrs["accuracy"] == front["accuracy"].max()
    fastest = pick_trial(study, "fastest")
    within = front[front["accuracy"] >= front["accuracy"].max() - 0.01]
    assert fastest.user_attrs["latency_ms"] == within["latency_ms"].min()
    assert fastest.user_attrs["accuracy"] >= best.user_attrs["accuracy"] - 0.01
    ok = int(front["trial"].iloc[0])
    assert pick_trial(study, str(ok)).number == ok


@pytest.mark.parametrize("which, message", [("slowest", "expected best, fastest or a trial number"),
                                            ("999", "has no trial 999")])
def test_pick_trial_errors(which, message):
    with pytest.raises(RecipeError, match=message):
        pick_trial(synthetic_study(4), which)


def test_untrained_trial_cannot_be_exported():
    study = synthetic_study(5)
    bad = next(t for t in study.trials if t.user_attrs["status"] != "ok")
    with pytest.raises(RecipeError, match=f"trial {bad.number} has no trained network"):
        pick_trial(study, str(bad.number))


def test_empty_study_says_so():
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="empty")
    assert trials_frame(study).empty
    with pytest.raises(RecipeError, match="no finished feasible trial"):
        pick_trial(study, "best")


def test_importances_explain_trained_trials_not_infeasibility():
    """'a' decides only feasibility (a = 1: over a limit, accuracy 0, never trained); 'b'
    decides accuracy among the trained. Counted with the infeasible, 'a' would dominate."""
    from cnnsearch.plots import importance_figure
    from cnnsearch.report import trained_study

    rng = random.Random(0)
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="imp")
    study.set_metric_names(["accuracy", "latency_ms"])
    for _ in range(40):
        trial = study.ask()
        a = trial.suggest_categorical("a", [0, 1])
        b = trial.suggest_float("b", 0.0, 1.0)
        c = trial.suggest_float("c", 0.0, 1.0)  # noise only
        feasible = a == 0
        trial.set_constraint("infeasible", 0.0 if feasible else 1.0)
        study.tell(trial, [0.5 + 0.4 * b + 0.01 * c * rng.random() if feasible else 0.0, 1.0])
    trained = trained_study(study)
    assert len(trained.trials) == sum(t.params["a"] == 0 for t in study.trials) > 3
    assert all(t.params["a"] == 0 for t in trained.trials)
    bars = importance_figure(study).data[0]
    importance = dict(zip(bars.y, bars.x))
    assert max(importance, key=importance.get) == "b", importance
    assert importance.get("a", 0.0) < 0.05, importance


@pytest.mark.parametrize("objective", ["params", "flops", "latency_ms"])
def test_the_pareto_plot_follows_the_recipe_objectives(objective):
    from cnnsearch.plots import pareto_figure
    from cnnsearch.report import pareto_axis

    study = synthetic_study(3)
    df = trials_frame(study)
    x = pareto_axis(["accuracy", objective])
    assert x == objective
    fig = pareto_figure({"s": df}, x=x)
    trained = next(t for t in fig.data if t.meta["role"] == "trained")
    ok = df[df["feasible"]]
    assert list(trained.x) == list(ok[objective])
    front = next(t for t in fig.data if t.meta["role"] == "front")
    # the two-axis front by brute force: no other trained trial at least as good on both, better on one
    pts = list(zip(ok["accuracy"], ok[objective]))
    expected = [x for a, x in pts if not any(b >= a and y <= x and (b > a or y < x) for b, y in pts)]
    assert sorted(front.x) == sorted(expected) and len(front.x) >= 1
    assert {"params": "parameters", "flops": "FLOPs", "latency_ms": "latency"}[objective] in fig.layout.xaxis.title.text
    assert pareto_axis(["accuracy"]) == "latency_ms" and pareto_axis(None) == "latency_ms"


def test_the_report_and_the_pareto_plot_show_the_re_timed_latency_where_one_exists(tmp_path):
    from cnnsearch.plots import pareto_figure
    from cnnsearch.report import shown_latency
    from cnnsearch.report_page import write_report

    first = synthetic_study(3, n=12)
    df = trials_frame(first)
    number = int(df[df["pareto"]]["trial"].iloc[0])
    trials = first.get_trials()
    trials[number].user_attrs = {**trials[number].user_attrs, "latency_remeasured_ms": 0.01}  # as runner stores it
    study = optuna.create_study(directions=first.directions)
    study.set_metric_names(first.metric_names)
    study.add_trials(trials)
    shown, retimed = shown_latency(trials_frame(study))
    assert retimed == 1
    row = shown[shown["trial"] == number].iloc[0]
    assert row["latency_ms"] == 0.01 and row["latency_from"] == "re-timed"
    others = shown[shown["trial"] != number]
    assert (others["latency_from"] == "search").all() and list(others["latency_ms"]) == list(
        df[df["trial"] != number]["latency_ms"])
    fig = pareto_figure({"s": shown})
    assert "re-timed" in fig.layout.xaxis.title.text
    trained = next(t for t in fig.data if t.meta["role"] == "trained")
    assert 0.01 in list(trained.x) and ["re-timed"] == [c[6] for c in trained.customdata if c[0] == number]
    assert "re-timed" not in pareto_figure({"s": df}).layout.xaxis.title.text  # nothing re-timed: not said
    html_path, csv_path = write_report([study], tmp_path / "r.html")
    page = html_path.read_text()
    assert "1 trial(s) show the figure re-timed side by side at the end of the search" in page
    assert "latency_from" in page and "latency_remeasured_ms" in csv_path.read_text().splitlines()[0]


def test_importances_are_for_accuracy_wherever_it_stands_among_the_objectives():
    """A study whose accuracy is its second objective: importances are still accuracy's."""
    from cnnsearch.plots import importance_figure

    study = optuna.create_study(directions=["minimize", "maximize"], study_name="second",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    study.set_metric_names(["latency_ms", "accuracy"])
    for _ in range(30):
        trial = study.ask()
        b = trial.suggest_float("b", 0.0, 1.0)  # decides accuracy
        c = trial.suggest_float("c", 0.0, 1.0)  # decides latency
        trial.set_constraint("infeasible", 0.0)
        study.tell(trial, [1.0 + 10 * c, 0.5 + 0.4 * b])
    fig = importance_figure(study)
    importance = dict(zip(fig.data[0].y, fig.data[0].x))
    assert max(importance, key=importance.get) == "b", importance
    assert fig.layout.height == 420
    assert fig.layout.title.text == "Parameter importances for accuracy (second; trained trials only)"
