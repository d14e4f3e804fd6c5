"""Baselines: known networks run as trials of a study, once, labelled everywhere."""

import threading
import uuid

import optuna
import pytest

import cnnsearch
from cnnsearch.baselines import enqueue_baselines, load_baseline
from cnnsearch.cli import main
from cnnsearch.errors import RecipeError
from cnnsearch.plots import pareto_figure
from cnnsearch.recipe import load_recipe
from cnnsearch.report import trained_study
from cnnsearch.storage import open_storage
from tests.conftest import ROOT, run_cli
from tests.study_helpers import PG_URL, new_study, perfect_peer, run_recipe, write_recipe

SHIPPED = ROOT / "baselines"
# the tutorial's Net (fits 8x8 digits) and its CNN (two 5x5 convs: cannot fit 8x8)
RECIPE_BASELINES = f"""
[[baselines]]
spec = "{SHIPPED / 'tutorial_net.json'}"
name = "tutorial Net"
[[baselines]]
spec = "{SHIPPED / 'tutorial_cnn.json'}"
"""


def _baselines(study):
    return {t.user_attrs["baseline"]: t for t in study.get_trials(deepcopy=False) if "baseline" in t.user_attrs}


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    folder = tmp_path_factory.mktemp("baselines")
    recipe = write_recipe(folder, trials=4, epochs=1, extra=RECIPE_BASELINES)
    first = run_cli("search", str(recipe), "--baseline", str(SHIPPED / "tutorial_simple.json"))
    assert first.returncode == 0, first.stderr
    return recipe, first.stdout


def test_baselines_run_first_as_trials_trained_like_any_other(searched):
    recipe, out = searched
    assert "baselines to run first: tutorial Net, tutorial_cnn, tutorial_simple" in out
    study = cnnsearch.open_study(recipe)
    runs = _baselines(study)
    assert sorted(runs) == ["tutorial Net", "tutorial_cnn", "tutorial_simple"]
    assert sorted(t.number for t in runs.values()) == [0, 1, 2]  # enqueued: they run before sampled trials
    net = runs["tutorial Net"]
    spec = load_baseline(str(SHIPPED / "tutorial_net.json"), base=ROOT, where="x").spec_for((1, 8, 8), 10)
    assert net.user_attrs["arch"] == spec.to_dict()  # the file's network, with the data's input and classes
    assert net.user_attrs["status"] == "ok" and net.user_attrs["params"] == cnnsearch.check(spec).params
    assert "weights" in net.user_attrs and net.values[0] == net.user_attrs["accuracy"] > 0.5
    assert net.params  # its training settings were drawn like any trial's (lr)
    # infeasible: reported as such, with the shape error, never trained
    cnn = runs["tutorial_cnn"]
    assert cnn.user_attrs["status"] == "shape" and "kernel 5 is larger" in cnn.user_attrs["infeasible_reason"]
    assert "[baseline tutorial_cnn]" in out and "[baseline tutorial Net]" in out
    # labelled in the frame, status, and the Pareto plot (a star with its name)
    df = cnnsearch.trials_frame(study)
    assert df.loc[net.number, "baseline"] == "tutorial Net" and df.loc[3, "baseline"] == ""
    status = run_cli("status", str(recipe))
    assert "[baseline tutorial Net]" in status.stdout
    fig = pareto_figure({"tiny": df})
    stars = [t for t in fig.data if t.meta["role"] == "baseline"]
    assert len(stars) == 1 and stars[0].marker.symbol == "star"
    assert sorted(stars[0].text) == ["tutorial Net", "tutorial_simple"]  # the infeasible one is not on it
    trained = next(t for t in fig.data if t.meta["role"] == "trained")
    assert net.number not in [c[0] for c in trained.customdata]
    # importances explain the parameters every trial has: baselines (training parameters only) left out
    kept = [t.values for t in trained_study(study).trials]
    assert kept and kept == [t.values for t in study.trials if "baseline" not in t.user_attrs and t.values[0] > 0]


def test_a_resumed_run_does_not_run_a_baseline_again(searched):
    recipe, _ = searched
    again = run_cli("search", str(recipe), "--trials", "1", "--baseline", str(SHIPPED / "tutorial_simple.json"))
    assert again.returncode == 0, again.stderr
    assert "baselines to run first" not in again.stdout
    study = cnnsearch.open_study(recipe)
    assert len(study.trials) == 5
    assert sorted(t.user_attrs.get("baseline", "") for t in study.trials).count("tutorial_simple") == 1


