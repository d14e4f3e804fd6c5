"""Recipe validation, key by key: every section's keys are read, default when left out, and a
bad type, an out-of-range value or an unknown key is one RecipeError naming the key and echoing
the value; what a recipe means (meaning, fingerprint, changed_meaning) and where a command's
recipe comes from (load_recipe, resolve_recipe, check_runnable)."""

import hashlib
import json
import math
import sys
from dataclasses import fields

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnsearch import RecipeError
from cnnsearch.data import TORCHVISION
from cnnsearch.recipe import (
    EarlyStopping,
    LatencySection,
    Limits,
    Recipe,
    TrainSection,
    changed_meaning,
    check_runnable,
    fingerprint,
    from_dict,
    load_recipe,
    resolve_recipe,
)
from cnnsearch.space import SearchSpace
from tests.study_helpers import TINY_SPACE, write_recipe

optuna.logging.set_verbosity(optuna.logging.WARNING)

SECTIONS = {"train": TrainSection, "latency": LatencySection, "limits": Limits, "early_stopping": EarlyStopping}
TOP_KEYS = ("name", "space", "dataset", "data", "objectives", "trials", "seed", "sampler",
            "max_consecutive_failures", "storage", "artifacts", "train", "latency", "limits", "early_stopping",
            "baselines")


def make(tmp_path, **data) -> Recipe:
    """A recipe from ``data`` on top of the two keys every recipe needs (name, space)."""
    (tmp_path / "space.toml").write_text(TINY_SPACE)
    return from_dict({"name": "tiny", "space": "space.toml", **data}, tmp_path)


def refusal(tmp_path, **data) -> str:
    with pytest.raises(RecipeError) as info:
        make(tmp_path, **data)
    return str(info.value)


def get(recipe: Recipe, where: str):
    value = recipe
    for part in where.split("."):
        value = getattr(value, part)
    return value


# --- every key is read -------------------------------------------------------------------

@pytest.mark.parametrize("data, where, expected", [
    ({"dataset": "shapes"}, "dataset", "shapes"),
    ({"dataset": "CIFAR10"}, "dataset", "CIFAR10"),
    ({"data": {"val_fraction": 0.3, "seed": 2}}, "data", {"val_fraction": 0.3, "seed": 2}),
    ({"objectives": ["params", "accuracy"]}, "objectives", ("params", "accuracy")),
    ({"objectives": ["flops"]}, "directions", ["minimize"]),
    ({"objectives": ["accuracy", "latency_ms", "params", "flops"]}, "directions",
     ["maximize", "minimize", "minimize", "minimize"]),
    ({"trials": 1}, "trials", 1),
    ({"trials": 7}, "trials", 7),
    ({"seed": 0}, "seed", 0),
    ({"seed": 3}, "seed", 3),
    ({"sampler": "random"}, "sampler", "random"),
    ({"sampler": "nsga2"}, "sampler", "nsga2"),
    ({"sampler": "gp"}, "sampler", "gp"),
    ({"max_consecutive_failures": 1}, "max_consecutive_failures", 1),
    ({"max_consecutive_failures": 9}, "max_consecutive_failures", 9),
    ({"storage": "postgresql+psycopg://u@h:5432/db"}, "storage", "postgresql+psycopg://u@h:5432/db"),
    ({"storage": "sqlite:////abs/x.db"}, "storage", "sqlite:////abs/x.db"),
    ({"artifacts": "/some/where"}, "artifacts", "/some/where"),
    ({"train": {"epochs": 1}}, "train.epochs", 1),
    ({"train": {"epochs": 7}}, "train.epochs", 7),
    ({"train": {"batch_size": 1}}, "train.batch_size", 1),
    ({"train": {"batch_size": 32}}, "train.batch_size", 32),
    ({"train": {"device": "cpu"}}, "train.device", "cpu"),
    ({"train": {"device": "cuda"}}, "train.device", "cuda"),
    ({"train": {"device": "cuda:0"}}, "train.device", "cuda:0"),
    ({"train": {"device": "cuda:123"}}, "train.device", "cuda:123"),
    ({"train": {"device": "auto"}}, "train.device", "auto"),
    ({"train": {"augment": True}}, "train.augment", True),
    ({"latency": {"device": "cuda"}}, "latency.device", "cuda"),
    ({"latency": {"device": "cuda:1"}}, "latency.device", "cuda:1"),
    ({"latency": {"batch_size": 1}}, "latency.batch_size", 1),
    ({"latency": {"batch_size": 4}}, "latency.batch_size", 4),
    ({"latency": {"threads": 1}}, "latency.threads", 1),
    ({"latency": {"threads": 3}}, "latency.threads", 3),
    ({"latency": {"runtime": "onnxruntime"}}, "latency.runtime", "onnxruntime"),
    ({"latency": {"runtime": "onnxruntime", "device": "cpu"}}, "latency.runtime", "onnxruntime"),
    ({"latency": {"runtime": "torch", "device": "cuda:0"}}, "latency.device", "cuda:0"),
    ({"limits": {"max_params": 1}}, "limits.max_params", 1),
    ({"limits": {"max_params": 1000}}, "limits.max_params", 1000),
    ({"limits": {"max_flops": 1}}, "limits.max_flops", 1),
    ({"limits": {"max_flops": 5000}}, "limits.max_flops", 5000),
    ({"limits": {"max_latency_ms": 0}}, "limits.max_latency_ms", 0),
    ({"limits": {"max_latency_ms": 0.5}}, "limits.max_latency_ms", 0.5),
    ({"limits": {"max_latency_ms": 5}}, "limits.max_latency_ms", 5),
    ({"early_stopping": {"enabled": True}}, "early_stopping.enabled", True),
    ({"early_stopping": {"margin": 0}}, "early_stopping.margin", 0.0),
    ({"early_stopping": {"margin": 0.5}}, "early_stopping.margin", 0.5),
    ({"early_stopping": {"margin": 2}}, "early_stopping.margin", 2.0),
    ({"early_stopping": {"rungs": [0.5]}}, "early_stopping.rungs", (0.5,)),
    ({"early_stopping": {"rungs": [0.25, 0.75]}}, "early_stopping.rungs", (0.25, 0.75)),
    ({"early_stopping": {"rungs": [0.00001]}}, "early_stopping.rungs", (0.00001,)),
    ({"early_stopping": {"keep": 1}}, "early_stopping.keep", 1.0),
    ({"early_stopping": {"keep": 0.5}}, "early_stopping.keep", 0.5),
    ({"early_stopping": {"min_epoch": 1}}, "early_stopping.min_epoch", 1),
    ({"early_stopping": {"min_epoch": 4}}, "early_stopping.min_epoch", 4),
])
def test_every_key_is_read(tmp_path, data, where, expected):
    recipe = make(tmp_path, **data)
    assert get(recipe, where) == expected
    assert type(get(recipe, where)) is type(expected)  # a margin of 2 is the float 2.0
    (name, value), = data.items()  # nothing else moved from its default
    assert recipe.name == "tiny" and recipe.space == "space.toml" and recipe.space_toml == TINY_SPACE
    assert isinstance(recipe.load_space(), SearchSpace)
    default = make(tmp_path)
    for key in TOP_KEYS[2:]:
        if key != name:
            assert getattr(recipe, key) == getattr(default, key), key


