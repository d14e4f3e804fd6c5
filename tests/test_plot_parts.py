"""The report's figures as data, in process: each study keeps one colour across its points
and its best-so-far line, and the axes say what they show. Surviving mutants before."""

from cnnsearch.plots import PALETTE, history_figure
from cnnsearch.report import trials_frame
from tests.test_report_frame import add, new_study


def test_the_history_gives_each_study_one_colour_and_names_its_axes():
    frames = {}
    for name in ("a", "b"):
        study = new_study(name)
        add(study, acc=0.7, lat=1.0)
        add(study, acc=0.9, lat=2.0)
        frames[name] = trials_frame(study)
    fig = history_figure(frames)
    points, best, points_b, best_b = fig.data
    assert points.marker.color == best.line.color == PALETTE[0]
    assert points_b.marker.color == best_b.line.color == PALETTE[1]
    assert points.marker.size == 7 and list(best.y) == [0.7, 0.9]
    assert fig.layout.yaxis.title.text == "validation accuracy" and fig.layout.xaxis.title.text == "trial"
    assert fig.layout.height == 420


def test_the_pareto_figure_draws_each_kind_of_trial_apart():
    from cnnsearch.plots import pareto_figure

    study = new_study("a")
    add(study, acc=0.9, lat=2.0)
    add(study, acc=0.8, lat=1.0, baseline="lenet")
    add(study, status="early_stopped", acc=0.0, lat=1.5)
    add(study, status="over_limit", acc=0.0, lat=0.5)
    fig = pareto_figure({"a": trials_frame(study)})
    traces = {t.meta["role"]: t for t in fig.data}
    assert set(traces) == {"trained", "baseline", "front", "pruned", "infeasible"}
    assert all(t.meta["study"] == "a" for t in fig.data)
    assert traces["trained"].mode == "markers" and list(traces["trained"].x) == [2.0]
    star = traces["baseline"]
    assert star.mode == "markers+text" and list(star.text) == ["lenet"]
    assert star.marker.symbol == "star" and star.marker.line.width == 1 and star.marker.line.color == "black"
    assert list(traces["front"].x) == [1.0, 2.0]
    trained = traces["trained"].customdata[0]
    assert list(trained[:4]) == [0, "c4k3", 1234, 5000] and trained[6] == "search"


def test_a_frame_without_a_baseline_column_draws_every_feasible_trial_as_trained():
    """pareto_figure takes any frame with trials_frame's columns; one without "baseline"
    (a user's own, or one from before baselines) has no stars, only trained points."""
    from cnnsearch.plots import pareto_figure

    study = new_study("a")
    add(study, acc=0.9, lat=2.0)
    add(study, acc=0.8, lat=1.0)
    fig = pareto_figure({"a": trials_frame(study).drop(columns="baseline")})
    traces = {t.meta["role"]: t for t in fig.data}
    assert sorted(traces["trained"].x) == [1.0, 2.0]
    assert "baseline" not in traces or not len(traces["baseline"].x)
