"""Corners where a study used to give a wrong result silently: each test here failed on
commit 9200455 (the OOM retry's tests are in test_training_exact.py)."""

import json
import os
import re
import subprocess
import tomllib

import optuna
import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from cnnsearch.cli import main
from cnnsearch.errors import RecipeError
from cnnsearch.recipe import load_recipe, resolve_recipe
from cnnsearch.recovery import process_owner
from cnnsearch.storage import open_storage
from cnnsearch.study import open_study
from tests.conftest import ROOT
from tests.study_helpers import TINY_SPACE, load, run_recipe, write_recipe

ONE_EPOCH = {"epochs": 1}


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- --study with a recipe file ------------------------------------------------------------


def test_a_given_study_is_honoured_beside_a_recipe(tmp_path, capsys):
    path = write_recipe(tmp_path, trials=1, **ONE_EPOCH)
    run_recipe(load_recipe(path), until=1)
    other = resolve_recipe(str(path), None, "other")
    assert (other.name, other.storage, other.artifacts) == ("other", load_recipe(path).storage,
                                                           load_recipe(path).artifacts)
    run_recipe(other, until=2)  # "other" has trials 0 and 1; "tiny" only trial 0

    code, _, err = cli(capsys, "status", path, "--study", "nonexistent")
    assert code == 2 and err.startswith("error: study 'nonexistent' not found") and "tiny" in err
    code, out, _ = cli(capsys, "status", path, "--study", "other", "--json")
    assert code == 0 and json.loads(out)["study"] == "other" and json.loads(out)["trials"] == 2
    code, out, err = cli(capsys, "export", path, "--study", "other", "--trial", "1", "-o", tmp_path / "m.py")
    assert code == 0 and "trial 1 " in out, err
    code, out, err = cli(capsys, "finalize", path, "--study", "other", "--trial", "1", "--epochs", "1",
                         "--seeds", "1", "--json")
    assert code == 0 and json.loads(out)["trial"] == 1, err
    assert "final" in load(path, "other", storage=load_recipe(path).storage).trials[1].user_attrs
    assert "final" not in load(path, "tiny").trials[0].user_attrs


# --- report: studies that share a name ---------------------------------------------------------


def test_report_keeps_apart_two_studies_that_share_a_name(tmp_path, capsys):
    paths = []
    for folder, trials in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        paths.append(write_recipe(tmp_path / folder, trials=trials, **ONE_EPOCH))
        run_recipe(load_recipe(paths[-1]), until=trials)
    out = tmp_path / "r.html"
    code, printed, err = cli(capsys, "report", *paths, "-o", out)
    assert code == 0, err
    first, second = tmp_path / "r_tiny.csv", tmp_path / "r_tiny@2.csv"
    assert len(first.read_text().splitlines()) == 2 and len(second.read_text().splitlines()) == 3
    page = out.read_text()
    assert "<h2>tiny</h2>" in page and "<h2>tiny #2</h2>" in page
    assert "(2 studies)" in printed


# --- a recipe's fixed batch size is no trial parameter ------------------------------------------