def test_defaults(tmp_path):
    recipe = make(tmp_path)
    assert (recipe.dataset, recipe.data, recipe.objectives) == ("digits", {}, ("accuracy", "latency_ms"))
    assert recipe.directions == ["maximize", "minimize"]
    assert (recipe.trials, recipe.seed, recipe.sampler, recipe.max_consecutive_failures) == (20, 0, "evolution", 5)
    assert recipe.storage == f"sqlite:///{(tmp_path / 'tiny.db').resolve()}"  # next to the recipe
    assert recipe.artifacts == str((tmp_path / "tiny_artifacts").resolve())
    # training as TrainConfig's defaults (5 epochs, the best device there is, no augmentation),
    # the batch size the space's; latency of one image on one cpu thread in torch; no limits
    assert recipe.train == TrainSection(epochs=5, batch_size=None, device="auto", augment=False)
    assert recipe.latency == LatencySection(device="cpu", batch_size=1, threads=1, runtime="torch")
    assert recipe.limits == Limits(max_params=None, max_flops=None, max_latency_ms=None, max_memory_bytes=None)
    assert recipe.early_stopping == EarlyStopping(enabled=True, margin=0.03, rungs=(1 / 6, 1 / 3, 2 / 3),
                                                  keep=1 / 3, min_epoch=1)
    # an empty table is the same as none
    assert make(tmp_path, train={}, latency={}, limits={}, early_stopping={}, data={}) == recipe


def test_name_decides_the_default_storage_and_artifacts(tmp_path):
    recipe = make(tmp_path, name="my-study_2.b")
    assert recipe.name == "my-study_2.b"
    assert recipe.storage == f"sqlite:///{(tmp_path / 'my-study_2.b.db').resolve()}"
    assert recipe.artifacts == str((tmp_path / "my-study_2.b_artifacts").resolve())


def test_space_text_given_is_used_without_reading_the_file(tmp_path):
    other = TINY_SPACE.replace("[4, 8, 16]", "[4, 8]")
    recipe = from_dict({"name": "x", "space": "nowhere.toml", "space_toml": other}, tmp_path)
    assert recipe.space_toml == other and recipe.space == "nowhere.toml"
    recipe = from_dict({"name": "x", "space": "nowhere.toml"}, tmp_path, space_toml=other)
    assert recipe.space_toml == other
    # the argument wins over the stored text
    recipe = from_dict({"name": "x", "space": "nowhere.toml", "space_toml": TINY_SPACE}, tmp_path, space_toml=other)
    assert recipe.space_toml == other


