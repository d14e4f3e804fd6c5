"""Staged spaces (MnasNet's factorized hierarchical space) and the shipped mobile space."""


import optuna
import pytest

from cnnsearch import ShapeError, check
from cnnsearch.shapes import make_divisible
from cnnsearch.space import load_space
from tests.conftest import ROOT
from tests.test_space import assert_bad_space, write
from tests.torch_reference import assert_table_matches_torch

optuna.logging.set_verbosity(optuna.logging.WARNING)
MOBILE = ROOT / "spaces" / "mobile.toml"

STAGED = """
    width = [0.5, 1.0]
    [[stages]]
    out_channels = 16
    kernel_size = 3
    stride = 2
    padding = "half"
    [[stages]]
    kind = ["mbconv", "separable"]
    repeats = {low = 0, high = 3}
    out_channels = [24, 40]
    kernel_size = [3, 5]
    expansion = [1, 4]
    se = [true, false]
    stride = 2
    padding = "half"
    pool = "max"
"""


def sampled(space, n: int, *, input: tuple[int, int, int], num_classes: int = 2):
    """``n`` seeded random samples of ``space``: (the trial's params, the spec) each."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(n):
        trial = study.ask()
        spec = space.sample(trial, input=input, num_classes=num_classes)
        study.tell(trial, 0.0)
        yield trial.params, spec


@pytest.mark.parametrize("text, message", [
    (STAGED + "    colour = 1\n", "stages[1].colour: unknown key (allowed: repeats, out_channels"),
    ("depth = 2\n" + STAGED, "depth: a space declares either stages or depth/block/blocks, not both"),
    (STAGED.replace("{low = 0, high = 3}", "9"), "stages[1].repeats: expected integers in [0, 8]"),
    (STAGED.replace("width = [0.5, 1.0]", "width = [0.0]"), "width: expected multipliers in [0.05, 8]"),
    (STAGED.replace('out_channels = 16\n', 'out_channels = 16\n    se = true\n'),
     "stages[0].se: applies to kind mbconv, which stages[0] never picks (kind: conv)"),
    (STAGED.replace('["mbconv", "separable"]', '["mbconv", "fused"]'), "stages[1].kind: 'fused' is not one of"),
    (STAGED.replace("expansion = [1, 4]", "expansion = [1, 40]"), "stages[1].expansion: 40 is out of range"),
    ("stages = []\n", "stages: expected 1 to 16"),
    ("width = 0.5\ndepth = 1\n[block]\nout_channels = 8\nkernel_size = 3\n", "width: a width multiplier scales"),
])
def test_bad_staged_space_names_the_key(tmp_path, text, message):
    assert_bad_space(write(tmp_path, text), message)


def test_stages_share_one_set_of_choices_and_only_the_first_block_downsamples(tmp_path):
    space = load_space(write(tmp_path, STAGED))
    seen_repeats = set()
    for p, spec in sampled(space, 60, input=(3, 64, 64), num_classes=4):
        repeats = p["s1_repeats"]
        seen_repeats.add(repeats)
        assert len(spec.blocks) == 1 + repeats
        width = p["width"]
        assert spec.blocks[0].out_channels == make_divisible(16 * width)
        stage = spec.blocks[1:]
        if not repeats:  # a stage without blocks has no parameters
            assert not any(k.startswith("s1_") and k != "s1_repeats" for k in p)
            continue
        assert {b.kind for b in stage} == {p["s1_kind"]}
        assert {b.out_channels for b in stage} == {make_divisible(p["s1_out_channels"] * width)}
        assert [b.stride for b in stage] == [2] + [1] * (repeats - 1)
        assert [b.pool for b in stage] == ["none"] * (repeats - 1) + ["max"]
        assert ("s1_se" in p) == ("s1_expansion" in p) == (p["s1_kind"] == "mbconv")
        if p["s1_kind"] == "mbconv":
            assert {(b.se, b.expansion, b.norm) for b in stage} == {(p["s1_se"], p["s1_expansion"], "batch")}
        check(spec)
    assert seen_repeats == {0, 1, 2, 3}



def test_a_stage_suggests_exactly_the_fields_of_its_kind(tmp_path):
    """norm and residual belong to conv and separable blocks; an mbconv block has its own
    batch norm and residual, and suggests expansion and SE instead."""
    space = load_space(write(tmp_path, """
        [[stages]]
        kind = ["conv", "separable", "mbconv"]
        out_channels = 8
        kernel_size = 3
        norm = ["batch", "none"]
        residual = [true, false]
        expansion = [1, 4]
        se = [true, false]
    """))
    kinds = set()
    for p, spec in sampled(space, 30, input=(3, 16, 16)):
        block = spec.blocks[0]
        kinds.add(p["s0_kind"])
        mbconv = p["s0_kind"] == "mbconv"
        assert {k for k in ("s0_norm", "s0_residual", "s0_expansion", "s0_se") if k in p} == (
            {"s0_expansion", "s0_se"} if mbconv else {"s0_norm", "s0_residual"})
        if not mbconv:
            assert (block.norm, block.residual) == (p["s0_norm"], p["s0_residual"])
    assert kinds == {"conv", "separable", "mbconv"}


def test_same_padding_on_a_strided_block_becomes_the_half_kernel(tmp_path):
    """PyTorch refuses padding="same" with a stride: such a block pads k // 2 * dilation,
    which keeps "same"'s output side for odd kernels; an unstrided one keeps "same"."""
    space = load_space(write(tmp_path, """
        [[stages]]
        out_channels = 8
        kernel_size = [3, 5]
        dilation = [1, 2]
        stride = [1, 2]
        padding = ["same", "half"]
    """))
    seen = set()
    for p, spec in sampled(space, 40, input=(1, 32, 32)):
        block = spec.blocks[0]
        strided = block.stride != 1
        seen.add((p["s0_padding"], strided))
        half = block.kernel_size // 2 * block.dilation
        assert block.padding == ("same" if p["s0_padding"] == "same" and not strided else half)
        check(spec)
    assert seen == {("same", True), ("same", False), ("half", True), ("half", False)}


