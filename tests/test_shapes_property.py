"""check() is exact: either ShapeError, or shapes, params and FLOPs equal torch's own count."""

import optuna
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cnnsearch import ArchSpec, ShapeError, check
from cnnsearch.space import load_space
from tests.conftest import SPACES
from tests.torch_reference import assert_table_matches_torch

optuna.logging.set_verbosity(optuna.logging.WARNING)

COMMON = {
    "stride": st.integers(1, 3),
    "activation": st.sampled_from(["relu", "gelu", "silu", "leaky_relu", "tanh", "hardswish", "none"]),
    "pool": st.sampled_from(["none", "max", "avg"]),
    "pool_size": st.integers(1, 4),
    "dropout": st.sampled_from([0.0, 0.25]),
}
PLAIN = {  # conv and separable
    "padding": st.one_of(st.integers(0, 3), st.just("same")),
    "norm": st.sampled_from(["none", "batch"]),
    "residual": st.booleans(),
    "dilation": st.integers(1, 3),
}
blocks = st.one_of(
    st.fixed_dictionaries({"out_channels": st.integers(1, 12), "kernel_size": st.integers(1, 7)},
                          optional={**COMMON, **PLAIN, "kind": st.just("conv"), "groups": st.integers(1, 4)}),
    st.fixed_dictionaries({"kind": st.just("separable"), "out_channels": st.integers(1, 12),
                           "kernel_size": st.integers(1, 7)}, optional={**COMMON, **PLAIN}),
    st.fixed_dictionaries({"kind": st.just("mbconv"), "out_channels": st.integers(1, 12),
                           "kernel_size": st.integers(1, 7)},
                          optional={**COMMON, "expansion": st.integers(1, 6), "se": st.booleans(),
                                    "dilation": st.integers(1, 3), "norm": st.just("batch")}),
)
specs = st.fixed_dictionaries({
    "input": st.tuples(st.integers(1, 4), st.integers(1, 40), st.integers(1, 40)).map(list),
    "num_classes": st.integers(2, 12),
    "blocks": st.lists(blocks, max_size=4),
    "head": st.fixed_dictionaries({}, optional={
        "pool": st.sampled_from(["flatten", "avg", "max"]),
        "hidden": st.lists(st.integers(1, 40), max_size=2),
        "activation": st.sampled_from(["relu", "gelu", "none"]),
        "dropout": st.sampled_from([0.0, 0.5]),
    }),
})


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(specs)
def test_any_spec_is_rejected_or_exact(data):
    spec = ArchSpec.from_dict(data)
    try:
        check(spec)
    except ShapeError as exc:
        assert str(exc).startswith(("blocks[", "head")), exc
        event("ShapeError")
        return
    event("exact: " + "+".join(sorted({b.kind for b in spec.blocks})) if spec.blocks else "exact: no block")
    assert_table_matches_torch(spec)


INPUTS = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)]


@pytest.mark.parametrize("space_path", SPACES, ids=lambda p: p.stem)
def test_500_seeded_samples_of_each_space_are_rejected_or_exact(space_path):
    space = load_space(space_path)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1234))
    valid = 0
    for i in range(500):
        trial = study.ask()
        spec = space.sample(trial, input=INPUTS[i % len(INPUTS)], num_classes=2 + i % 9)
        study.tell(trial, 0.0)
        try:
            check(spec)
        except ShapeError:
            continue
        assert_table_matches_torch(spec)
        valid += 1
    assert valid >= 250, f"only {valid}/500 samples of {space_path.name} were valid"