def test_a_recipe_batch_size_is_used_and_never_sampled(tmp_path, capsys):
    space = TINY_SPACE.replace("batch_size = 64", "batch_size = [64, 128]")
    path = write_recipe(tmp_path, space=space, trials=1, extra="batch_size = 32\n", **ONE_EPOCH)
    study = run_recipe(load_recipe(path), until=1)
    trial = study.trials[0]
    assert "batch_size" not in trial.params and trial.user_attrs["status"] == "ok"
    n_train = 1797 - round(1797 * 0.2) - round(1797 * 0.2)  # about: the split rounds per class
    assert abs(trial.user_attrs["steps_per_epoch"] - n_train // 32) <= 1  # 32 trained, not 64 or 128
    code, out, err = cli(capsys, "finalize", path, "--trial", "0", "--epochs", "1", "--seeds", "1", "--json")
    assert code == 0, err  # the fixed value needs no parameter


# --- a failed data load leaves nothing; an empty study is a study ---------------------------


def test_a_data_load_that_fails_creates_nothing_and_the_fixed_recipe_then_runs(tmp_path, capsys):
    path = write_recipe(tmp_path, trials=1, extra="[data]\nval_fraction = 0.999\n", **ONE_EPOCH)
    code, _, err = cli(capsys, "search", path)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.toml", "tiny.toml"]  # no database
    path.write_text(path.read_text().replace("0.999", "0.2"))
    code, _, err = cli(capsys, "search", path, "--quiet")
    assert code == 0, err
    assert len(load(path).trials) == 1


def test_a_study_left_without_trials_takes_the_corrected_recipe(tmp_path, capsys):
    """What an older cnnsearch left after a failed data load: the study, its recipe, no trial."""
    path = write_recipe(tmp_path, trials=1, extra="[data]\nval_fraction = 0.5\n", **ONE_EPOCH)
    poisoned = load_recipe(path)
    open_study(poisoned, open_storage(poisoned.storage))
    code, out, err = cli(capsys, "status", path)
    assert code == 0 and "no trials yet" in out, err
    code, out, err = cli(capsys, "status", path, "--json")
    assert code == 0 and json.loads(out)["trials"] == 0 and json.loads(out)["pareto"] == []
    code, out, err = cli(capsys, "report", path, "-o", tmp_path / "r.html")
    assert code == 0 and "0 trials" in (tmp_path / "r.html").read_text(), err
    assert (tmp_path / "r_tiny.csv").read_text().startswith("trial,state,status,feasible,pareto")
    path.write_text(path.read_text().replace("0.5", "0.3"))
    code, _, err = cli(capsys, "search", path, "--quiet")
    assert code == 0, err
    study = load(path)
    assert study.user_attrs["recipe"]["data"] == {"val_fraction": 0.3} and len(study.trials) == 1


# --- a dead worker's trial is recovered even when the budget is met ------------------------------


def test_a_dead_workers_trial_is_recovered_when_the_budget_is_met(tmp_path, capsys):
    path = write_recipe(tmp_path, trials=1, **ONE_EPOCH)
    study = run_recipe(load_recipe(path), until=1)
    dead = subprocess.Popen(["true"])
    dead.wait()
    trial = study.ask()  # a worker that started trial 1 and was killed (kill -9) before its end
    trial.set_user_attr("owner", {**process_owner(), "pid": dead.pid, "start": 0})
    code, out, err = cli(capsys, "search", path, "--quiet")
    assert code == 0, err
    assert re.search(r"trial +1 failed: its worker on this host died; re-queued", out)
    states = [t.state for t in load(path).trials]
    assert optuna.trial.TrialState.RUNNING not in states
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and states[-1] == optuna.trial.TrialState.COMPLETE
    code, out, _ = cli(capsys, "search", path, "--quiet")
    assert code == 0 and "already has 2 finished trials" in out  # the re-run counts: nothing more owed


# --- the Optuna pin admits only versions with the APIs used ------------------------------------


def test_the_optuna_pin_admits_only_versions_with_the_apis_used():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = SpecifierSet(next(d for d in deps if d.startswith("optuna"))[len("optuna"):].split()[0])
    assert not spec.contains("4.9")  # Trial.set_constraint and FrozenTrial.constraints came with 5.0
    assert Version(optuna.__version__) in spec  # what the suite runs on is admitted
    assert hasattr(optuna.Trial, "set_constraint") and hasattr(optuna.trial.FrozenTrial, "constraints")


# --- resuming: a default written out is no change ---------------------------------------------


def test_a_default_written_out_resumes_the_study(tmp_path, capsys):
    path = write_recipe(tmp_path, trials=1, **ONE_EPOCH)
    run_recipe(load_recipe(path), until=1)
    path.write_text(path.read_text() + "[data]\nval_fraction = 0.2\ntest_fraction = 0.2\nseed = 0\n")
    code, out, err = cli(capsys, "search", path, "--trials", "1", "--quiet")
    assert code == 0, err
    path.write_text(path.read_text().replace("seed = 0\n", "seed = 1\n"))
    code, _, err = cli(capsys, "search", path, "--trials", "1", "--quiet")
    assert code == 2 and "data.seed: 0 -> 1" in err  # a real change is still one


def test_a_stored_recipe_that_no_longer_validates_is_refused_in_words(tmp_path):
    path = write_recipe(tmp_path, trials=1, **ONE_EPOCH)
    recipe = load_recipe(path)
    storage = open_storage(recipe.storage)
    study = open_study(recipe, storage)
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0]))
    study.set_user_attr("recipe", {**study.user_attrs["recipe"], "sampler": "cmaes-of-the-future"})
    with pytest.raises(RecipeError, match="keeps a recipe that this cnnsearch cannot read .*sampler"):
        open_study(recipe, storage)


