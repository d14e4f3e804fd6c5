"""Results as data: cnnsearch.open_study and cnnsearch.trials_frame, and `status --csv`."""

import io
import math

import pandas as pd
import pytest

import cnnsearch
from cnnsearch.cli import main
from cnnsearch.errors import RecipeError
from cnnsearch.storage import set_finished_trial_user_attrs
from tests.study_helpers import write_recipe


@pytest.fixture(scope="module")
def two_trials(tmp_path_factory):
    folder = tmp_path_factory.mktemp("results")
    recipe = write_recipe(folder, trials=2, epochs=2)
    assert main(["search", str(recipe), "--quiet"]) == 0
    return recipe


def test_open_study_from_a_recipe_or_a_storage_url(two_trials):
    url = f"sqlite:///{two_trials.parent / 'tiny.db'}"
    by_recipe = cnnsearch.open_study(two_trials)
    by_url = cnnsearch.open_study(url)  # the storage's only study
    named = cnnsearch.open_study(url, "tiny")
    assert by_recipe.study_name == by_url.study_name == named.study_name == "tiny"
    assert len(by_recipe.trials) == len(by_url.trials) == 2
    with pytest.raises(RecipeError, match="study 'ghost' not found"):
        cnnsearch.open_study(url, "ghost")
    missing = two_trials.parent / "none.db"
    with pytest.raises(RecipeError, match="no such database"):
        cnnsearch.open_study(f"sqlite:///{missing}")
    assert not missing.exists()  # reading never creates a database


def test_the_frame_has_every_parameter_and_what_each_trial_recorded(two_trials):
    study = cnnsearch.open_study(two_trials)
    trial = study.trials[1]
    set_finished_trial_user_attrs(study, trial, {"latency_remeasured_ms": 0.125})
    df = cnnsearch.trials_frame(cnnsearch.open_study(two_trials))
    assert len(df) == 2 and list(df["trial"]) == [0, 1]
    for t in study.trials:
        row = df.iloc[t.number]
        # every sampled parameter, architecture and training alike, under Optuna's column name
        assert t.params and all(row[f"params_{k}"] == v for k, v in t.params.items())
        a = t.user_attrs
        assert row["worker"] == a["worker"] == "0" and row["device"] == a["device"] == "cpu"
        assert row["epochs"] == 2 and row["curve"] == a["curve"] and len(row["curve"]) == 2
        assert row["accuracy"] == a["accuracy"] and row["latency_ms"] == a["latency_ms"]
        assert row["latency_iqr_ms"] == a["latency_iqr_ms"]
        assert row["balanced_accuracy"] == a["balanced_accuracy"] and 0 < row["balanced_accuracy"] <= 1
        assert row["seconds"] >= row["train_seconds"] > 0  # the whole trial, and its training
        assert row["baseline"] == "" and math.isnan(row["test_mean"])
    assert df.loc[1, "latency_remeasured_ms"] == 0.125 and math.isnan(df.loc[0, "latency_remeasured_ms"])
    assert "params_lr" in df and df["params_lr"].between(3e-3, 1e-2).all()


def test_status_csv_is_the_frame(two_trials, capsys):
    assert main(["status", str(two_trials), "--csv"]) == 0
    csv = pd.read_csv(io.StringIO(capsys.readouterr().out))
    df = cnnsearch.trials_frame(cnnsearch.open_study(two_trials))
    assert list(csv.columns) == list(df.columns)
    assert list(csv["trial"]) == list(df["trial"]) and list(csv["accuracy"]) == list(df["accuracy"])
    assert main(["status", str(two_trials), "--csv", "--json"]) == 2


def test_balanced_accuracy_is_an_objective_and_a_column(tmp_path):
    recipe = write_recipe(tmp_path, trials=2, epochs=1, top='objectives = ["balanced_accuracy", "latency_ms"]')
    assert main(["search", str(recipe), "--quiet"]) == 0
    study = cnnsearch.open_study(recipe)
    assert study.metric_names == ["balanced_accuracy", "latency_ms"]
    df = cnnsearch.trials_frame(study)
    for t in study.trials:
        assert t.values[0] == t.user_attrs["balanced_accuracy"] == df.loc[t.number, "balanced_accuracy"]
    assert df["pareto"].any()
