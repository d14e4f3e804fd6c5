"""Bad input, anywhere: one `error:` line and exit 2, nothing created; never a traceback."""

import math

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnsearch.errors import CnnSearchError
from cnnsearch.recipe import check_runnable, from_dict
from cnnsearch.shapes import check
from cnnsearch.space import _parse
from tests.conftest import run_cli
from tests.study_helpers import TINY_SPACE, write_recipe

scalars = st.one_of(st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12),
                    st.sampled_from(["cuda", "cuda:7", "cpu", "auto", "folder:/missing", "digits", "shapes",
                                     "../../etc/passwd", "__import__('os')", "cuda:x", "cuda:", "cpu:3", "max", "none", "same", "half", "sgd",
                                     "accuracy", "latency_ms", "tpe", "random"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
RECIPE_KEYS = ["name", "space", "dataset", "data", "objectives", "trials", "seed", "sampler", "storage",
               "artifacts", "train", "latency", "limits", "early_stopping", "max_consecutive_failures",
               "epochs", "device", "batch_size", "threads", "n", "size", "val_fraction", "max_params",
               "max_latency_ms", "enabled", "margin", "min_epoch", "bogus"]
SPACE_KEYS = ["depth", "min_side", "block", "blocks", "head", "train", "description", "out_channels", "kernel_size",
              "stride", "padding", "activation", "norm", "pool", "pool_size", "dropout", "residual", "lr",
              "batch_size", "optimizer", "momentum", "hidden", "hidden_layers", "low", "high", "step", "log", "0",
              "bogus"]


def _tree(keys):
    leaf = st.one_of(values, st.dictionaries(st.sampled_from(keys), values, max_size=4))
    return st.dictionaries(st.sampled_from(keys), st.one_of(leaf, st.dictionaries(st.sampled_from(keys), leaf,
                                                                                 max_size=3)), max_size=6)


@settings(max_examples=400, deadline=None, derandomize=True,  # the same examples in every CI run
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_tree(RECIPE_KEYS))
def test_any_recipe_is_accepted_or_refused_in_one_line(tmp_path, data):
    (tmp_path / "space.toml").write_text(TINY_SPACE)
    try:
        recipe = from_dict({"name": "fuzz", "space": "space.toml", **data}, tmp_path)
        check_runnable(recipe)
    except CnnSearchError as exc:
        assert str(exc) and "\n" not in str(exc)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(data=_tree(SPACE_KEYS), shape=st.sampled_from([(1, 8, 8), (3, 32, 32), (3, 5, 7)]))
def test_any_space_is_accepted_or_refused_and_its_samples_check(data, shape):
    try:
        space = _parse(data, "fuzz.toml")
    except CnnSearchError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):  # a space that parses samples specs that check() accepts or refuses
        trial = study.ask()
        try:
            check(space.sample(trial, input=shape, num_classes=3))
        except CnnSearchError as exc:
            assert "\n" not in str(exc)
        hp = space.sample_train(trial)
        assert all(not isinstance(v, float) or math.isfinite(v) for v in hp.values())
        study.tell(trial, 0.0)


@pytest.mark.slow
def test_machine_and_output_errors_are_one_line_and_create_nothing(tmp_path):
    for old, new, expected in (
            ('device = "cpu"', 'device = "cuda:64"', "train.device: 'cuda:64', but this machine has "),
            ('device = "cpu"', 'device = "cpu"\n[latency]\ndevice = "cuda:65"', "latency.device: 'cuda:65', but"),
            ('device = "cpu"', 'device = "cuda:x"', "train.device: 'cuda:x' is not one of"),
            ('dataset = "digits"', f'dataset = "folder:{tmp_path}/none"', "dataset: ")):
        recipe = write_recipe(tmp_path)
        recipe.write_text(recipe.read_text().replace(old, new))
        result = run_cli("search", str(recipe))
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        assert not (tmp_path / "tiny.db").exists()
    spec = tmp_path / "spec.json"
    spec.write_text('{"input": [1, 8, 8], "num_classes": 2, "blocks": [{"out_channels": 4, "kernel_size": 3}]}')
    out = tmp_path / "new" / "deeper" / "m.py"
    result = run_cli("export", "--spec", str(spec), "-o", str(out), "--weights", str(tmp_path / "w" / "m.safetensors"))
    assert result.returncode == 0, result.stderr  # missing output folders are made
    assert out.exists() and (tmp_path / "w" / "m.safetensors").exists()
    (tmp_path / "file").write_text("")
    result = run_cli("export", "--spec", str(spec), "-o", str(tmp_path / "file" / "m.py"))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