def test_a_block_that_does_not_pool_suggests_no_pool_size(tmp_path):
    from cnnsearch.spec import BlockSpec

    space = load_space(write(tmp_path, """
        depth = 1
        [block]
        out_channels = 4
        kernel_size = 3
        padding = 1
        pool = ["max", "none"]
        pool_size = [2, 3]
    """))
    pools = set()
    for p, spec in sampled(space, 20, input=(1, 12, 12)):
        block = spec.blocks[0]
        pools.add(block.pool)
        assert ("b0_pool_size" in p) == (block.pool != "none")
        if block.pool == "none":
            assert block.pool_size == BlockSpec.pool_size
    assert pools == {"max", "none"}


def test_a_stage_pools_after_its_last_block_with_its_own_pool_size(tmp_path):
    space = load_space(write(tmp_path, """
        [[stages]]
        repeats = 2
        out_channels = 4
        kernel_size = 3
        padding = 1
        pool = ["max", "none"]
        pool_size = [2, 3]
    """))
    sizes = set()
    for p, spec in sampled(space, 20, input=(1, 12, 12)):
        first, last = spec.blocks
        assert first.pool == "none" and last.pool == p["s0_pool"]
        assert ("s0_pool_size" in p) == (p["s0_pool"] != "none")
        if "s0_pool_size" in p:
            sizes.add(last.pool_size)
            assert last.pool_size == p["s0_pool_size"]
    assert sizes == {2, 3}

