"""Search spaces section by section: every key validated with an error naming the key and
echoing the bad value, the defaults a silent space takes, and sampling that offers exactly
the declared choices and ranges under stable parameter names."""

import math
import textwrap

import optuna
import pytest
from optuna.distributions import CategoricalDistribution as Cat
from optuna.distributions import FloatDistribution as Float
from optuna.distributions import IntDistribution as Int

from cnnsearch import ArchSpec, SpaceError
from cnnsearch.hparams import OPTIMIZERS, SEARCHABLE, TrainConfig
from cnnsearch.space import load_space, parse_space
from cnnsearch.spec import BlockSpec, HeadSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

BLOCK = "[block]\nout_channels = 8\nkernel_size = 3\n"


def space(text: str, path: str = "<space>"):
    return parse_space(textwrap.dedent(text), path)


def space_error(text: str) -> str:
    """The message of parsing ``text``, without the leading ``<space>: `` label."""
    with pytest.raises(SpaceError) as info:
        space(text)
    message = str(info.value)
    assert message.startswith("<space>: "), message
    return message[len("<space>: "):]


def ask(*enqueued: dict):
    """A fresh trial of a random-sampling study, with ``enqueued`` params fixed."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for params in enqueued:
        study.enqueue_trial(params)
    return study.ask()


def allowed(message: str) -> set[str]:
    return set(message.split("(allowed: ", 1)[1].rstrip(")").split(", "))


# ------------------------------------------------------------------ sampling


SAMPLED = """
    depth = 1
    [block]
    out_channels = [8, 16]
    kernel_size = {low = 1, high = 5, step = 2}
    dropout = {low = 0.0, high = 0.5}
    stride = [1, 2]
    [head]
    hidden_layers = [1, 2]
    hidden = {low = 8, high = 64, log = true}
    dropout = {low = 0.0, high = 0.5, step = 0.25}
    activation = ["relu", "gelu"]
    [train]
    lr = {low = 1e-4, high = 1e-1, log = true}
    batch_size = [32, 64]
    weight_decay = {low = 0.0, high = 0.5, step = 0.25}
    momentum = 0.8
