"""What a user takes away can be trusted: finalize on the test split, refused recipe
changes, no re-proposed candidates, a stop on repeated failures."""

import json

import optuna
import pytest
from optuna.trial import TrialState

import cnnsearch.objective as objective_mod
from cnnsearch.cli import main
from cnnsearch.errors import FailingTrials
from cnnsearch.objective import Objective
from cnnsearch.recipe import load_recipe
from tests.conftest import run_cli
from tests.study_helpers import load, run_recipe, write_recipe


@pytest.mark.slow
def test_finalize_retrains_scores_on_test_records_and_export_uses_it(tmp_path):
    recipe = write_recipe(tmp_path, trials=3, epochs=2)
    assert run_cli("search", str(recipe)).returncode == 0
    result = run_cli("finalize", str(recipe), "--trial", "best", "--seeds", "2", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    trial = load(recipe).trials[out["trial"]]
    final = trial.user_attrs["final"]
    assert {k: v for k, v in out.items() if k != "trial"} == final
    assert final["epochs"] == 6 and final["seeds"] == 2 and len(final["test_accuracies"]) == 2
    assert final["test_accuracy_mean"] == pytest.approx(sum(final["test_accuracies"]) / 2)
    assert final["test_accuracy_std"] == pytest.approx(abs(final["test_accuracies"][0]
                                                           - final["test_accuracies"][1]) / 2 ** 0.5)
    assert all(0.5 < a <= 1 for a in final["test_accuracies"])  # trained, not chance (10 classes)
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["accuracy"] > 0  # the rest untouched
    status = run_cli("status", str(recipe), "--json")
    row = next(r for r in json.loads(status.stdout)["leaderboard"] if r["trial"] == out["trial"])
    assert row["test_mean"] == pytest.approx(final["test_accuracy_mean"])
    export = run_cli("export", str(recipe), "--trial", str(out["trial"]), "-o", str(tmp_path / "m.py"),
                     "--weights", str(tmp_path / "m.safetensors"))
    assert export.returncode == 0, export.stderr
    assert "finalized weights (best of 2 seeds" in export.stdout
    bad = run_cli("finalize", str(recipe), "--seeds", "0")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --seeds")


def test_the_search_never_holds_the_test_split(tmp_path):
    objective = Objective.create(load_recipe(write_recipe(tmp_path)))
    assert objective.data.x_test is None and objective.data.y_test is None


@pytest.mark.slow
def test_a_changed_recipe_is_refused_and_the_study_untouched(tmp_path):
    recipe = write_recipe(tmp_path, trials=2, epochs=2)
    assert run_cli("search", str(recipe)).returncode == 0
    before = [(t.number, t.state, t.params, t.user_attrs) for t in load(recipe).trials]
    mtime = (tmp_path / "tiny.db").stat().st_mtime_ns
    write_recipe(tmp_path, trials=2, epochs=3)  # train.epochs 2 -> 3
    result = run_cli("search", str(recipe), "--trials", "1")
    assert result.returncode == 2
    assert result.stderr.startswith("error: study 'tiny' was made with another recipe: train.epochs: 2 -> 3")
    assert "new name" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert [(t.number, t.state, t.params, t.user_attrs) for t in load(recipe).trials] == before
    assert (tmp_path / "tiny.db").stat().st_mtime_ns == mtime
    write_recipe(tmp_path, trials=2, epochs=2, top='sampler = "random"')
    result = run_cli("search", str(recipe), "--trials", "1")
    assert result.returncode == 2 and result.stderr.startswith(
        "error: study 'tiny' was made with sampler 'evolution' (recorded when it was made) and this recipe names 'random'")
    assert [(t.number, t.state, t.params, t.user_attrs) for t in load(recipe).trials] == before
    write_recipe(tmp_path, trials=3, epochs=2, top="max_consecutive_failures = 2")  # the budget: fine
    assert run_cli("search", str(recipe)).returncode == 0
    assert len(load(recipe).trials) == 3


def _param_sets(study):
    return [tuple(sorted(t.params.items())) for t in study.trials]


@pytest.mark.slow
def test_resumed_runs_and_two_workers_propose_no_duplicates(tmp_path):
    recipe = write_recipe(tmp_path, trials=3, epochs=1, top='sampler = "random"')
    for _ in range(3):  # the first run, then two resumed runs of 3 more each
        assert run_cli("search", str(recipe), "--trials", "3").returncode == 0
    study = load(recipe)
    sets = _param_sets(study)
    assert len(sets) == 9 and len(set(sets)) == 9
    seeds = [t.user_attrs["sampler_seed"] for t in study.trials]
    assert seeds[:3] == [0, 0, 0] and len({seeds[0], seeds[3], seeds[6]}) == 3
    two = write_recipe(tmp_path, name="two", trials=6, epochs=1, top='sampler = "random"')
    result = run_cli("search", str(two), "--workers", "2")
    assert result.returncode == 0, result.stderr
    study = load(two, "two")
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2
    sets = _param_sets(study)
    assert len(set(sets)) == len(sets) >= 6


def test_a_fresh_single_worker_study_still_reproduces(tmp_path):
    for name in ("a", "b"):
        run_recipe(load_recipe(write_recipe(tmp_path, name=name, trials=2, epochs=1)), until=2)
    assert _param_sets(load(tmp_path / "a.toml", "a")) == _param_sets(load(tmp_path / "b.toml", "b"))


def test_consecutive_failures_stop_the_search_with_exit_1(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(objective_mod, "train", broken)
    recipe = write_recipe(tmp_path, trials=20, top="max_consecutive_failures = 3")
    with pytest.raises(FailingTrials, match="3 trials in a row failed; the last: RuntimeError: CUDA error"):
        run_recipe(load_recipe(recipe), until=20)
    study = load(recipe)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 3
    optuna.delete_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'tiny.db'}")
    assert main(["search", str(recipe), "--quiet"]) == 1  # the CLI: one error line, exit 1


@pytest.mark.slow
def test_data_that_loads_differently_is_refused(tmp_path):
    from cnnsearch.errors import RecipeError
    from cnnsearch.study import check_data

    recipe = write_recipe(tmp_path, trials=1, epochs=1)
    assert run_cli("search", str(recipe)).returncode == 0
    study = load(recipe)
    stored = study.user_attrs["data"]
    assert stored["classes"] == [str(c) for c in range(10)] and stored["input_size"] == [1, 8, 8]
    check_data(study, dict(stored))  # the same: fine
    with pytest.raises(RecipeError, match=r"loads differently .*\(mean changed\)"):
        check_data(study, {**stored, "mean": [0.5]})
    old = optuna.create_study(study_name="old", storage=f"sqlite:///{tmp_path / 'tiny.db'}")
    old.tell(old.ask(), 1.0)  # trials, but no data description: made before test splits
    with pytest.raises(RecipeError, match="older cnnsearch"):
        check_data(old, dict(stored))


def test_unknown_data_option_is_one_error_line(tmp_path):
    recipe = write_recipe(tmp_path, extra="[data]\nsise = 8\n")
    result = run_cli("search", str(recipe))
    assert result.returncode == 2
    assert result.stderr.strip().endswith("data.sise: not an option of digits (allowed: val_fraction, "
                                          "test_fraction, seed)")
    assert not (tmp_path / "tiny.db").exists()


def test_finalize_uses_the_hyperparameters_the_space_fixes(tmp_path, monkeypatch):
    import cnnsearch.finalize as finalize_mod
    from tests.study_helpers import TINY_SPACE

    space = TINY_SPACE.replace("batch_size = 64", 'batch_size = 64\noptimizer = "sgd"\nmomentum = 0.8')
    recipe = load_recipe(write_recipe(tmp_path, trials=2, epochs=1, space=space))
    study = run_recipe(recipe, until=2)
    seen = []
    real = finalize_mod.train

    def spy(model, data, cfg, **kw):
        seen.append(cfg)
        return real(model, data, cfg, **kw)

    monkeypatch.setattr(finalize_mod, "train", spy)
    number, final = finalize_mod.finalize(study, recipe, seeds=2, epochs=2)
    tuned = study.trials[number].params["lr"]
    assert [(c.optimizer, c.momentum, c.lr, c.batch_size, c.epochs, c.seed) for c in seen] == [
        ("sgd", 0.8, tuned, 64, 2, 0), ("sgd", 0.8, tuned, 64, 2, 1)]
    assert final["best_seed"] == max(range(2), key=lambda s: (final["val_accuracies"][s], -s))