def test_finalize_and_export_take_a_baseline_like_any_trial(searched, tmp_path):
    recipe, _ = searched
    number = _baselines(cnnsearch.open_study(recipe))["tutorial Net"].number
    fin = run_cli("finalize", str(recipe), "--trial", str(number), "--epochs", "1", "--seeds", "1")
    assert fin.returncode == 0, fin.stderr
    out = tmp_path / "net.py"
    exp = run_cli("export", str(recipe), "--trial", str(number), "-o", str(out))
    assert exp.returncode == 0, exp.stderr
    assert f"trial {number} " in exp.stdout and out.exists()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_workers_racing_enqueue_each_baseline_once(tmp_path, backend):
    name = f"race-{uuid.uuid4().hex[:8]}"
    top = f'storage = "{PG_URL}"' if backend == "postgresql" else ""
    recipe = load_recipe(write_recipe(tmp_path, name=name, trials=4, epochs=1, top=top, extra=RECIPE_BASELINES))
    new_study(recipe)
    barrier, added = threading.Barrier(6), []

    def worker():  # each as a worker process would: its own storage, the same study
        study = optuna.load_study(study_name=name, storage=open_storage(recipe.storage))
        barrier.wait()
        added.extend(enqueue_baselines(study, recipe.baselines, url=recipe.storage))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(added) == ["tutorial Net", "tutorial_cnn"]
    study = optuna.load_study(study_name=name, storage=recipe.storage)
    assert sorted(_baselines(study)) == ["tutorial Net", "tutorial_cnn"] and len(study.trials) == 2
    if backend == "postgresql":
        optuna.delete_study(study_name=name, storage=PG_URL)


def test_two_workers_run_each_baseline_once(tmp_path):
    recipe = write_recipe(tmp_path, trials=4, epochs=1, extra=RECIPE_BASELINES)
    result = run_cli("search", str(recipe), "--workers", "2")
    assert result.returncode == 0, result.stderr
    names = [t.user_attrs.get("baseline") for t in cnnsearch.open_study(recipe).trials]
    assert names.count("tutorial Net") == 1 and names.count("tutorial_cnn") == 1