"""


def test_sampling_offers_exactly_the_declared_choices_and_ranges():
    s = space(SAMPLED)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    hidden_counts = set()
    for _ in range(12):
        trial = study.ask()
        spec = s.sample(trial, input=(1, 16, 16), num_classes=3)
        train = s.sample_train(trial)
        p = trial.params
        n = p["head_hidden_layers"]
        hidden_counts.add(n)
        expected = {
            "b0_out_channels": Cat((8, 16)), "b0_kernel_size": Int(1, 5, step=2),
            "b0_dropout": Float(0.0, 0.5), "b0_stride": Cat((1, 2)),
            "head_hidden_layers": Cat((1, 2)), "head_activation": Cat(("relu", "gelu")),
            **{f"head_hidden{j}": Int(8, 64, log=True) for j in range(n)},
            "head_dropout": Float(0.0, 0.5, step=0.25),
            "lr": Float(1e-4, 1e-1, log=True), "batch_size": Cat((32, 64)),
            "weight_decay": Float(0.0, 0.5, step=0.25),
        }
        assert trial.distributions == expected
        block = spec.blocks[0]
        assert len(spec.blocks) == 1
        assert (block.out_channels, block.kernel_size, block.dropout, block.stride) == (
            p["b0_out_channels"], p["b0_kernel_size"], p["b0_dropout"], p["b0_stride"])
        assert spec.head == HeadSpec("flatten", tuple(p[f"head_hidden{j}"] for j in range(n)),
                                     p["head_activation"], p["head_dropout"])
        assert spec.input == (1, 16, 16) and spec.num_classes == 3
        assert train == {"lr": p["lr"], "batch_size": p["batch_size"], "weight_decay": p["weight_decay"],
                         "optimizer": TrainConfig.optimizer, "label_smoothing": TrainConfig.label_smoothing,
                         "momentum": 0.8}
        study.tell(trial, 0.0)
    assert hidden_counts == {1, 2}


def test_fixed_trial_gives_exactly_the_named_values():
    """Parameter names are the contract: a FixedTrial with exactly these names rebuilds the net."""
    params = {"b0_out_channels": 16, "b0_kernel_size": 5, "b0_dropout": 0.25, "b0_stride": 2,
              "head_hidden_layers": 2, "head_hidden0": 32, "head_hidden1": 8, "head_activation": "gelu",
              "head_dropout": 0.25, "lr": 0.01, "batch_size": 64, "weight_decay": 0.25}
    trial = optuna.trial.FixedTrial(params)
    s = space(SAMPLED)
    spec = s.sample(trial, input=(3, 16, 16), num_classes=5)
    assert spec == ArchSpec.from_dict({
        "input": [3, 16, 16], "num_classes": 5,
        "blocks": [{"out_channels": 16, "kernel_size": 5, "dropout": 0.25, "stride": 2}],
        "head": {"hidden": [32, 8], "activation": "gelu", "dropout": 0.25}})
    assert s.sample_train(trial) == {"lr": 0.01, "batch_size": 64, "weight_decay": 0.25, "optimizer": "adamw",
                                     "label_smoothing": 0.0, "momentum": 0.8}


def test_head_dropout_only_with_hidden_layers():
    s = space(BLOCK + "[head]\nhidden_layers = [0, 1]\ndropout = [0.1, 0.2]\npool = ['avg', 'max']\n")
    trial = ask({"head_hidden_layers": 0, "head_pool": "max"})
    spec = s.sample(trial, input=(1, 8, 8), num_classes=2)
    assert spec.head == HeadSpec("max", (), "relu", 0.0)
    assert "head_dropout" not in trial.params and "head_hidden0" not in trial.params
    trial = ask({"head_hidden_layers": 1, "head_dropout": 0.2, "head_pool": "avg"})
    spec = s.sample(trial, input=(1, 8, 8), num_classes=2)
    assert spec.head == HeadSpec("avg", (64,), "relu", 0.2)  # hidden width 64 where the space is silent
    assert trial.distributions["head_dropout"] == Cat((0.1, 0.2))


def test_a_silent_space_takes_the_defaults():
    """Only a block's two required keys: depth 1..3, PyTorch-default blocks, a linear head,
    TrainConfig's training hyperparameters."""
    s = space(BLOCK)
    assert s.description == "" and s.min_side == 2 and s.stages == () and len(s.block) == 3
    assert s.path == "<space>"
    for depth in (1, 2, 3):
        trial = ask({"depth": depth})
        spec = s.sample(trial, input=(1, 16, 16), num_classes=4)
        assert trial.distributions == {"depth": Int(1, 3)}
        assert spec.blocks == (BlockSpec(8, 3),) * depth
        assert spec.head == HeadSpec()
        config = TrainConfig()
        assert s.sample_train(trial) == {k: getattr(config, k) for k in SEARCHABLE}
        assert trial.distributions == {"depth": Int(1, 3)}  # no training parameter either


def test_the_largest_depth_has_its_blocks():
    s = space("depth = [3, 1]\n" + BLOCK)
    assert len(s.block) == 3
    trial = ask({"depth": 3})
    assert len(s.sample(trial, input=(1, 16, 16), num_classes=2).blocks) == 3
    assert trial.distributions["depth"] == Cat((3, 1))
    assert space("depth = 0\n" + BLOCK).sample(ask(), input=(1, 4, 4), num_classes=2).blocks == ()


def test_one_element_list_is_fixed_not_a_parameter():
    s = space("depth = [2]\n" + BLOCK.replace("= 8", "= [16]") + "activation = ['gelu']\n")
    trial = ask()
    spec = s.sample(trial, input=(1, 16, 16), num_classes=2)
    assert trial.distributions == {}
    assert [(b.out_channels, b.activation) for b in spec.blocks] == [(16, "gelu")] * 2