# --- every path in a recipe is relative to the recipe ------------------------------------------


def test_every_path_in_a_recipe_is_relative_to_the_recipe(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    path = write_recipe(folder, extra="", top='artifacts = "weights"\ndataset = "folder:photos"\n'
                        .replace('dataset = "folder:photos"\n', ""))
    path.write_text(path.read_text().replace('dataset = "digits"', 'dataset = "folder:photos"'))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    recipe = load_recipe(path)
    assert recipe.artifacts == str(folder / "weights")
    assert recipe.dataset == f"folder:{folder / 'photos'}"
    assert recipe.storage == f"sqlite:///{folder / 'tiny.db'}"
    assert os.path.isabs(recipe.artifacts)


# --- a study made by the previous version resumes unchanged --------------------------------------


def test_a_study_made_at_9200455_resumes_keeps_its_fingerprint_and_exports(tmp_path, capsys):
    """tests/fixtures/study_9200455: a 2-trial digits study with early stopping and a data
    default written out (`val_fraction = 0.2`), made by cnnsearch at commit 9200455."""
    import shutil

    shutil.copytree(ROOT / "tests" / "fixtures" / "study_9200455", tmp_path / "s")
    path = tmp_path / "s" / "old.toml"
    before = load(path, "old").trials
    code, out, err = cli(capsys, "search", path, "--trials", "1", "--quiet")
    assert code == 0, err
    study = load(path, "old")
    assert len(study.trials) == 3 and study.trials[2].user_attrs["status"] in ("ok", "early_stopped")
    # its early-stopping peers are the old trials: one fingerprint across the versions
    assert {t.user_attrs["fingerprint"] for t in study.trials} == {before[0].user_attrs["fingerprint"]}
    assert study.user_attrs["fingerprint"] == before[0].user_attrs["fingerprint"]
    code, out, err = cli(capsys, "export", path, "--trial", "1", "-o", tmp_path / "m.py",
                         "--weights", tmp_path / "m.safetensors")
    assert code == 0 and (tmp_path / "m.safetensors").stat().st_size > 0, err


def test_a_trial_failed_for_its_latency_server_is_retried_twice_and_says_so():
    """requeue_failed re-queues the same parameters at most MAX_RETRY times and answers
    truly each time (Optuna's retry callback appends to the trial's history: it must not
    make the answer of the last retry wrong, or the trial be re-queued a third time)."""
    import warnings

    from cnnsearch.recovery import MAX_RETRY, requeue_failed

    study = optuna.create_study()

    def down(trial):
        trial.suggest_float("x", 0, 1)
        trial.set_user_attr("retry", "latency server")
        raise RuntimeError("down")

    answers = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(down, n_trials=1, catch=(Exception,))
        for _ in range(MAX_RETRY + 1):
            answers.append(requeue_failed(study, study.trials[-1]))
            if study.get_trials(states=(optuna.trial.TrialState.WAITING,)):
                study.optimize(down, n_trials=1, catch=(Exception,))
    assert answers == [True] * MAX_RETRY + [False]
    assert len(study.trials) == MAX_RETRY + 1 and len({t.params["x"] for t in study.trials}) == 1