def test_missing_space_file_names_the_path(tmp_path):
    with pytest.raises(RecipeError) as info:
        from_dict({"name": "x", "space": "nowhere.toml"}, tmp_path)
    assert str(info.value).startswith(f"space: cannot read {tmp_path / 'nowhere.toml'}")


def test_bad_space_is_a_recipe_error_naming_the_space(tmp_path):
    with pytest.raises(RecipeError) as info:
        from_dict({"name": "x", "space": "s.toml", "space_toml": "[block]\nout_channels = 8\n"}, tmp_path)
    assert str(info.value).startswith("space: s.toml: block.kernel_size")  # the space file and its key


# --- every bad value is refused, naming the key and the value ----------------------------

INT, NUM, STR, BOOL = "expected an integer", "expected a number", "expected a string", "expected true or false"


def _range(low):
    return f"must be >= {low}"


FRACTION = "must be in (0, 1]"

BAD = [
    # (data, key named, value echoed, what was expected)
    ({"name": 5}, "name", "5", STR),
    ({"name": None}, "name", "None", STR),
    ({"name": ""}, "name", "''", "letters, digits"),
    ({"name": "a b"}, "name", "'a b'", "letters, digits"),
    ({"name": "a/b"}, "name", "'a/b'", "letters, digits"),
    ({"space": 5}, "space", "5", STR),
    ({"space": None}, "space", "None", STR),
    ({"dataset": 5}, "dataset", "5", STR),
    ({"dataset": "mnist2"}, "dataset", "'mnist2'", "digits, shapes, folder:PATH, " + ", ".join(TORCHVISION)),
    ({"data": 5}, "data", "5", "expected a table"),
    ({"data": {"colour": 1}}, "data.colour", "digits", "allowed: val_fraction, test_fraction, seed"),
    ({"dataset": "shapes", "data": {"colour": 1}}, "data.colour", "shapes", "allowed: n, size, classes"),
    ({"objectives": "accuracy"}, "objectives", "'accuracy'", "accuracy, latency_ms, params, flops"),
    ({"objectives": []}, "objectives", "[]", "distinct names"),
    ({"objectives": ["speed"]}, "objectives", "['speed']", "distinct names"),
    ({"objectives": ["accuracy", "speed"]}, "objectives", "['accuracy', 'speed']", "distinct names"),
    ({"objectives": [5]}, "objectives", "[5]", "distinct names"),
    ({"objectives": ["accuracy", "accuracy"]}, "objectives", "['accuracy', 'accuracy']", "distinct names"),
    ({"objectives": {"accuracy": 1}}, "objectives", "{'accuracy': 1}", "distinct names"),
    ({"sampler": 5}, "sampler", "5", STR),
    ({"sampler": "cmaes"}, "sampler", "'cmaes'", "tpe, nsga2, random, gp"),
    ({"storage": 5}, "storage", "5", STR),
    ({"artifacts": 5}, "artifacts", "5", STR),
    ({"trials": 0}, "trials", "0", _range(1)),
    ({"trials": -3}, "trials", "-3", _range(1)),
    ({"trials": "3"}, "trials", "'3'", INT),
    ({"trials": 2.5}, "trials", "2.5", INT),
    ({"trials": True}, "trials", "True", INT),
    ({"seed": -1}, "seed", "-1", _range(0)),
    ({"seed": True}, "seed", "True", INT),
    ({"seed": "0"}, "seed", "'0'", INT),
    ({"max_consecutive_failures": 0}, "max_consecutive_failures", "0", _range(1)),
    ({"max_consecutive_failures": False}, "max_consecutive_failures", "False", INT),
    ({"train": 5}, "train", "5", "expected a table"),
    ({"train": {"epochs": 0}}, "train.epochs", "0", _range(1)),
    ({"train": {"epochs": 1.5}}, "train.epochs", "1.5", INT),
    ({"train": {"epochs": True}}, "train.epochs", "True", INT),
    ({"train": {"batch_size": 0}}, "train.batch_size", "0", _range(1)),
    ({"train": {"batch_size": "64"}}, "train.batch_size", "'64'", INT),
    ({"train": {"batch_size": True}}, "train.batch_size", "True", INT),
    ({"train": {"device": 5}}, "train.device", "5", STR),
    ({"train": {"device": "tpu"}}, "train.device", "'tpu'", "auto, cpu, cuda, cuda:N"),
    ({"train": {"device": "CPU"}}, "train.device", "'CPU'", "auto, cpu, cuda, cuda:N"),
    ({"train": {"device": "cuda:"}}, "train.device", "'cuda:'", "auto, cpu, cuda, cuda:N"),
    ({"train": {"device": "cuda:1234"}}, "train.device", "'cuda:1234'", "auto, cpu, cuda, cuda:N"),
    ({"train": {"device": "cpu:0"}}, "train.device", "'cpu:0'", "auto, cpu, cuda, cuda:N"),
    ({"train": {"augment": "yes"}}, "train.augment", "'yes'", BOOL),
    ({"train": {"augment": 1}}, "train.augment", "1", BOOL),
    ({"latency": 5}, "latency", "5", "expected a table"),
    ({"latency": {"device": 5}}, "latency.device", "5", STR),
    ({"latency": {"device": "auto"}}, "latency.device", "'auto'", "cpu, cuda, cuda:N"),
    ({"latency": {"device": "tpu"}}, "latency.device", "'tpu'",
     "is not one of cpu, cuda, cuda:N (the device the network will be deployed on)"),
    ({"latency": {"device": "CUDA"}}, "latency.device", "'CUDA'", "cpu, cuda, cuda:N"),
    ({"latency": {"device": "cuda:1234"}}, "latency.device", "'cuda:1234'", "cpu, cuda, cuda:N"),
    ({"latency": {"batch_size": 0}}, "latency.batch_size", "0", _range(1)),
    ({"latency": {"batch_size": 1.0}}, "latency.batch_size", "1.0", INT),
    ({"latency": {"threads": 0}}, "latency.threads", "0", _range(1)),
    ({"latency": {"threads": True}}, "latency.threads", "True", INT),
    ({"latency": {"threads": "2"}}, "latency.threads", "'2'", INT),
    ({"latency": {"runtime": 5}}, "latency.runtime", "5", STR),
    ({"latency": {"runtime": "tensorrt"}}, "latency.runtime", "'tensorrt'", "torch, onnxruntime"),
    ({"latency": {"runtime": "onnxruntime", "device": "cuda"}}, "latency.runtime", "'cuda'", "cpu only"),
    ({"latency": {"runtime": "onnxruntime", "device": "cuda:0"}}, "latency.runtime", "'cuda:0'", "cpu only"),
    ({"limits": 5}, "limits", "5", "expected a table"),
    ({"limits": {"max_params": 0}}, "limits.max_params", "0", _range(1)),
    ({"limits": {"max_params": 1.5}}, "limits.max_params", "1.5", INT),
    ({"limits": {"max_params": "x"}}, "limits.max_params", "'x'", INT),
    ({"limits": {"max_params": True}}, "limits.max_params", "True", INT),
    ({"limits": {"max_flops": 0}}, "limits.max_flops", "0", _range(1)),
    ({"limits": {"max_flops": 2.0}}, "limits.max_flops", "2.0", INT),
    ({"limits": {"max_latency_ms": -0.5}}, "limits.max_latency_ms", "-0.5", _range(0)),
    ({"limits": {"max_latency_ms": math.inf}}, "limits.max_latency_ms", "inf", _range(0)),
    ({"limits": {"max_latency_ms": math.nan}}, "limits.max_latency_ms", "nan", _range(0)),
    ({"limits": {"max_latency_ms": "fast"}}, "limits.max_latency_ms", "'fast'", NUM),
    ({"limits": {"max_latency_ms": True}}, "limits.max_latency_ms", "True", NUM),
    ({"early_stopping": 5}, "early_stopping", "5", "expected a table"),
    ({"early_stopping": {"enabled": "yes"}}, "early_stopping.enabled", "'yes'", BOOL),
    ({"early_stopping": {"enabled": 1}}, "early_stopping.enabled", "1", BOOL),
    ({"early_stopping": {"margin": -0.1}}, "early_stopping.margin", "-0.1", _range(0)),
    ({"early_stopping": {"margin": math.inf}}, "early_stopping.margin", "inf", _range(0)),
    ({"early_stopping": {"margin": "x"}}, "early_stopping.margin", "'x'", NUM),
    ({"early_stopping": {"margin": False}}, "early_stopping.margin", "False", NUM),
    ({"early_stopping": {"rungs": 0.5}}, "early_stopping.rungs", "0.5", "expected a list"),
    ({"early_stopping": {"rungs": []}}, "early_stopping.rungs", "[]", "expected a list"),
    ({"early_stopping": {"rungs": "0.5"}}, "early_stopping.rungs", "'0.5'", "expected a list"),
    ({"early_stopping": {"rungs": [0]}}, "early_stopping.rungs", "0.0", FRACTION),
    ({"early_stopping": {"rungs": [1.5]}}, "early_stopping.rungs", "1.5", FRACTION),
    ({"early_stopping": {"rungs": ["x"]}}, "early_stopping.rungs", "'x'", NUM),
    ({"early_stopping": {"rungs": [True]}}, "early_stopping.rungs", "True", NUM),
    ({"early_stopping": {"rungs": [1]}}, "early_stopping.rungs", "[1.0]", "below 1"),
    ({"early_stopping": {"rungs": [0.5, 1.0]}}, "early_stopping.rungs", "[0.5, 1.0]", "below 1"),
    ({"early_stopping": {"keep": 0}}, "early_stopping.keep", "0.0", FRACTION),
    ({"early_stopping": {"keep": -0.1}}, "early_stopping.keep", "-0.1", FRACTION),
    ({"early_stopping": {"keep": 1.5}}, "early_stopping.keep", "1.5", FRACTION),
    ({"early_stopping": {"keep": 2}}, "early_stopping.keep", "2.0", FRACTION),
    ({"early_stopping": {"keep": "x"}}, "early_stopping.keep", "'x'", NUM),
    ({"early_stopping": {"keep": True}}, "early_stopping.keep", "True", NUM),
    ({"early_stopping": {"min_epoch": 0}}, "early_stopping.min_epoch", "0", _range(1)),
    ({"early_stopping": {"min_epoch": 1.5}}, "early_stopping.min_epoch", "1.5", INT),
    ({"early_stopping": {"min_epoch": True}}, "early_stopping.min_epoch", "True", INT),
]