@pytest.mark.parametrize("text, name, dist", [
    ("stride = {low = 1, high = 3}", "b0_stride", Int(1, 3)),
    ("out_channels = {low = 4, high = 64, log = true}", "b0_out_channels", Int(4, 64, log=True)),
    ("out_channels = {low = 8, high = 32, step = 8}", "b0_out_channels", Int(8, 32, step=8)),
    ("kernel_size = {low = 3, high = 3}", "b0_kernel_size", Int(3, 3)),
    ("dropout = {low = 0, high = 0.5}", "b0_dropout", Float(0, 0.5)),
    ("dropout = {low = 0.01, high = 0.5, log = true}", "b0_dropout", Float(0.01, 0.5, log=True)),
    ("dropout = {low = 0, high = 1, step = 0.5}", "b0_dropout", None),  # 1 is no dropout: refused below
])
def test_ranges_become_optuna_distributions(text, name, dist):
    key = text.split(" ")[0]
    body = BLOCK.replace(f"{key} = ", "#") + text + "\n"
    if dist is None:
        assert space_error("depth = 1\n" + body).startswith("block.dropout: 1 is out of range")
        return
    trial = ask()
    spec = space("depth = 1\n" + body).sample(trial, input=(1, 32, 32), num_classes=2)
    assert trial.distributions == {name: dist}
    assert getattr(spec.blocks[0], key) == trial.params[name]


def test_per_block_overrides():
    s = space("depth = 2\n" + BLOCK + "[blocks.1]\nout_channels = [16, 32]\nkernel_size = 5\n")
    trial = ask({"b1_out_channels": 32})
    spec = s.sample(trial, input=(1, 16, 16), num_classes=2)
    assert trial.distributions == {"b1_out_channels": Cat((16, 32))}
    assert [(b.out_channels, b.kernel_size) for b in spec.blocks] == [(8, 3), (32, 5)]


@pytest.mark.parametrize("min_side, pools", [(4, ["max", "max", "none"]), (2, ["max", "max", "max"]),
                                             (1, ["max", "max", "max"])])
def test_min_side_stops_pooling(min_side, pools):
    """16 -> 8 -> 4 -> 2: each pool halves the map; none that would leave it under min_side."""
    s = space(f"depth = 3\nmin_side = {min_side}\n[block]\nout_channels = 4\nkernel_size = 1\npool = 'max'\n")
    assert s.min_side == min_side
    spec = s.sample(ask(), input=(1, 16, 16), num_classes=2)
    assert [b.pool for b in spec.blocks] == pools


def test_description_and_path_are_kept(tmp_path):
    s = space("description = 'tiny nets'\n" + BLOCK, "mine.toml")
    assert s.description == "tiny nets" and s.path == "mine.toml"
    path = tmp_path / "s.toml"
    path.write_text(BLOCK)
    assert load_space(path).path == str(path)
    assert load_space(str(path)).block == space(BLOCK).block