def test_mobile_space_has_a_handful_of_parameters_for_ten_blocks():
    space = load_space(MOBILE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    for _ in range(30):
        trial = study.ask()
        spec = space.sample(trial, input=(3, 224, 224), num_classes=10)
        study.tell(trial, 0.0)
        arch = [k for k in trial.params if k == "width" or k[0] == "s" and k[1].isdigit()]
        if len(spec.blocks) >= 10:
            assert len(arch) <= 26, arch  # not 10 x 8
            return
    raise AssertionError("no 10-block sample in 30")


def test_mobile_space_at_large_inputs_is_valid_and_exact():
    """28x28 to 224x224: every sample checks, and matches torch; at 224x224 the strides
    take the map down 32x as MobileNets do, when the sampler picks them all."""
    space = load_space(MOBILE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=11))
    sizes = [(1, 28, 28), (3, 96, 96), (3, 128, 128), (3, 224, 224)]
    chains = set()
    for i in range(40):
        trial = study.ask()
        spec = space.sample(trial, input=sizes[i % 4], num_classes=10)
        study.tell(trial, 0.0)
        table = check(spec)  # never a ShapeError
        if spec.input[1] == 224:
            chains.add(table.spatial_chain.split("->")[-2])
        if i % 4 != 3 or i < 12:  # torch at 224x224 for a few only: it takes ~0.1 s each
            assert_table_matches_torch(spec)
    assert "7" in chains, chains  # 224 / 32


def test_a_staged_sample_that_cannot_run_is_a_shape_error_not_a_crash(tmp_path):
    space = load_space(write(tmp_path, STAGED.replace('padding = "half"\n    pool', 'padding = 0\n    pool')))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    errors = 0
    for _ in range(40):
        trial = study.ask()
        spec = space.sample(trial, input=(1, 8, 8), num_classes=3)
        study.tell(trial, 0.0)
        try:
            assert_table_matches_torch(spec)
        except ShapeError as exc:
            assert str(exc).startswith("blocks[")
            errors += 1
    assert errors


def test_a_stage_pool_is_offered_only_if_the_map_after_all_repeats_allows_it(tmp_path):
    """kernel 5 without padding, 3 repeats, 16x16 input: 12 after the first block, 4 after
    the third; a 2x2 pool would leave 2 < min_side 4, so no stage may pool."""
    path = write(tmp_path, """
        min_side = 4
        [[stages]]
        repeats = 3
        out_channels = 8
        kernel_size = 5
        pool = ["max", "none"]
    """)
    space = load_space(path)
    for n in range(20):
        spec = space.sample(optuna.trial.FixedTrial({"s0_pool": "max"}, number=n), input=(1, 16, 16), num_classes=3)
        assert [b.pool for b in spec.blocks] == ["none"] * 3
        assert check(spec).rows[-1].shape  # and it builds its table without a ShapeError


def test_a_stage_without_blocks_leaves_the_next_stages_in(tmp_path):
    space = load_space(write(tmp_path, """
        [[stages]]
        repeats = {low = 0, high = 1}
        out_channels = 8
        kernel_size = 3
        padding = 1
        [[stages]]
        out_channels = 16
        kernel_size = 3
        padding = 1
    """))
    spec = space.sample(optuna.trial.FixedTrial({"s0_repeats": 0}), input=(1, 8, 8), num_classes=3)
    assert [b.out_channels for b in spec.blocks] == [16]


@pytest.mark.parametrize("input", [(1, 16, 16), (1, 16, 40), (1, 40, 16)])
@pytest.mark.parametrize("min_side, pooled", [(4, "max"), (5, "none")])
def test_repeats_shrink_the_map_by_their_dilated_kernel(tmp_path, min_side, pooled, input):
    """kernel 3, dilation 2, no padding: 16 -> 12 -> 8 after two blocks; a 2x2 pool leaves 4,
    so it is offered at min_side 4 and not at 5 (a repeat counted without its dilation would
    leave 10 -> 5 and offer it). On a non-square map the smaller side decides, whichever it is."""
    space = load_space(write(tmp_path, f"""
        min_side = {min_side}
        [[stages]]
        repeats = 2
        out_channels = 8
        kernel_size = 3
        dilation = 2
        pool = ["max", "none"]
    """))
    spec = space.sample(optuna.trial.FixedTrial({"s0_pool": "max"}), input=input, num_classes=3)
    assert [b.pool for b in spec.blocks] == ["none", pooled]
    assert check(spec).rows[-1].shape
