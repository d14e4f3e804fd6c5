"""Recipes: validated as a whole, errors name the key, one line on the CLI."""

import pytest

from cnnsearch import RecipeError
from cnnsearch.recipe import load_recipe
from tests.conftest import ROOT, run_cli
from tests.study_helpers import write_recipe


@pytest.mark.parametrize("extra, top, message", [
    ("[limits]\nmax_parms = 10\n", "", "limits.max_parms: unknown key"),
    ("", 'sampler = "cmaes"', "sampler: 'cmaes' is not one of tpe, nsga2, random, gp, evolution"),
    ("", 'objectives = ["accuracy", "speed"]', "objectives: ['accuracy', 'speed'] must be distinct"),
    ("", 'colour = "red"', "colour: unknown key"),
    ("[latency]\nbatch_size = 0\n", "", "latency.batch_size: 0 must be >= 1"),
    ("[limits]\nmax_latency_ms = 'fast'\n", "", "limits.max_latency_ms: expected a number"),
    ("[early_stopping]\nenabled = 'yes'\n", "", "early_stopping.enabled: expected true or false"),
])
def test_bad_recipe_names_the_key(tmp_path, extra, top, message):
    path = write_recipe(tmp_path, extra=extra, top=top)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: {message}"), str(info.value)


def test_train_device_is_checked(tmp_path):
    path = write_recipe(tmp_path)
    path.write_text(path.read_text().replace('device = "cpu"', 'device = "tpu"'))
    with pytest.raises(RecipeError, match="train.device: 'tpu' is not one of auto, cpu, cuda"):
        load_recipe(path)


def test_bad_space_is_a_bad_recipe(tmp_path):
    path = write_recipe(tmp_path, space="[block]\nout_channels = 8\nkernel_size = 3\nnorm = 'group'\n")
    with pytest.raises(RecipeError, match=r"space: .*block.norm: 'group' is not one of"):
        load_recipe(path)


def test_defaults_and_paths_relative_to_the_recipe(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, early_stopping=None))
    assert recipe.objectives == ("accuracy", "latency_ms") and recipe.directions == ["maximize", "minimize"]
    assert recipe.storage == f"sqlite:///{tmp_path / 'tiny.db'}"
    assert recipe.artifacts == str(tmp_path / "tiny_artifacts")
    assert recipe.sampler == "evolution" and recipe.early_stopping.enabled  # the defaults (issue 22)



@pytest.mark.parametrize("root, expected", [("sets", "{recipe}/sets"), ("~/sets", "{home}/sets"), ("/abs/sets", "/abs/sets")])
def test_a_torchvision_root_is_relative_to_the_recipe(tmp_path, monkeypatch, root, expected):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    folder = tmp_path / "recipes"
    folder.mkdir()
    path = write_recipe(folder, extra=f'[data]\nroot = "{root}"\n')
    path.write_text(path.read_text().replace('dataset = "digits"', 'dataset = "MNIST"'))
    recipe = load_recipe(path)
    assert recipe.data["root"] == expected.format(recipe=folder, home=tmp_path / "home")

@pytest.mark.parametrize("name", ["digits.toml", "cifar10.toml"])
def test_shipped_recipes_load(name):
    recipe = load_recipe(ROOT / "studies" / name)
    assert recipe.trials > 0 and recipe.load_space()


def test_cli_search_bad_recipe_is_one_line(tmp_path):
    path = write_recipe(tmp_path, extra="[limits]\nmax_parms = 10\n")
    result = run_cli("search", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {path}: limits.max_parms: unknown key "
                                                  "(allowed: max_params, max_flops, max_memory_bytes, max_latency_ms)"]
    assert not (tmp_path / "tiny.db").exists()  # nothing was created for a bad recipe


def test_command_line_storage_is_relative_to_the_working_directory(tmp_path, monkeypatch):
    from cnnsearch.recipe import resolve_recipe

    (tmp_path / "sub").mkdir()
    path = write_recipe(tmp_path / "sub")
    monkeypatch.chdir(tmp_path)
    recipe = resolve_recipe(str(path), "sqlite:///here.db", None)
    assert recipe.storage == f"sqlite:///{tmp_path / 'here.db'}"
    written = path.read_text().replace("seed = 0", 'seed = 0\nstorage = "sqlite:///there.db"')
    path.write_text(written)
    assert load_recipe(path).storage == f"sqlite:///{tmp_path / 'sub' / 'there.db'}"  # in a recipe: its folder