def test_missing_space_file_names_the_file(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert str(info.value).startswith(f"{path}: cannot read (") and "No such file" in str(info.value)


def test_errors_carry_the_path_label():
    with pytest.raises(SpaceError) as info:
        parse_space("colour = 1\n", "study 'x'")
    assert str(info.value).startswith("study 'x': space.colour: unknown key")
    with pytest.raises(SpaceError) as info:
        parse_space("[[block]\n", "study 'x'")
    assert str(info.value).startswith("study 'x': not valid TOML (")


# ------------------------------------------------------------------ staged spaces

STAGED = """
    [[stages]]
    repeats = 2
    out_channels = 16
    kernel_size = 3
    padding = 1
    [[stages]]
    repeats = [0, 1]
    out_channels = 24
    kernel_size = 3
    stride = 2
    padding = 1
"""


def test_staged_space_samples_its_stages():
    s = space(STAGED)
    assert s.block == () and len(s.stages) == 2
    trial = ask({"s1_repeats": 1})
    spec = s.sample(trial, input=(1, 16, 16), num_classes=2)
    assert trial.distributions == {"s1_repeats": Cat((0, 1))}  # width 1.0 where the space is silent
    assert [(b.out_channels, b.stride) for b in spec.blocks] == [(16, 1), (16, 1), (24, 2)]
    trial = ask({"s1_repeats": 0})
    assert len(s.sample(trial, input=(1, 16, 16), num_classes=2).blocks) == 2


def test_staged_space_min_side_and_width():
    s = space("min_side = 4\nwidth = [1.0, 2.0]\n" + STAGED.replace("repeats = [0, 1]", "repeats = 1")
              .replace("stride = 2", "stride = [1, 2]"))
    trial = ask({"width": 2.0})
    spec = s.sample(trial, input=(1, 6, 6), num_classes=2)
    assert trial.distributions == {"width": Cat((1.0, 2.0))}  # 6 // 2 < min_side 4: no stride offered
    assert [(b.out_channels, b.stride) for b in spec.blocks] == [(32, 1), (32, 1), (48, 1)]
    trial = ask({"width": 1.0, "s1_stride": 2})
    spec = s.sample(trial, input=(1, 16, 16), num_classes=2)
    assert "s1_stride" in trial.distributions and spec.blocks[2].stride == 2


@pytest.mark.parametrize("extra, message", [
    ("depth = 2\n", "depth: a space declares either stages or depth/block/blocks"),
    (BLOCK, "block: a space declares either stages or depth/block/blocks"),
    ("[blocks.0]\nkernel_size = 3\n", "blocks: a space declares either stages or depth/block/blocks"),
])
def test_stages_exclude_depth_and_blocks(extra, message):
    assert space_error(extra + STAGED).startswith(message)


def stage(**keys) -> str:
    body = {"out_channels": 8, "kernel_size": 3, **keys}
    return "[[stages]]\n" + "".join(f"{k} = {v}\n" for k, v in body.items() if v is not None)


@pytest.mark.parametrize("text, message", [
    ("stages = 3\n", "stages: expected 1 to 16 [[stages]] tables, got 3"),
    ("stages = []\n", "stages: expected 1 to 16 [[stages]] tables, got []"),
    (stage() * 17, "stages: expected 1 to 16 [[stages]] tables"),
    ("stages = [1]\n", "stages[0]: expected a table, got 1"),
    (stage() + stage(colour=1), "stages[1].colour: unknown key"),
    (stage(out_channels=None), "stages[0].out_channels: missing (required)"),
    (stage() + stage(kernel_size=None), "stages[1].kernel_size: missing (required)"),
    (stage(repeats=9), "stages[0].repeats: expected integers in [0, 8], got 9"),
    (stage(repeats=-1), "stages[0].repeats: expected integers in [0, 8], got -1"),
    (stage(repeats="true"), "stages[0].repeats: expected integers in [0, 8], got True"),
    (stage(repeats=1.5), "stages[0].repeats: expected integers in [0, 8], got 1.5"),
    (stage(repeats="[1, 9]"), "stages[0].repeats: expected integers in [0, 8], got [1, 9]"),
    (stage(repeats="{low = 0, high = 9}"), "stages[0].repeats: expected integers in [0, 8]"),
    (stage(repeats="[]"), "stages[0].repeats: an empty list offers no choice"),
    (stage(kernel_size=40), "stages[0].kernel_size: 40 is out of range"),
    (stage() + stage(activation="'swishy'"), "stages[1].activation: 'swishy' is not one of"),
    (stage(se="true"), "stages[0].se: applies to kind mbconv, which stages[0] never picks (kind: conv)"),
    (stage(kind="'mbconv'", groups=2), "stages[0].groups: applies to kind conv, which stages[0] never picks"),
    (stage(width=2), "stages[0].width: unknown key"),
    ("width = 0.04\n" + stage(), "width: expected multipliers in [0.05, 8], got 0.04"),
    ("width = 8.5\n" + stage(), "width: expected multipliers in [0.05, 8], got 8.5"),
    ("width = true\n" + stage(), "width: expected multipliers in [0.05, 8], got True"),
    ("width = 'wide'\n" + stage(), "width: expected multipliers in [0.05, 8], got 'wide'"),
    ("width = [0.5, 9]\n" + stage(), "width: expected multipliers in [0.05, 8], got [0.5, 9]"),
    ("width = {low = 0.01, high = 1.0}\n" + stage(), "width: expected multipliers in [0.05, 8]"),
    ("width = []\n" + stage(), "width: an empty list offers no choice"),
])
def test_bad_stages_name_the_stage_and_key(text, message):
    assert space_error(text).startswith(message)


@pytest.mark.parametrize("text", [
    stage(repeats=0) + stage(), stage(repeats=8), stage(repeats="{low = 0, high = 8}"), stage() * 16,
    "width = 0.05\n" + stage(), "width = 8\n" + stage(), "width = {low = 0.5, high = 2.0}\n" + stage(),
    stage(kind="['conv', 'mbconv']", se="[true, false]", groups=1),
    stage(kind="'mbconv'", expansion="[3, 6]", se="true"),
])
def test_good_stages_parse(text):
    s = space(text)
    assert len(s.stages) == text.count("[[stages]]")
    s.sample(ask(), input=(1, 32, 32), num_classes=2)


def test_stage_repeats_default_to_one():
    s = space(stage())
    assert len(s.sample(ask(), input=(1, 8, 8), num_classes=2).blocks) == 1


# ------------------------------------------------------------------ validation, key by key

GOOD = "depth = 1\n" + BLOCK


@pytest.mark.parametrize("text, message", [
    # top level
    ("colour = 1\n" + BLOCK, "space.colour: unknown key"),
    ("width = 2.0\n" + BLOCK, "width: a width multiplier scales [[stages]] channels"),
    ("depth = 'deep'\n" + BLOCK, "depth: expected integers in [0, 32], got 'deep'"),
    ("depth = 33\n" + BLOCK, "depth: expected integers in [0, 32], got 33"),
    ("depth = -1\n" + BLOCK, "depth: expected integers in [0, 32], got -1"),
    ("depth = true\n" + BLOCK, "depth: expected integers in [0, 32], got True"),
    ("depth = [1, 2.5]\n" + BLOCK, "depth: expected integers in [0, 32], got [1, 2.5]"),
    ("depth = {low = 1, high = 40}\n" + BLOCK, "depth: expected integers in [0, 32]"),
    ("depth = {low = 1, high = 3, step = 1.0}\n" + BLOCK, "depth: expected integers in [0, 32]"),
    ("depth = {low = 1.0, high = 3.0}\n" + BLOCK, "depth: expected integers in [0, 32]"),
    ("depth = []\n" + BLOCK, "depth: an empty list offers no choice"),
    ("min_side = 0\n" + BLOCK, "min_side: expected an integer >= 1, got 0"),
    ("min_side = true\n" + BLOCK, "min_side: expected an integer >= 1, got True"),
    ("min_side = 2.0\n" + BLOCK, "min_side: expected an integer >= 1, got 2.0"),
    ("min_side = '2'\n" + BLOCK, "min_side: expected an integer >= 1, got '2'"),
    # tables that are not tables
    ("block = 3\n", "block: expected a table, got 3"),
    ("head = [1]\n" + GOOD, "head: expected a table, got [1]"),
    ("train = 5\n" + GOOD, "train: expected a table, got 5"),
    ("blocks = 1\n" + GOOD, "blocks: expected a table, got 1"),
    (GOOD + "[blocks]\n0 = 3\n", "blocks.0: expected a table, got 3"),
    (GOOD + "[blocks.33]\nkernel_size = 3\n", "blocks.33: unknown key"),
    (GOOD + "[blocks.x]\nkernel_size = 3\n", "blocks.x: unknown key"),
    # block keys
    ("depth = 1\n[block]\nkernel_size = 3\n", "block.out_channels: missing (required)"),
    ("depth = 1\n[block]\nout_channels = 3\n", "block.kernel_size: missing (required)"),
    (GOOD + "colour = 1\n", "block.colour: unknown key"),
    (GOOD + "repeats = 2\n", "block.repeats: unknown key"),
    (GOOD + "stride = 9\n", "block.stride: 9 is out of range [1, 8]"),
    (GOOD + "stride = [1, 9]\n", "block.stride: 9 is out of range [1, 8]"),
    (GOOD + "stride = {low = 0, high = 2}\n", "block.stride: 0 is out of range [1, 8]"),
    (GOOD + "stride = {low = 1, high = 9}\n", "block.stride: 9 is out of range [1, 8]"),
    (GOOD + "stride = {low = 1, high = 2, step = 0.5}\n", "block.stride: expected integers, got range 1..2"),
    (GOOD.replace("out_channels = 8", "out_channels = {low = 4.0, high = 8.0}"), "block.out_channels: expected integers"),
    (GOOD + "padding = ['half', 40]\n", "block.padding: 40 is out of range [0, 31]"),
    (GOOD + "padding = 'full'\n", "block.padding: 'full' is not one of"),
    (GOOD + "dropout = {low = 0.0, high = 1.0}\n", "block.dropout: 1.0 is out of range [0, 1)"),
    (GOOD + "dropout = {low = -0.5, high = 0.5}\n", "block.dropout: -0.5 is out of range [0, 1)"),
    (GOOD + "residual = [true, 1]\n", "block.residual: expected true or false, got 1"),
    (GOOD + "kind = ['conv', 'dense']\n", "block.kind: 'dense' is not one of"),
    (GOOD + "expansion = 6\n", "block.expansion: applies to kind mbconv, which block never picks (kind: conv)"),
    (GOOD + "kind = ['separable', 'conv']\nse = [true, false]\n",
     "block.se: applies to kind mbconv, which block never picks (kind: separable, conv)"),
    (GOOD + "kind = 'mbconv'\nresidual = [true, false]\n",
     "block.residual: applies to kind conv and separable, which block never picks (kind: mbconv)"),
    (GOOD + "kind = 'separable'\ngroups = 2\n", "block.groups: applies to kind conv, which block never picks"),
    (GOOD + "expansion = 0\nkind = ['conv', 'mbconv']\n", "block.expansion: 0 is out of range [1, 16]"),
    (GOOD + "[blocks.0]\nnorm = 'group'\n", "blocks.0.norm: 'group' is not one of"),
    (GOOD + "[blocks.0]\nkernel_size = []\n", "blocks.0.kernel_size: an empty list offers no choice"),
    (GOOD + "[blocks.0]\nkernel_size = [3, 3]\n", "blocks.0.kernel_size: choices repeat in [3, 3]"),
    (GOOD + "[blocks.0]\nse = true\n", "blocks.0.se: applies to kind mbconv, which blocks.0 never picks"),
    ("depth = 1\n[block]\nout_channels = 8\nkernel_size = 3\nkind = 'conv'\n[blocks.0]\nexpansion = 6\n",
     "blocks.0.expansion: applies to kind mbconv, which blocks.0 never picks (kind: conv)"),
    ("depth = 1\n[block]\nout_channels = 8\nkernel_size = 3\nkind = ['conv', 'mbconv']\nexpansion = 6\n"
     "[blocks.0]\nkind = 'conv'\n", "blocks.0.expansion: applies to kind mbconv, which blocks.0 never picks"),
    ("depth = 2\n" + BLOCK + "[blocks.1]\nse = true\n", "blocks.1.se: applies to kind mbconv"),
    # range syntax
    (GOOD + "stride = {low = 1, high = 2, stap = 1}\n", "block.stride: a range is {low, high[, step][, log]}, got"),
    (GOOD + "stride = {low = 1}\n", "block.stride: a range is {low, high[, step][, log]}, got {'low': 1}"),
    (GOOD + "stride = {high = 2}\n", "block.stride: a range is {low, high[, step][, log]}, got {'high': 2}"),
    (GOOD + "stride = {low = true, high = 2}\n", "block.stride: range bounds must be numbers, got"),
    (GOOD + "stride = {low = 1, high = '2'}\n", "block.stride: range bounds must be numbers, got"),
    (GOOD + "stride = {low = 1, high = 2, step = 'one'}\n", "block.stride: range bounds must be numbers"),
    (GOOD + "stride = {low = 1, high = 2, log = 1}\n", "block.stride: log must be true or false, got 1"),
    (GOOD + "stride = {low = 3, high = 1}\n", "block.stride: low 3 is above high 1"),
    (GOOD + "stride = {low = 0, high = 2, log = true}\n", "block.stride: a log range needs low > 0 and no step"),
    (GOOD + "stride = {low = -1, high = 2, log = true}\n", "block.stride: a log range needs low > 0"),
    (GOOD + "stride = {low = 1, high = 4, step = 1, log = true}\n", "block.stride: a log range needs low > 0 and no step"),
    # head
    (GOOD + "[head]\ncolour = 1\n", "head.colour: unknown key"),
    (GOOD + "[head]\nhidden_layers = 9\n", "head.hidden_layers: expected integers in [0, 8]"),
    (GOOD + "[head]\nhidden_layers = -1\n", "head.hidden_layers: expected integers in [0, 8]"),
    (GOOD + "[head]\nhidden_layers = true\n", "head.hidden_layers: expected integers in [0, 8]"),
    (GOOD + "[head]\nhidden_layers = 1.0\n", "head.hidden_layers: expected integers in [0, 8]"),
    (GOOD + "[head]\nhidden_layers = {low = 0, high = 9}\n", "head.hidden_layers: expected integers in [0, 8]"),
    (GOOD + "[head]\nhidden = [64, -1]\n", "head.hidden: -1 is out of range"),
    (GOOD + "[head]\nhidden = {low = 0, high = 8}\n", "head.hidden: 0 is out of range"),
    (GOOD + "[head]\nhidden = 'wide'\n", "head.hidden: expected an integer, got 'wide'"),
    (GOOD + "[head]\npool = ['avg', 'attention']\n", "head.pool: 'attention' is not one of flatten, avg, max"),
    (GOOD + "[head]\nactivation = 'swishy'\n", "head.activation: 'swishy' is not one of"),
    (GOOD + "[head]\ndropout = 1.0\n", "head.dropout: 1.0 is out of range [0, 1)"),
    (GOOD + "[head]\ndropout = [0.0, -0.1]\n", "head.dropout: -0.1 is out of range [0, 1)"),
    (GOOD + "[head]\nhidden = []\n", "head.hidden: an empty list offers no choice"),
    # train
    (GOOD + "[train]\nepochs = 3\n", "train.epochs: unknown key"),
    (GOOD + "[train]\noptimizer = ['adamw', 'lbfgs']\n", "train.optimizer: 'lbfgs' is not one of adamw, adam, sgd"),
    (GOOD + "[train]\noptimizer = 'lbfgs'\n", "train.optimizer: 'lbfgs' is not one of adamw, adam, sgd"),
    (GOOD + "[train]\noptimizer = ['lbfgs', 'adam']\n", "train.optimizer: 'lbfgs' is not one of"),
    (GOOD + "[train]\noptimizer = {low = 1, high = 2}\n", "train.optimizer: "),
    (GOOD + "[train]\noptimizer = 'sgd'\nlr = -1.0\n", "train.lr: must be > 0, got [-1.0]"),
    (GOOD + "[train]\nlr = 'fast'\n", "train.lr: expected numbers, got ['fast']"),
    (GOOD + "[train]\nlr = true\n", "train.lr: expected numbers, got [True]"),
    (GOOD + "[train]\nlr = nan\n", "train.lr: expected numbers, got [nan]"),
    (GOOD + "[train]\nweight_decay = [0.1, inf]\n", "train.weight_decay: expected numbers, got [0.1, inf]"),
    (GOOD + "[train]\nlr = 0.0\n", "train.lr: must be > 0, got [0.0]"),
    (GOOD + "[train]\nlr = {low = 0.0, high = 0.1}\n", "train.lr: must be > 0, got [0.0, 0.1]"),
    (GOOD + "[train]\nlr = {low = 0.0, high = 0.1, log = true}\n", "train.lr: a log range needs low > 0"),
    (GOOD + "[train]\nmomentum = [0.9, 0]\n", "train.momentum: must be > 0, got [0.9, 0]"),
    (GOOD + "[train]\nbatch_size = 0\n", "train.batch_size: expected integers in [1, 65536], got [0]"),
    (GOOD + "[train]\nbatch_size = 65537\n", "train.batch_size: expected integers in [1, 65536], got [65537]"),
    (GOOD + "[train]\nbatch_size = [32, 64.0]\n", "train.batch_size: expected integers in [1, 65536], got [32, 64.0]"),
    (GOOD + "[train]\nbatch_size = {low = 16.0, high = 64.0}\n", "train.batch_size: expected integers in [1, 65536]"),
    (GOOD + "[train]\nlabel_smoothing = 1.0\n", "train.label_smoothing: must be in [0, 1), got [1.0]"),
    (GOOD + "[train]\nlabel_smoothing = [-0.1, 0.1]\n", "train.label_smoothing: must be in [0, 1), got [-0.1, 0.1]"),
    (GOOD + "[train]\nweight_decay = -0.001\n", "train.weight_decay: must be >= 0, got [-0.001]"),
    (GOOD + "[train]\nweight_decay = {low = -1, high = 1}\n", "train.weight_decay: must be >= 0, got [-1, 1]"),
])
def test_bad_key_is_named_with_its_value(text, message):
    got = space_error(text)
    assert got.startswith(message), got


@pytest.mark.parametrize("text, keys", [
    ("colour = 1\n" + GOOD, ("description", "depth", "min_side", "block", "blocks", "stages", "width", "head",
                             "train")),
    (GOOD + "[head]\ncolour = 1\n", ("pool", "hidden_layers", "hidden", "activation", "dropout")),
    (GOOD + "[train]\ncolour = 1\n", SEARCHABLE),
    (GOOD + "colour = 1\n", tuple(BlockSpec.__dataclass_fields__)),
    (GOOD + "[blocks.0]\ncolour = 1\n", tuple(BlockSpec.__dataclass_fields__)),
])
def test_unknown_key_lists_the_allowed_ones(text, keys):
    message = space_error(text)
    assert allowed(message) == set(keys)


def test_stage_unknown_key_lists_the_allowed_ones():
    assert allowed(space_error(stage(colour=1))) == {"repeats", *BlockSpec.__dataclass_fields__}


@pytest.mark.parametrize("text", [
    "depth = 0\n" + BLOCK, "depth = 32\n" + BLOCK, "depth = {low = 0, high = 2}\n" + BLOCK,
    "min_side = 1\n" + BLOCK,
    GOOD + "padding = ['half', 'same', 1]\n",
    GOOD + "dropout = {low = 0.0, high = 0.5}\n",
    GOOD + "stride = {low = 1, high = 8}\n",
    GOOD + "kind = ['conv', 'mbconv']\nexpansion = [1, 6]\nse = [true, false]\nnorm = 'batch'\n",
    GOOD + "kind = 'separable'\ndilation = [1, 2]\nresidual = [false, true]\n",
    GOOD + "activation = ['relu', 'none']\npool = ['none', 'max', 'avg']\npool_size = [2, 8]\n",
    GOOD + "[blocks.32]\nkernel_size = 5\n",
    GOOD + "[head]\nhidden_layers = 8\nhidden = [1, 65536]\n",
    GOOD + "[head]\nhidden_layers = {low = 0, high = 8}\npool = ['flatten', 'avg', 'max']\n",
    GOOD + "[head]\ndropout = [0.0, 0.99]\nactivation = ['gelu', 'none']\n",
    GOOD + "[train]\noptimizer = ['adamw', 'adam', 'sgd']\nlr = 1.5\nmomentum = 1.0\n",
    GOOD + "[train]\nbatch_size = [1, 65536]\nweight_decay = [0, 0.5, 2]\nlabel_smoothing = [0, 0.99]\n",
    GOOD + "[train]\nbatch_size = {low = 16, high = 256, log = true}\nlr = {low = 1e-5, high = 1e-1, log = true}\n",
])
def test_good_values_at_their_bounds_parse(text):
    s = space(text)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(3):
        trial = study.ask()
        s.sample(trial, input=(1, 32, 32), num_classes=2)
        train = s.sample_train(trial)
        assert train["optimizer"] in OPTIMIZERS and math.isfinite(train["lr"])
        study.tell(trial, 0.0)


def test_a_range_with_equal_ends_is_one_value():
    s = space(GOOD.replace("out_channels = 8", "out_channels = {low = 8, high = 8}"))
    trial = ask()
    assert s.sample(trial, input=(1, 8, 8), num_classes=2).blocks[0].out_channels == 8


def test_an_integer_range_with_a_float_step_is_a_float_range():
    s = space(GOOD + "[train]\nweight_decay = {low = 0, high = 1, step = 0.5}\nlr = {low = 1, high = 2}\n")
    trial = ask()
    s.sample_train(trial)
    assert trial.distributions == {"weight_decay": Float(0, 1, step=0.5), "lr": Int(1, 2)}


def test_a_long_stages_value_is_shortened_in_the_error():
    message = space_error(stage() * 17)
    assert message.startswith("stages: expected 1 to 16 [[stages]] tables, got [{") and len(message) == 200


def test_text_without_a_path_is_labelled_space():
    assert parse_space(BLOCK).path == "<space>"
    with pytest.raises(SpaceError) as info:
        parse_space("colour = 1\n")
    assert str(info.value).startswith("<space>: space.colour: unknown key")