@pytest.mark.parametrize("data, key, value, expected", BAD)
def test_bad_value_names_the_key_and_the_value(tmp_path, data, key, value, expected):
    message = refusal(tmp_path, **data)
    assert message.startswith(f"{key}: "), message
    assert value in message and expected in message, message


def test_unicode_letters_are_letters(tmp_path):
    assert make(tmp_path, name="ü-1").name == "ü-1"


@pytest.mark.parametrize("section", list(SECTIONS))
def test_unknown_key_in_a_section_names_it_and_the_allowed_keys(tmp_path, section):
    message = refusal(tmp_path, **{section: {"bogus": 1}})
    allowed = [f.name for f in fields(SECTIONS[section])]
    assert message == f"{section}.bogus: unknown key (allowed: {', '.join(allowed)})"


def test_unknown_top_level_key_names_it_and_the_allowed_keys(tmp_path):
    message = refusal(tmp_path, colour="red")
    assert message == f"colour: unknown key (allowed: {', '.join(TOP_KEYS)})"


@pytest.mark.parametrize("key", [f.name for f in fields(Recipe) if f.name != "space_toml" and f.metadata.get("stored", True)])
def test_every_documented_top_level_key_is_allowed(tmp_path, key):
    """A recipe that sets a key to the value it already has is the same recipe."""
    recipe = make(tmp_path)
    assert make(tmp_path, **{key: recipe.to_dict()[key]}) == recipe