@pytest.mark.parametrize("entry, message", [
    ('spec = "missing.json"', "baselines[0]: cannot read"),
    ('spec = "bad.json"', "baselines[0]: bad.json"),
    ('spec = "net.json"\nsize = 3', "baselines[0]: expected spec"),
    ('spec = "wrong.json"', "baselines[0]: blocks[0]"),
    ('spec = "net.json"\nname = "<b>x</b>"', "baselines[0].name: '<b>x</b>' must be"),
])
def test_a_bad_baseline_is_one_error_line_before_anything_is_created(tmp_path, capsys, entry, message):
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "net.json").write_text((SHIPPED / "tutorial_net.json").read_text())
    (tmp_path / "wrong.json").write_text('{"blocks": [{"out_channels": 4}]}')
    recipe = write_recipe(tmp_path, extra=f"[[baselines]]\n{entry}\n")
    assert main(["search", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err.replace(str(tmp_path) + "/", ""), err
    assert not (tmp_path / "tiny.db").exists()
    with pytest.raises(RecipeError):
        load_recipe(recipe)
    assert main(["search", str(write_recipe(tmp_path)), "--baseline", str(tmp_path / "bad.json")]) == 2
    assert "error: --baseline" in capsys.readouterr().err and not (tmp_path / "tiny.db").exists()


def test_samplers_that_search_the_common_parameters_refuse_baselines(tmp_path, capsys):
    # NSGA-II and GP search the intersection of every trial's parameters: one baseline (no
    # architecture parameters) would leave them the training parameters alone
    for sampler in ("nsga2", "gp"):
        recipe = write_recipe(tmp_path, top=f'sampler = "{sampler}"', extra=RECIPE_BASELINES)
        with pytest.raises(RecipeError) as raised:
            load_recipe(recipe)
        assert str(raised.value) == (f"{recipe}: baselines: sampler '{sampler}' searches only the parameters every trial has, "
                                     'and a baseline has no architecture parameters: use sampler "evolution" (the '
                                     'default), "tpe" or "random" with baselines')
        plain = write_recipe(tmp_path, top=f'sampler = "{sampler}"')
        assert main(["search", str(plain), "--baseline", str(SHIPPED / "tutorial_net.json")]) == 2
        assert "baselines: sampler" in capsys.readouterr().err and not (tmp_path / "tiny.db").exists()


def test_one_network_twice_under_two_names_is_refused(tmp_path):
    twice = RECIPE_BASELINES + f'[[baselines]]\nspec = "{SHIPPED / "tutorial_net.json"}"\nname = "again"\n'
    with pytest.raises(RecipeError, match=r"baselines\[2\]: the same network as baselines\[0\] \('tutorial Net'\)"):
        load_recipe(write_recipe(tmp_path, extra=twice))


def test_a_run_refused_for_its_data_leaves_no_baseline_queued(tmp_path, capsys):
    # a study left empty by an older run that failed before its data loaded takes the
    # corrected recipe; its baselines are queued only once the data has loaded
    recipe = write_recipe(tmp_path, trials=3, epochs=1, extra=RECIPE_BASELINES + "[data]\nval_fraction = 0.999\n")
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    optuna.create_study(study_name="tiny", storage=url, directions=["maximize", "minimize"])
    assert main(["search", str(recipe)]) == 2
    assert "val_fraction" in capsys.readouterr().err
    assert optuna.load_study(study_name="tiny", storage=url).trials == []  # nothing queued
    fixed = write_recipe(tmp_path, trials=3, epochs=1, extra=RECIPE_BASELINES)
    assert main(["search", str(fixed), "--quiet"]) == 0
    assert sorted(_baselines(optuna.load_study(study_name="tiny", storage=url))) == ["tutorial Net", "tutorial_cnn"]


def test_a_baseline_is_never_stopped_early_where_a_candidate_is(tmp_path):
    """A known network is there to be compared in full: early stopping (on by default) never
    cuts it short, where the same peers cut a sampled candidate."""
    net = f'[[baselines]]\nspec = "{SHIPPED / "tutorial_net.json"}"\n'
    recipe = load_recipe(write_recipe(tmp_path, trials=1, epochs=4, extra=net + "[early_stopping]\nenabled = true\n"))
    study = run_recipe(recipe, until=1)
    for _ in range(2):  # as fast as anything, 100% at every epoch: they dominate every trial at its rungs
        study.add_trial(perfect_peer(recipe, epochs=4))
    assert enqueue_baselines(study, recipe.baselines, url=recipe.storage) == ["tutorial_net"]
    study = run_recipe(recipe, until=5)
    baseline, candidate = study.trials[3], study.trials[4]
    assert baseline.user_attrs["baseline"] == "tutorial_net"
    assert baseline.user_attrs["status"] == "ok" and baseline.user_attrs["epochs"] == 4
    assert "baseline" not in candidate.user_attrs and candidate.user_attrs["status"] == "early_stopped"


@pytest.mark.parametrize("source", [3, None, ["a.json"]])
def test_a_baseline_that_is_neither_a_path_nor_a_table_is_refused_in_words(tmp_path, source):
    with pytest.raises(RecipeError) as info:
        load_baseline(source, base=tmp_path, where="baselines[0].spec")
    assert str(info.value) == f"baselines[0].spec: expected the path of a spec (.json), got {source!r}"


def test_a_baseline_file_that_is_not_a_json_object_is_refused_in_words(tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(RecipeError) as info:
        load_baseline("list.json", base=tmp_path, where="baselines[0].spec")
    assert str(info.value) == "baselines[0].spec: a spec is a JSON object, got list"


@pytest.mark.parametrize("name, ok", [("n" * 100, True), ("n" * 101, False), (3, False), (" ", False)])
def test_a_baseline_s_name_is_1_to_100_characters_of_text(tmp_path, name, ok):
    spec = {"input": [1, 8, 8], "num_classes": 3, "blocks": [{"out_channels": 4, "kernel_size": 3}]}
    if ok:
        assert load_baseline(spec, base=tmp_path, name=name, where="baselines[0]").name == name
        return
    with pytest.raises(RecipeError) as info:
        load_baseline(spec, base=tmp_path, name=name, where="baselines[0]")
    assert str(info.value) == f"baselines[0].name: {name!r} must be 1-100 letters, digits, spaces or -_.+()"
