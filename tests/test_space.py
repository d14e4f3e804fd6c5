"""Search spaces: validation, stable Optuna parameters, resolution-agnostic sampling."""

import json
import textwrap

import optuna
import pytest

from cnnsearch import SpaceError, check
from cnnsearch.space import TRAIN_DEFAULTS, load_space
from tests.conftest import ROOT, SPACES, run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path, text):
    path = tmp_path / "space.toml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
    depth = {low = 1, high = 2}
    [block]
    out_channels = [8, 16]
    kernel_size = 3
"""


@pytest.mark.parametrize("text, message", [
    (GOOD + "colour = 1\n", "block.colour: unknown key"),
    (GOOD.replace("kernel_size = 3", "kernel_size = [3, 'x']"), "block.kernel_size: expected an integer, got 'x'"),
    (GOOD + "activation = ['relu', 'swishy']\n", "block.activation: 'swishy' is not one of"),
    (GOOD + "stride = {low = 3, high = 1}\n", "block.stride: low 3 is above high 1"),
    (GOOD + "pool = []\n", "block.pool: an empty list"),
    ("depth = 2\n[block]\nkernel_size = 3\n", "block.out_channels: missing"),
    (GOOD + "[train]\noptimizer = ['adamw', 'lbfgs']\n", "train.optimizer: 'lbfgs' is not one of"),
    (GOOD + "[train]\nlr = {low = 0.0, high = 0.1, log = true}\n", "train.lr: a log range needs low > 0"),
    (GOOD + "[head]\nhidden = [64, -1]\n", "head.hidden: -1 is out of range"),
    ("depth = 'deep'\n" + GOOD.split("\n", 2)[2], "depth: expected integers"),
    ("[[block]\n", "not valid TOML"),
    (GOOD + "[blocks.0]\nnorm = 'group'\n", "blocks.0.norm: 'group' is not one of"),
])
def test_bad_space_names_file_and_key(tmp_path, text, message):
    assert_bad_space(write(tmp_path, text), message)


def assert_bad_space(path, message):
    """Loading ``path`` is one SpaceError naming the file, then ``message``."""
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(info.value).startswith(f"{path}: "), str(info.value)
    assert message in str(info.value), str(info.value)


def test_parameters_exist_only_for_blocks_that_exist(tmp_path):
    space = load_space(write(tmp_path, GOOD + "pool = ['max', 'none']\n"))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    depths = set()
    for _ in range(40):
        trial = study.ask()
        spec = space.sample(trial, input=(1, 16, 16), num_classes=3)
        study.tell(trial, 0.0)
        depth = trial.params["depth"]
        depths.add(depth)
        assert len(spec.blocks) == depth
        blocks_named = {int(k.split("_")[0][1:]) for k in trial.params if k[0] == "b" and k[1].isdigit()}
        assert blocks_named == set(range(depth))
        assert [b.out_channels for b in spec.blocks] == [trial.params[f"b{i}_out_channels"] for i in range(depth)]
    assert depths == {1, 2}


def test_pool_is_not_offered_once_the_map_is_too_small(tmp_path):
    space = load_space(write(tmp_path, GOOD.replace("{low = 1, high = 2}", "4") + "pool = 'max'\npadding = 1\n"))
    trial = optuna.create_study().ask()
    spec = space.sample(trial, input=(1, 8, 8), num_classes=3)
    # 8 -> pool 4 -> pool 2 -> (2 // 2 = 1 < min_side 2): no more pools, and none recorded
    assert [b.pool for b in spec.blocks] == ["max", "max", "none", "none"]
    assert check(spec).spatial_chain == "8->4->2"


@pytest.mark.parametrize("space_path", SPACES, ids=lambda p: p.stem)
@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 64, 64)])
def test_every_sampler_accepts_every_space(space_path, shape):
    """No categorical whose choices change: TPE (multivariate, grouped) and NSGA-II run clean."""
    space = load_space(space_path)
    for sampler in (optuna.samplers.TPESampler(seed=0, multivariate=True, group=True, n_startup_trials=5),
                    optuna.samplers.NSGAIISampler(seed=0, population_size=6)):
        study = optuna.create_study(sampler=sampler, directions=["maximize", "minimize"])
        seen = {}
        for _ in range(20):
            trial = study.ask()
            spec = space.sample(trial, input=shape, num_classes=10)
            train = space.sample_train(trial)
            assert set(train) == set(TRAIN_DEFAULTS)
            assert spec.input == shape and spec.num_classes == 10
            for name, dist in trial.distributions.items():
                assert seen.setdefault(name, dist) == dist, name
            study.tell(trial, [len(spec.blocks) / 10, 1.0])


def test_spaces_are_resolution_agnostic():
    space = load_space(ROOT / "spaces" / "small-images.toml")
    for shape in [(1, 8, 8), (1, 28, 28)]:
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
        for _ in range(50):
            trial = study.ask()
            check(space.sample(trial, input=shape, num_classes=10))  # never a ShapeError here
            study.tell(trial, 0.0)


def test_cli_show_space_counts_valid_samples():
    result = run_cli("show", "spaces/tutorial.toml", "--sample", "30", "--seed", "1",
                     "--input", "1,8,8", "--classes", "10", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sampled"] == 30 and 0 < report["valid"] < 30  # 8x8 with padding 0 rules some out
    assert sum(report["invalid_by_layer"].values()) == 30 - report["valid"]
    assert all(s["valid"] == ("error" not in s) for s in report["samples"])
    text = run_cli("show", "spaces/tutorial.toml", "--sample", "30", "--seed", "1", "--input", "1,8,8")
    assert f"{report['valid']} valid, {30 - report['valid']} invalid" in text.stdout