# --- meaning, fingerprint, changed_meaning --------------------------------------------------

def meaning_of(tmp_path, **data) -> dict:
    return make(tmp_path, **data).meaning()


def test_meaning_is_everything_but_the_budget_flattened(tmp_path):
    common = {"dataset": "digits", "space": TINY_SPACE, "objectives": ["accuracy", "latency_ms"], "seed": 4,
              "sampler": "random", "data.val_fraction": 0.3, "data.test_fraction": 0.2, "data.seed": 0,
              "train.epochs": 3, "train.batch_size": None, "train.device": "auto", "train.augment": True,
              "latency.device": "cpu", "latency.batch_size": 2, "latency.threads": 1, "latency.runtime": "torch",
              "latency.reference": False,
              "limits.max_params": 99, "limits.max_flops": None, "limits.max_latency_ms": None,
              "limits.max_memory_bytes": None}
    data = dict(seed=4, sampler="random", data={"val_fraction": 0.3}, train={"epochs": 3, "augment": True},
                latency={"batch_size": 2}, limits={"max_params": 99}, trials=3, max_consecutive_failures=2,
                storage="sqlite:////x.db", artifacts="/y")
    assert meaning_of(tmp_path, **data, early_stopping={"enabled": False}) == {**common, "early_stopping.enabled": False}
    on = {"enabled": True, "margin": 0.5, "rungs": [0.5], "keep": 0.5, "min_epoch": 2}
    assert meaning_of(tmp_path, **data, early_stopping=on) == {
        **common, "early_stopping.enabled": True, "early_stopping.margin": 0.5, "early_stopping.rungs": (0.5,),
        "early_stopping.keep": 0.5, "early_stopping.min_epoch": 2}


BUDGET = [{"trials": 99}, {"max_consecutive_failures": 1}, {"name": "other"}, {"storage": "sqlite:////else.db"},
          {"artifacts": "/elsewhere"}]


def _changed(key, value):
    """``{section: {key: value}}`` for ``section.key``, else ``{key: value}``."""
    section, _, name = key.rpartition(".")
    return {section: {name: value}} if section else {key: value}


CHANGES = [  # (change, the line changed_meaning reports)
    ({"dataset": "shapes"}, "dataset: 'digits' -> 'shapes'"),
    ({"objectives": ["accuracy"]}, "objectives: ['accuracy', 'latency_ms'] -> ['accuracy']"),
    ({"seed": 1}, "seed: 0 -> 1"),
    ({"sampler": "random"}, "sampler: 'evolution' -> 'random'"),
    ({"data": {"seed": 3}}, "data.seed: 0 -> 3"),
    ({"train": {"epochs": 6}}, "train.epochs: 5 -> 6"),
    ({"train": {"batch_size": 8}}, "train.batch_size: None -> 8"),
    ({"train": {"device": "cpu"}}, "train.device: 'auto' -> 'cpu'"),
    ({"train": {"augment": True}}, "train.augment: False -> True"),
    ({"latency": {"device": "cuda"}}, "latency.device: 'cpu' -> 'cuda'"),
    ({"latency": {"batch_size": 8}}, "latency.batch_size: 1 -> 8"),
    ({"latency": {"threads": 4}}, "latency.threads: 1 -> 4"),
    ({"latency": {"runtime": "onnxruntime"}}, "latency.runtime: 'torch' -> 'onnxruntime'"),
    ({"limits": {"max_params": 10}}, "limits.max_params: None -> 10"),
    ({"limits": {"max_flops": 10}}, "limits.max_flops: None -> 10"),
    ({"limits": {"max_latency_ms": 2.5}}, "limits.max_latency_ms: None -> 2.5"),
    ({"early_stopping": {"enabled": False}}, "early_stopping.enabled: True -> False"),
]


