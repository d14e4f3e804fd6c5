"""A study records its resolved sampler and early-stopping settings when it is made, so a
later change of default never refuses (or silently changes) a study made before."""

import shutil

import optuna
import pytest

from cnnsearch import samplers
from cnnsearch.cli import main
from cnnsearch.errors import RecipeError
from cnnsearch.evolution import EvolutionSampler
from cnnsearch.recipe import EarlyStopping, Recipe, load_recipe, resolve_recipe
from cnnsearch.samplers import RECORD_KEY, recorded, resolve
from cnnsearch.storage import open_storage
from cnnsearch.study import check_existing, open_worker
from tests import study_helpers
from tests.conftest import ROOT
from tests.study_helpers import load, new_study

FIXTURE = ROOT / "tests" / "fixtures" / "study_9200455"


def write_recipe(tmp_path, **kwargs):
    """These tests are about what a recipe leaves unwritten: early stopping too."""
    return study_helpers.write_recipe(tmp_path, **{"early_stopping": None, **kwargs})


@pytest.fixture
def new_defaults(monkeypatch):
    """What a later version might ship: another default sampler, early stopping off, and
    "tpe" constructing another TPE."""
    monkeypatch.setattr(Recipe, "sampler", "random")
    monkeypatch.setattr(EarlyStopping, "enabled", False)
    monkeypatch.setattr(EarlyStopping, "keep", 0.5)
    monkeypatch.setitem(samplers.SAMPLER_OPTIONS, "tpe", {"multivariate": True, "group": True, "constant_liar": True,
                                                           "n_startup_trials": 20})


def open_seat(path):
    recipe = load_recipe(path)
    return open_worker(recipe, open_storage(recipe.storage))


def test_a_recipe_file_says_which_search_settings_it_leaves_out(tmp_path):
    bare = load_recipe(write_recipe(tmp_path))
    assert bare.unwritten == {"sampler", *(f"early_stopping.{k}" for k in EarlyStopping.__dataclass_fields__)}
    written = load_recipe(write_recipe(tmp_path, top='sampler = "tpe"', extra="[early_stopping]\nkeep = 0.5\n"))
    assert written.unwritten == {f"early_stopping.{k}" for k in ("enabled", "margin", "rungs", "min_epoch")}
    assert written == bare.__class__(**{**vars(bare), "sampler": "tpe", "early_stopping": EarlyStopping(keep=0.5)})
    assert "unwritten" not in written.to_dict()  # the stored recipe is what it resolved to
    # --study beside a recipe file keeps what the file left out
    assert resolve_recipe(str(write_recipe(tmp_path)), None, "other").unwritten == bare.unwritten


def test_a_new_study_records_its_resolved_sampler_and_early_stopping(tmp_path):
    seat = open_seat(write_recipe(tmp_path, extra="[early_stopping]\nrungs = [0.5]\n"))
    assert seat.study.user_attrs[RECORD_KEY] == {
        "sampler": "evolution", "sampler_options": {"population": 12, "tournament": 4},
        "early_stopping": {"enabled": True, "margin": 0.03, "rungs": [0.5], "keep": 1 / 3, "min_epoch": 1}}
    assert isinstance(seat.study.sampler, EvolutionSampler)


def test_a_changed_default_resumes_a_study_with_its_recorded_settings(tmp_path, new_defaults):
    path = write_recipe(tmp_path)
    record = {"sampler": "tpe", "sampler_options": {"multivariate": True, "group": True},
              "early_stopping": {"enabled": True, "margin": 0.0, "rungs": [0.5], "keep": 0.25, "min_epoch": 2}}
    recipe = load_recipe(path)
    assert (recipe.sampler, recipe.early_stopping.enabled) == ("random", False)  # today's (patched) defaults
    resolved = resolve(recipe, record)
    assert resolved.sampler == "tpe"
    assert resolved.early_stopping == EarlyStopping(enabled=True, margin=0.0, rungs=(0.5,), keep=0.25, min_epoch=2)
    # what a recipe writes stays written; the rest is the study's
    written = load_recipe(write_recipe(tmp_path, extra="[early_stopping]\nenabled = true\nkeep = 0.5\n"))
    assert resolve(written, record).early_stopping == EarlyStopping(enabled=True, margin=0.0, rungs=(0.5,), keep=0.5,
                                                                    min_epoch=2)
    assert resolve(recipe, None) is recipe  # a study yet to be made takes the recipe as it is


def test_a_study_without_a_record_resolves_to_what_was_shipped_then():
    assert recorded({}) == {"sampler": "tpe", "sampler_options": {"multivariate": True, "group": True,
                                                                  "constant_liar": True},
                            "early_stopping": {"enabled": False, "margin": 0.0, "rungs": [1 / 6, 1 / 3, 2 / 3],
                                               "keep": 1 / 3, "min_epoch": 1}}
    # a stored recipe holds what it resolved to; keys from before early stopping's rework are dropped
    old = recorded({"recipe": {"sampler": "nsga2", "early_stopping": {"enabled": True, "patience": 2}}})
    assert old["sampler"] == "nsga2" and old["sampler_options"] == {}
    assert old["early_stopping"]["enabled"] is True and "patience" not in old["early_stopping"]
    assert recorded({RECORD_KEY: {"sampler": "gp"}, "recipe": {"sampler": "tpe"}}) == {"sampler": "gp"}


