"""The objectives registry (cnnsearch/objectives.py) and memory_bytes, added through it:
an objective and a limit like any other, with nothing but its entry."""

import dataclasses
import math

import optuna
import pytest
from optuna.trial import TrialState

from cnnsearch.early_stopping import KNOWN_BEFORE_TRAINING, known_objectives
from cnnsearch.errors import RecipeError
from cnnsearch.objectives import CHECK, METRICS, OBJECTIVES
from cnnsearch.plots import pareto_figure
from cnnsearch.recipe import Limits
from cnnsearch.report import AXIS_TITLES, trials_frame
from tests.test_pipeline_statuses import FakeTrain, fixed_sizes, make_objective, one_trial, recipe_file


def test_the_registry_is_what_every_reader_sees():
    assert OBJECTIVES == {"accuracy": "maximize", "balanced_accuracy": "maximize", "latency_ms": "minimize",
                          "params": "minimize", "flops": "minimize", "memory_bytes": "minimize"}
    assert [f.name for f in dataclasses.fields(Limits)] == ["max_params", "max_flops", "max_memory_bytes",
                                                            "max_latency_ms"]
    assert KNOWN_BEFORE_TRAINING == ("latency_ms", "params", "flops", "memory_bytes")
    assert set(AXIS_TITLES) == set(KNOWN_BEFORE_TRAINING)
    assert METRICS["latency_ms"].over_limit(1.23456, 1.0) == "latency 1.235 ms > limits.max_latency_ms 1.0"
    assert METRICS["memory_bytes"].over_limit(12345, 1000) == "memory_bytes 12,345 > limits.max_memory_bytes 1,000"
    assert METRICS["accuracy"].limit is None and not METRICS["accuracy"].known_before_training


def test_memory_bytes_is_an_objective_read_off_the_shape_table(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, objectives=["accuracy", "memory_bytes"])
    assert recipe.directions == ["maximize", "minimize"] and known_objectives(recipe.objectives) == ("memory_bytes",)
    _, table = fixed_sizes(recipe)
    objective, _ = make_objective(recipe, monkeypatch, train=FakeTrain(accuracies=(0.75,)))
    study, t = one_trial(recipe, objective)
    assert t.user_attrs["status"] == "ok"
    assert t.values == [0.75, table.peak_activation_bytes] and t.user_attrs["memory_bytes"] == table.peak_activation_bytes
    df = trials_frame(study)
    assert df["memory_bytes"].tolist() == [table.peak_activation_bytes] and df["pareto"].tolist() == [True]
    fig = pareto_figure({"t": df}, x="memory_bytes")
    assert fig.layout.xaxis.title.text == "peak activation memory (bytes, batch 1)"
    assert "peak activation memory %{x:,}" in fig.data[0].hovertemplate


def test_memory_over_its_limit_is_never_trained(tmp_path, monkeypatch):
    _, table = fixed_sizes(recipe_file(tmp_path))
    cap = table.peak_activation_bytes - 1
    recipe = recipe_file(tmp_path, objectives=["accuracy", "memory_bytes", "latency_ms"],
                         extra=f"[limits]\nmax_memory_bytes = {cap}\n")
    train = FakeTrain()
    objective, measure = make_objective(recipe, monkeypatch, train=train)
    _, t = one_trial(recipe, objective)
    assert t.state == TrialState.COMPLETE and t.user_attrs["status"] == "limit"
    assert t.user_attrs["infeasible_reason"] == (f"memory_bytes {table.peak_activation_bytes:,} > "
                                                 f"limits.max_memory_bytes {cap:,}")
    assert t.constraints == {"infeasible": pytest.approx(table.peak_activation_bytes / cap - 1)}
    assert t.values == [0.0, table.peak_activation_bytes, math.inf]  # latency never measured
    assert measure.calls == [] and train.cfgs == []


@pytest.mark.parametrize("value, message", [
    ("0", "limits.max_memory_bytes: 0 must be >= 1"),
    ("1.5", "limits.max_memory_bytes: expected an integer, got 1.5"),
    ('"1MB"', "limits.max_memory_bytes: expected an integer, got '1MB'"),
])
def test_a_bad_memory_limit_is_refused_in_words(tmp_path, value, message):
    with pytest.raises(RecipeError, match=": " + message.replace(".", r"\.") + "$"):
        recipe_file(tmp_path, extra=f"[limits]\nmax_memory_bytes = {value}\n")


def test_every_size_known_at_the_check_is_recorded(tmp_path, monkeypatch):
    """A trial records each CHECK-stage objective even where the study does not optimise it."""
    recipe = recipe_file(tmp_path)
    _, table = fixed_sizes(recipe)
    objective, _ = make_objective(recipe, monkeypatch, train=FakeTrain())
    _, t = one_trial(recipe, objective, optuna.create_study(directions=recipe.directions))
    assert {m.name: t.user_attrs[m.name] for m in METRICS.values() if m.stage == CHECK} == {
        "params": table.params, "flops": table.flops, "memory_bytes": table.peak_activation_bytes}