@pytest.mark.parametrize("change, line", CHANGES)
def test_changed_meaning_reports_each_change(tmp_path, change, line):
    old, new = make(tmp_path), make(tmp_path, **change)
    reported = changed_meaning(old, new)
    if "early_stopping" in change:  # switched off (on by default): its settings go with it
        assert line in reported and all(c.startswith("early_stopping.") for c in reported)
        assert "early_stopping.keep: 0.3333333333333333 -> (unset)" in reported
    else:
        assert reported == [line]
    key, values = line.split(": ", 1)
    was, now = values.split(" -> ")
    assert f"{key}: {now} -> {was}" in changed_meaning(new, old)  # and the other way round


def test_changed_meaning_lists_every_change_in_key_order(tmp_path):
    old = make(tmp_path, data={"val_fraction": 0.25})
    new = make(tmp_path, train={"epochs": 6}, dataset="digits", seed=2, data={"seed": 1})
    assert changed_meaning(old, new) == ["data.seed: 0 -> 1", "data.val_fraction: 0.25 -> 0.2",
                                         "seed: 0 -> 2", "train.epochs: 5 -> 6"]


def test_changed_space_text_is_reported_without_the_text(tmp_path):
    old = make(tmp_path)
    new = from_dict({"name": "tiny", "space": "space.toml"}, tmp_path, space_toml=TINY_SPACE.replace("16]", "32]"))
    assert changed_meaning(old, new) == ["space: the space file's text changed"]


@pytest.mark.parametrize("budget", BUDGET)
def test_the_budget_and_the_place_are_no_change(tmp_path, budget):
    old, new = make(tmp_path), make(tmp_path, **budget)
    assert changed_meaning(old, new) == [] and old.meaning() == new.meaning()
    assert old.fingerprint() == new.fingerprint() == fingerprint(new)


def test_unchanged_recipe_has_no_change(tmp_path):
    data = dict(train={"epochs": 3}, data={"seed": 2}, early_stopping={"enabled": True, "keep": 0.5})
    assert changed_meaning(make(tmp_path, **data), make(tmp_path, **data)) == []


@pytest.mark.parametrize("change", [c for c, _ in CHANGES if not {"seed", "sampler", "early_stopping"} & set(c)]
                         + [{"train": {"epochs": 5}, "data": {"val_fraction": 0.3}}, {"latency": {"threads": 2}}])
def test_what_changes_training_changes_the_fingerprint(tmp_path, change):
    assert make(tmp_path, **change).fingerprint() != make(tmp_path).fingerprint()


@pytest.mark.parametrize("change", [{"seed": 7}, {"sampler": "nsga2"}, *BUDGET,
                                    {"early_stopping": {"enabled": True}},
                                    {"early_stopping": {"enabled": True, "margin": 1, "rungs": [0.5], "keep": 1,
                                                        "min_epoch": 3}}])
def test_what_does_not_change_training_keeps_the_fingerprint(tmp_path, change):
    """Trials of two such recipes are early-stopping peers: the sampler, the seed, the budget
    and early stopping's own settings say what is tried, not how a candidate trains."""
    assert make(tmp_path, **change).fingerprint() == make(tmp_path).fingerprint()


def test_fingerprint_ignores_the_order_of_data_options(tmp_path):
    a = make(tmp_path, data={"val_fraction": 0.3, "seed": 2})
    b = make(tmp_path, data={"seed": 2, "val_fraction": 0.3})
    assert a.fingerprint() == b.fingerprint()


@pytest.mark.parametrize("key", ["train.epochs", "train.device", "train.batch_size", "train.augment",
                                 "latency.device", "latency.batch_size", "latency.threads", "latency.runtime",
                                 "limits.max_params", "limits.max_flops", "limits.max_latency_ms"])
