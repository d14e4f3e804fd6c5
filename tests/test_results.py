"""Results as data: cnnsearch.open_study and cnnsearch.trials_frame, and `status --csv`."""

import io
import math

import pandas as pd
import pytest

import cnnsearch
from cnnsearch.cli import main
from cnnsearch.errors import RecipeError
from cnnsearch.plots import pareto_figure
from cnnsearch.report import leaderboard, pick_trial, quality_metric
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


def test_balanced_accuracy_is_an_objective_and_a_column(tmp_path, capsys):
    recipe = write_recipe(tmp_path, trials=2, epochs=1, top='objectives = ["balanced_accuracy", "latency_ms"]')
    assert main(["search", str(recipe), "--quiet"]) == 0
    study = cnnsearch.open_study(recipe)
    assert study.metric_names == ["balanced_accuracy", "latency_ms"]
    df = cnnsearch.trials_frame(study)
    for t in study.trials:
        assert t.values[0] == t.user_attrs["balanced_accuracy"] == df.loc[t.number, "balanced_accuracy"]
    assert df["pareto"].any()
    # the study's score ranks its trials: --trial best, the leaderboard, status, the plot's y axis
    front = df[df["pareto"]]
    assert pick_trial(study, "best").number == front.sort_values(
        ["balanced_accuracy", "latency_ms"], ascending=[False, True]).iloc[0]["trial"]
    assert quality_metric(study.metric_names) == "balanced_accuracy" == quality_metric(["balanced_accuracy"])
    assert quality_metric(["accuracy", "balanced_accuracy"]) == "accuracy" == quality_metric(None)
    assert list(leaderboard(df, by="balanced_accuracy")["trial"]) == list(
        df[df.feasible].sort_values(["pareto", "balanced_accuracy", "latency_ms"],
                                    ascending=[False, False, True])["trial"])
    assert main(["status", str(recipe)]) == 0
    assert "val bal" in capsys.readouterr().out
    fig = pareto_figure({"tiny": df}, y="balanced_accuracy")
    trained = next(t for t in fig.data if t.meta["role"] == "trained")
    assert list(trained.y) == list(df[df.feasible]["balanced_accuracy"])
    assert fig.layout.yaxis.title.text == "validation balanced accuracy"


def test_status_csv_into_a_closed_pipe_ends_quietly(two_trials):
    import subprocess
    import sys

    result = subprocess.run(f"{sys.executable} -m cnnsearch status {two_trials} --csv | head -c 10",
                            shell=True, capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith("trial,stat") and "Traceback" not in result.stderr, result.stderr


def test_open_study_takes_another_study_of_the_recipe_s_storage_by_name(tmp_path):
    from cnnsearch.results import open_study
    from tests.study_helpers import recorded_studies

    path = recorded_studies(tmp_path, ["first", "second"])
    assert open_study(path, "second").study_name == "second"
    assert open_study(path, "first").study_name == "first"


def test_a_study_not_found_or_not_named_lists_the_storage_s_studies(tmp_path):
    from cnnsearch.errors import RecipeError
    from cnnsearch.recipe import load_recipe
    from cnnsearch.results import open_study
    from tests.study_helpers import recorded_studies

    url = load_recipe(recorded_studies(tmp_path, ["first", "second"])).storage
    with pytest.raises(RecipeError) as info:
        open_study(url)
    assert str(info.value) == f"{url} holds 2 studies (first, second): name one with study="
    with pytest.raises(RecipeError) as info:
        open_study(url, "third")
    assert str(info.value) == f"study 'third' not found in {url} (studies there: first, second)"


def test_a_storage_without_studies_says_it_holds_none(tmp_path):
    from cnnsearch.errors import RecipeError
    from cnnsearch.results import open_study
    from cnnsearch.storage import open_storage

    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_storage(url)  # the schema, no study
    with pytest.raises(RecipeError) as info:
        open_study(url)
    assert str(info.value) == f"{url} holds 0 studies (none): name one with study="


def test_a_storage_with_one_study_opens_it_unnamed(tmp_path):
    from cnnsearch.recipe import load_recipe
    from cnnsearch.results import open_study
    from tests.study_helpers import recorded_studies

    url = load_recipe(recorded_studies(tmp_path, ["only"])).storage
    assert open_study(url).study_name == "only"