def test_a_recipe_naming_another_sampler_is_refused_naming_both_and_the_way_out(tmp_path, capsys):
    path = write_recipe(tmp_path, trials=1, epochs=1, top='sampler = "tpe"')
    new_study(load_recipe(path))  # with its data recorded: not a study left empty
    other = load_recipe(write_recipe(tmp_path, trials=1, epochs=1, top='sampler = "random"'))
    with pytest.raises(RecipeError) as info:
        check_existing(open_storage(other.storage), other)
    assert str(info.value) == (
        "study 'tiny' was made with sampler 'tpe' (recorded when it was made) and this recipe names 'random': "
        "remove the recipe's `sampler` line to resume it with 'tpe', or give the recipe a new name (or another "
        "storage) to search with 'random'")
    code = main(["search", str(tmp_path / "tiny.toml"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "'random'" in err
    # naming the study's own sampler is no change
    same = load_recipe(write_recipe(tmp_path, trials=1, epochs=1, top='sampler = "tpe"'))
    assert check_existing(open_storage(same.storage), same) is not None


def test_the_recorded_sampler_options_build_the_sampler_not_todays(tmp_path, new_defaults):
    path = write_recipe(tmp_path, top='sampler = "tpe"')
    study = new_study(load_recipe(path))
    assert study.user_attrs[RECORD_KEY]["sampler_options"]["n_startup_trials"] == 20
    record = {**study.user_attrs[RECORD_KEY], "sampler_options": {"multivariate": True, "group": True,
                                                                  "constant_liar": False}}
    study.set_user_attr(RECORD_KEY, record)  # as if made by a version whose "tpe" was another TPE
    again = open_seat(path).study
    assert again.user_attrs[RECORD_KEY] == record
    tpe = again.sampler  # test-only peeks at the TPE it built
    assert (tpe._constant_liar, tpe._multivariate, tpe._group, tpe._n_startup_trials) == (False, True, True, 10)


def test_the_study_made_at_9200455_resumes_under_changed_defaults(tmp_path, capsys, new_defaults):
    """The fixture's recipe names no sampler; its early stopping writes only `enabled`."""
    resume_9200455(tmp_path, capsys)


def test_the_study_made_at_9200455_resumes_under_todays_defaults(tmp_path, capsys):
    """evolution and early stopping with margin 0.03 today: the old study stays on its tpe."""
    assert (Recipe.sampler, EarlyStopping.enabled, EarlyStopping.margin) == ("evolution", True, 0.03)
    resume_9200455(tmp_path, capsys)


def resume_9200455(tmp_path, capsys):
    shutil.copytree(FIXTURE, tmp_path / "s")
    path = tmp_path / "s" / "old.toml"
    stored = load(path, "old").user_attrs["recipe"]
    assert RECORD_KEY not in load(path, "old").user_attrs
    code = main(["search", str(path), "--trials", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    study = load(path, "old")
    assert len(study.trials) == 3
    record = study.user_attrs[RECORD_KEY]  # written on its first resume: what it ran with
    assert record["sampler"] == "tpe" and record["sampler_options"] == {"multivariate": True, "group": True,
                                                                        "constant_liar": True}
    assert record["early_stopping"] == stored["early_stopping"]  # keep 1/3 there, not today's 0.5
    assert study.user_attrs["recipe"] == stored  # its recipe untouched
    # a recipe naming another sampler is refused with the way out
    path.write_text(path.read_text().replace('seed = 0', 'seed = 0\nsampler = "nsga2"'))
    assert main(["search", str(path), "--trials", "1", "--quiet"]) == 2
    assert "made with sampler 'tpe'" in capsys.readouterr().err


def test_a_study_made_by_other_optuna_code_is_refused_before_anything_is_written(tmp_path, capsys):
    """No stored data description and trials: not a cnnsearch study. Refused as that (not
    as a changed sampler 'recorded when it was made', which it never recorded), before a
    worker writes a record, a recipe or a fingerprint into it."""
    path = write_recipe(tmp_path, trials=1, epochs=1, top='sampler = "evolution"')
    written = load_recipe(path)
    foreign = optuna.create_study(study_name="tiny", storage=written.storage, directions=written.directions)
    foreign.enqueue_trial({"depth": 1})
    with pytest.raises(RecipeError) as info:
        check_existing(open_storage(written.storage), written)
    assert str(info.value).startswith("study 'tiny' has trials but no stored data description: it was made by "
                                      "other Optuna code")
    assert main(["search", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "other Optuna code" in err
    assert load(path).user_attrs == {} and len(load(path).trials) == 1


def test_an_unknown_sampler_name_is_refused_with_the_known_ones():
    with pytest.raises(RecipeError) as raised:
        samplers.make_sampler("cmaes", 0)
    assert str(raised.value) == f"sampler: 'cmaes' is not one of {', '.join(samplers.SAMPLERS)}"
    assert ", ".join(samplers.SAMPLERS) == "tpe, nsga2, random, gp, evolution"


@pytest.mark.parametrize("name", samplers.SAMPLERS)
def test_each_sampler_is_built_with_the_options_given(name):
    """A study's recorded options reach its sampler's constructor, whichever sampler: an
    option the constructor does not take is an error there, never dropped in silence."""
    with pytest.raises(TypeError, match="not_an_option"):
        samplers.make_sampler(name, 0, {"not_an_option": 1})