def test_a_setting_at_its_default_is_as_if_a_version_without_it_wrote_the_recipe(tmp_path, monkeypatch, key):
    """A key a later version adds, at its default, must not separate new trials from an old
    study's: the fingerprint of a recipe without the key is that of one with it at its default."""
    section, name = key.split(".")
    recipe = make(tmp_path)
    changed = make(tmp_path, **_changed(key, {"epochs": 2, "device": "cuda", "batch_size": 3, "augment": True,
                                              "threads": 2, "runtime": "onnxruntime", "max_params": 5,
                                              "max_flops": 5, "max_latency_ms": 1.5}[name]))
    with_key = recipe.fingerprint(), changed.fingerprint()
    full = Recipe.meaning
    monkeypatch.setattr(Recipe, "meaning", lambda self: {k: v for k, v in full(self).items() if k != key})
    assert recipe.fingerprint() == with_key[0]  # at its default: the same as without the key
    assert changed.fingerprint() != with_key[1]  # not at its default: it counts


def test_fingerprint_is_stable_across_versions(tmp_path):
    """Fingerprints are stored on every trial, so a later version must compute the same one for
    the same recipe: sha256 of the sorted JSON of what is not at its default, 16 hex digits."""
    def expected(flat):
        return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:16]

    base = {"dataset": "digits", "space": TINY_SPACE, "objectives": ["accuracy", "latency_ms"]}
    assert make(tmp_path).fingerprint() == expected(base)
    recipe = make(tmp_path, data={"seed": 1}, train={"epochs": 3}, limits={"max_latency_ms": 2.5}, seed=9)
    assert recipe.fingerprint() == expected({**base, "data.seed": 1, "train.epochs": 3,
                                             "limits.max_latency_ms": 2.5})


# --- check_recipe (a study keeps its recipe) -------------------------------------------------

def _study_of(recipe: Recipe) -> optuna.Study:
    study = optuna.create_study(directions=recipe.directions)
    study.set_user_attr("recipe", recipe.to_dict())
    return study


@pytest.mark.parametrize("change, line", CHANGES[:3] + CHANGES[4:6] + CHANGES[12:])  # sampler: test_samplers.py
def test_check_recipe_refuses_a_changed_recipe(tmp_path, change, line):
    from cnnsearch.study import check_recipe

    study = _study_of(make(tmp_path))
    with pytest.raises(RecipeError) as info:
        check_recipe(study, make(tmp_path, **change))
    assert line in str(info.value) and "'tiny'" in str(info.value)
    assert str(info.value).endswith("give the recipe a new name (or another storage), or undo the change")


@pytest.mark.parametrize("budget", BUDGET[:2] + [{}])
def test_check_recipe_accepts_the_same_recipe_with_another_budget(tmp_path, budget):
    from cnnsearch.study import check_recipe

    data = dict(train={"epochs": 3}, early_stopping={"enabled": True, "rungs": [0.5]})
    check_recipe(_study_of(make(tmp_path, **data)), make(tmp_path, **data, **budget))


# --- load_recipe, resolve_recipe --------------------------------------------------------------

def test_load_recipe_reads_the_space_next_to_it_from_anywhere(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    path = write_recipe(tmp_path / "sub", epochs=3)
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(path)
    assert recipe.space_toml.strip() == TINY_SPACE.strip() and recipe.train.epochs == 3
    assert load_recipe(str(path)) == recipe


def test_load_recipe_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.toml"
    with pytest.raises(RecipeError) as info:
        load_recipe(missing)
    assert str(info.value).startswith(f"{missing}: cannot read")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(RecipeError) as info:
        load_recipe(bad)
    assert str(info.value).startswith(f"{bad}: not valid TOML")
    path = write_recipe(tmp_path, trials=0)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).startswith(f"{path}: trials: 0 must be >= 1")


def test_resolve_recipe_from_a_file(tmp_path, monkeypatch):
    path = write_recipe(tmp_path, epochs=3)
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe(str(path)) == load_recipe(path)
    renamed = resolve_recipe(str(path), "sqlite:///here.db", "other")
    assert renamed.name == "other" and renamed.storage == f"sqlite:///{(tmp_path / 'here.db').resolve()}"
    assert renamed.train.epochs == 3 and renamed.space_toml == load_recipe(path).space_toml
    kept = resolve_recipe(str(path), "sqlite:///here.db")
    assert kept.name == "tiny" and kept.storage == f"sqlite:///{(tmp_path / 'here.db').resolve()}"


@pytest.mark.parametrize("storage, study", [(None, None), ("sqlite:///x.db", None), (None, "x"), ("", "x")])
def test_resolve_recipe_needs_a_file_or_a_storage_and_a_study(tmp_path, monkeypatch, storage, study):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        resolve_recipe(None, storage, study)
    assert "--storage URL and --study NAME" in str(info.value) and "recipe" in str(info.value)
    assert not (tmp_path / "x.db").exists()


def test_resolve_recipe_from_the_study(tmp_path, monkeypatch):
    recipe = make(tmp_path, train={"epochs": 3}, early_stopping={"enabled": True, "rungs": [0.5]})
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    optuna.create_study(study_name="tiny", storage=url).set_user_attr("recipe", recipe.to_dict())
    optuna.create_study(study_name="bare", storage=url)
    (tmp_path / "space.toml").unlink()  # the study holds the space's text
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    resolved = resolve_recipe(None, "sqlite:///../tiny.db", "tiny")
    assert resolved.storage == f"sqlite:///{(tmp_path / 'tiny.db').resolve()}"  # relative to the working directory
    assert resolved.meaning() == recipe.meaning() and resolved.name == "tiny"
    assert resolved.trials == recipe.trials and resolved.artifacts == recipe.artifacts
    with pytest.raises(RecipeError) as info:
        resolve_recipe(None, url, "bare")
    assert str(info.value).startswith("study 'bare' was not made by cnnsearch")


# --- check_runnable: what the machine must have ----------------------------------------------

@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has ``n`` CUDA GPUs."""
    import torch

    def set_count(n):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
    return set_count


@pytest.mark.parametrize("n, device, ok", [
    (0, "cuda", False), (0, "cuda:0", False), (1, "cuda", True), (1, "cuda:0", True), (1, "cuda:1", False),
    (2, "cuda:1", True), (2, "cuda:2", False), (3, "cuda:2", True), (0, "cpu", True), (0, "auto", True),
])
def test_check_runnable_train_device(tmp_path, gpus, n, device, ok):
    gpus(n)
    recipe = make(tmp_path, train={"device": device})
    if ok:
        check_runnable(recipe)
    else:
        with pytest.raises(RecipeError) as info:
            check_runnable(recipe)
        assert str(info.value) == (f"train.device: {device!r}, but this machine has {n} CUDA GPU(s); "
                                   "use auto or cpu")


@pytest.mark.parametrize("n, device, ok", [(0, "cuda", False), (1, "cuda", True), (1, "cuda:1", False),
                                           (2, "cuda:1", True), (0, "cpu", True)])
def test_check_runnable_latency_device(tmp_path, gpus, n, device, ok):
    gpus(n)
    recipe = make(tmp_path, train={"device": "cpu"}, latency={"device": device})
    if ok:
        check_runnable(recipe)
    else:
        with pytest.raises(RecipeError) as info:
            check_runnable(recipe)
        assert str(info.value) == f"latency.device: {device!r}, but this machine has {n} CUDA GPU(s); use cpu"


def test_check_runnable_needs_onnxruntime_only_where_latency_is_timed_in_it(tmp_path, monkeypatch):
    from cnnsearch.latency import ONNX_HINT

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime: ImportError
    check_runnable(make(tmp_path, train={"device": "cpu"}))
    with pytest.raises(RecipeError) as info:
        check_runnable(make(tmp_path, train={"device": "cpu"}, latency={"runtime": "onnxruntime"}))
    assert str(info.value) == f"latency.runtime: {ONNX_HINT}"


@pytest.mark.parametrize("classes, found", [(None, "no such folder"), (0, "0 sub-folder(s)"),
                                            (1, "1 sub-folder(s)"), (2, None), (3, None)])
def test_check_runnable_folder_dataset_needs_two_class_folders(tmp_path, classes, found):
    folder = tmp_path / "images"
    if classes is not None:
        folder.mkdir()
        (folder / "readme.txt").write_text("not a class")
        for i in range(classes):
            (folder / f"class{i}").mkdir()
    recipe = make(tmp_path, dataset=f"folder:{folder}", train={"device": "cpu"})
    assert recipe.dataset == f"folder:{folder}"
    if found is None:
        check_runnable(recipe)
    else:
        with pytest.raises(RecipeError) as info:
            check_runnable(recipe)
        assert str(info.value).startswith(f"dataset: {folder} must be a folder") and f"(found {found})" in str(
            info.value)


def test_relative_sqlite_storage_is_relative_to_the_recipe(tmp_path):
    recipe = make(tmp_path, storage="sqlite:///sub/x.db")
    assert recipe.storage == f"sqlite:///{(tmp_path / 'sub' / 'x.db').resolve()}"


INT_KEYS = [("trials", 1), ("seed", 0), ("max_consecutive_failures", 1), ("train.epochs", 1),
            ("train.batch_size", 1), ("latency.batch_size", 1), ("latency.threads", 1), ("limits.max_params", 1),
            ("limits.max_flops", 1), ("early_stopping.min_epoch", 1)]


@settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key_low=st.sampled_from(INT_KEYS), value=st.integers(-5, 10**9))
def test_an_integer_key_takes_any_integer_from_its_bound(tmp_path, key_low, value):
    key, low = key_low
    if value >= low:
        assert get(make(tmp_path, **_changed(key, value)), key) == value
    else:
        assert refusal(tmp_path, **_changed(key, value)) == f"{key}: {value} must be >= {low}"


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(["early_stopping.keep", "early_stopping.rungs"]),
       value=st.floats(-2, 3, allow_nan=False))
def test_a_fraction_is_in_zero_one(tmp_path, key, value):
    rung = key.endswith("rungs")
    given_value = [value] if rung else value
    if 0 < value < 1 or (value == 1 and not rung):
        assert get(make(tmp_path, **_changed(key, given_value)), key) == ((value,) if rung else value)
    else:
        assert refusal(tmp_path, **_changed(key, given_value)).startswith(f"{key}: ")
