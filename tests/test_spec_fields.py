"""ArchSpec fields one by one: PyTorch's defaults, every bound at its edge, kind-owned
fields, and errors that name the field path and echo the bad value (shortened when long)."""

import json

import pytest

from cnnsearch import ArchSpec, SpecError
from cnnsearch.spec import BlockSpec, HeadSpec

BLOCK = {"out_channels": 8, "kernel_size": 3}


def arch(*blocks, head=None, input=(3, 32, 32), num_classes=10):
    data = {"input": list(input), "num_classes": num_classes, "blocks": list(blocks)}
    if head is not None:
        data["head"] = head
    return data


def error(data) -> SpecError:
    with pytest.raises(SpecError) as info:
        ArchSpec.from_dict(data)
    return info.value


# ------------------------------------------------------------------ defaults


def test_block_defaults_are_pytorchs():
    """Only out_channels and kernel_size given: nn.Conv2d's stride 1, padding 0, groups 1,
    dilation 1, a plain conv with ReLU and nothing else, nn.MaxPool2d-like size 2."""
    block = ArchSpec.from_dict(arch(BLOCK)).blocks[0]
    assert block == BlockSpec(out_channels=8, kernel_size=3, stride=1, padding=0, activation="relu",
                              norm="none", pool="none", pool_size=2, dropout=0.0, residual=False,
                              kind="conv", groups=1, dilation=1, expansion=1, se=False)
    assert isinstance(block.dropout, float)
    for name, value in {"stride": 1, "padding": 0, "pool_size": 2, "groups": 1, "dilation": 1,
                        "expansion": 1}.items():
        assert type(getattr(block, name)) is int and getattr(block, name) == value, name
    assert block.residual is False and block.se is False


def test_spec_without_blocks_or_head_is_a_linear_classifier():
    spec = ArchSpec.from_dict({"input": [1, 8, 8], "num_classes": 2})
    assert spec.blocks == () and spec.head == HeadSpec("flatten", (), "relu", 0.0)
    assert spec.input == (1, 8, 8) and spec.num_classes == 2
    assert spec.summary == "linear"


def test_head_defaults():
    head = ArchSpec.from_dict(arch(BLOCK, head={})).head
    assert (head.pool, head.hidden, head.activation, head.dropout) == ("flatten", (), "relu", 0.0)
    head = ArchSpec.from_dict(arch(BLOCK, head={"hidden": [5, 7]})).head
    assert head.hidden == (5, 7) and isinstance(head.hidden, tuple)


def test_mbconv_always_has_batch_norm():
    for given in ({}, {"norm": "batch"}):
        block = ArchSpec.from_dict(arch({**BLOCK, "kind": "mbconv", **given})).blocks[0]
        assert block.norm == "batch" and block.kind == "mbconv"


@pytest.mark.parametrize("kind", ["conv", "separable", "mbconv"])
def test_kind_keeps_its_own_fields(kind):
    own = {"conv": {"groups": 2, "dilation": 2, "norm": "batch", "residual": True, "padding": 1},
           "separable": {"dilation": 3, "norm": "batch", "residual": True, "padding": "same"},
           "mbconv": {"dilation": 2, "expansion": 6, "se": True}}[kind]
    block = ArchSpec.from_dict(arch({**BLOCK, "kind": kind, **own})).blocks[0]
    assert block.kind == kind
    for name, value in own.items():
        assert getattr(block, name) == value, name


@pytest.mark.parametrize("field, value", [
    ("stride", 2), ("activation", "gelu"), ("activation", "none"), ("norm", "batch"), ("pool", "max"),
    ("pool", "avg"), ("pool_size", 3), ("dropout", 0.5), ("residual", True), ("padding", "same"),
    ("padding", 2), ("groups", 4), ("dilation", 2),
])
def test_each_block_field_is_read(field, value):
    block = ArchSpec.from_dict(arch({**BLOCK, field: value})).blocks[0]
    assert getattr(block, field) == value


@pytest.mark.parametrize("field, value", [
    ("pool", "avg"), ("pool", "max"), ("activation", "tanh"), ("activation", "none"), ("dropout", 0.25),
])
def test_each_head_field_is_read(field, value):
    head = ArchSpec.from_dict(arch(BLOCK, head={"hidden": [16], field: value})).head
    assert getattr(head, field) == value


def test_dropout_integer_zero_becomes_float():
    block = ArchSpec.from_dict(arch({**BLOCK, "dropout": 0})).blocks[0]
    assert block.dropout == 0.0 and type(block.dropout) is float
    head = ArchSpec.from_dict(arch(BLOCK, head={"dropout": 0})).head
    assert type(head.dropout) is float


# ------------------------------------------------------------------ bounds at their edges

INT_BOUNDS = [  # (path, lowest, highest, build a spec from a value)
    ("blocks[0].out_channels", 1, 8192, lambda v: arch({**BLOCK, "out_channels": v})),
    ("blocks[0].kernel_size", 1, 31, lambda v: arch({**BLOCK, "kernel_size": v})),
    ("blocks[0].stride", 1, 8, lambda v: arch({**BLOCK, "stride": v})),
    ("blocks[0].padding", 0, 31, lambda v: arch({**BLOCK, "padding": v})),
    ("blocks[0].pool_size", 1, 8, lambda v: arch({**BLOCK, "pool_size": v})),
    ("blocks[0].groups", 1, 8192, lambda v: arch({**BLOCK, "groups": v})),
    ("blocks[0].dilation", 1, 8, lambda v: arch({**BLOCK, "dilation": v})),
    ("blocks[0].expansion", 1, 16, lambda v: arch({**BLOCK, "kind": "mbconv", "expansion": v})),
    ("input[0]", 1, 64, lambda v: arch(input=(v, 8, 8))),
    ("input[1]", 1, 4096, lambda v: arch(input=(1, v, 8))),
    ("input[2]", 1, 4096, lambda v: arch(input=(1, 8, v))),
    ("num_classes", 2, 100_000, lambda v: arch(num_classes=v)),
    ("head.hidden[0]", 1, 65_536, lambda v: arch(head={"hidden": [v]})),
    ("head.hidden[1]", 1, 65_536, lambda v: arch(head={"hidden": [4, v]})),
]


@pytest.mark.parametrize("path, lo, hi, make", INT_BOUNDS, ids=[b[0] for b in INT_BOUNDS])
def test_integer_fields_accept_their_bounds_and_reject_beyond(path, lo, hi, make):
    for good in (lo, hi):
        ArchSpec.from_dict(make(good))
    for bad in (lo - 1, hi + 1):
        exc = error(make(bad))
        assert exc.path == path
        assert str(exc) == f"{path}: {bad} is out of range [{lo}, {hi}]"
    for bad in (True, 2.0, None, *(() if path.endswith("padding") else ("3",))):  # a padding word: below
        exc = error(make(bad))
        assert exc.path == path and str(exc) == f"{path}: expected an integer, got {bad!r}"


@pytest.mark.parametrize("path, make", [
    ("blocks[0].dropout", lambda v: arch({**BLOCK, "dropout": v})),
    ("head.dropout", lambda v: arch(head={"dropout": v})),
])
def test_dropout_bounds(path, make):
    for good in (0.0, 0, 0.999):
        ArchSpec.from_dict(make(good))
    for bad in (1.0, 1, -0.1, float("inf"), float("nan")):
        exc = error(make(bad))
        assert exc.path == path and str(exc) == f"{path}: {bad!r} is out of range [0, 1)"
    for bad in (True, "0.1", None):
        exc = error(make(bad))
        assert exc.path == path and str(exc) == f"{path}: expected a number, got {bad!r}"


@pytest.mark.parametrize("field", ["residual", "se"])
def test_flags_take_only_booleans(field):
    extra = {"kind": "mbconv"} if field == "se" else {}
    for bad in (1, 0, "true", None):
        exc = error(arch({**BLOCK, **extra, field: bad}))
        assert exc.path == f"blocks[0].{field}"
        assert str(exc) == f"blocks[0].{field}: expected true or false, got {bad!r}"


@pytest.mark.parametrize("path, make, choices", [
    ("blocks[0].activation", lambda v: arch({**BLOCK, "activation": v}), None),
    ("blocks[0].norm", lambda v: arch({**BLOCK, "norm": v}), "none, batch"),
    ("blocks[0].pool", lambda v: arch({**BLOCK, "pool": v}), "none, max, avg"),
    ("blocks[0].kind", lambda v: arch({**BLOCK, "kind": v}), "conv, separable, mbconv"),
    ("blocks[0].padding", lambda v: arch({**BLOCK, "padding": v}), "same"),
    ("blocks[0].norm", lambda v: arch({**BLOCK, "kind": "mbconv", "norm": v}), "none, batch"),
    ("head.pool", lambda v: arch(head={"pool": v}), "flatten, avg, max"),
    ("head.activation", lambda v: arch(head={"activation": v}), None),
])
def test_word_fields_name_their_choices(path, make, choices):
    exc = error(make("bogus"))
    assert exc.path == path
    assert str(exc).startswith(f"{path}: 'bogus' is not one of ")
    if choices:
        assert str(exc) == f"{path}: 'bogus' is not one of {choices}"
    else:  # activations: every one the builder knows, and "none"
        assert "relu" in str(exc) and str(exc).endswith(", none")
    if "padding" not in path:  # a number where a word belongs
        exc = error(make(3))
        assert exc.path == path and str(exc).startswith(f"{path}: 3 is not one of")


def test_every_activation_name_is_accepted():
    from cnnsearch.ops import ACTIVATIONS

    for name in (*ACTIVATIONS, "none"):
        assert ArchSpec.from_dict(arch({**BLOCK, "activation": name})).blocks[0].activation == name
        assert ArchSpec.from_dict(arch(head={"activation": name})).head.activation == name


def test_block_and_head_counts_are_bounded():
    ArchSpec.from_dict(arch(*[{"out_channels": 1, "kernel_size": 1}] * 64, input=(1, 1, 1)))
    exc = error(arch(*[{"out_channels": 1, "kernel_size": 1}] * 65))
    assert exc.path == "blocks" and "65" in str(exc) and "64" in str(exc)
    ArchSpec.from_dict(arch(head={"hidden": [1] * 64}))
    exc = error(arch(head={"hidden": [1] * 65}))
    assert exc.path == "head.hidden" and "65" in str(exc) and "64" in str(exc)


def test_blocks_and_hidden_may_be_tuples():
    spec = ArchSpec.from_dict({"input": (1, 8, 8), "num_classes": 2, "blocks": (BLOCK,),
                               "head": {"hidden": (4,)}})
    assert spec.input == (1, 8, 8) and len(spec.blocks) == 1 and spec.head.hidden == (4,)


@pytest.mark.parametrize("shape", [[1, 8], [1, 8, 8, 8], "1,8,8", 8, None])
def test_input_must_be_three_numbers(shape):
    exc = error({"input": shape, "num_classes": 2})
    assert exc.path == "input" and str(exc) == f"input: expected [C, H, W], got {shape!r}"


# ------------------------------------------------------------------ structure errors


@pytest.mark.parametrize("data, path", [
    ({"num_classes": 2}, "input"),
    ({"input": [1, 8, 8]}, "num_classes"),
    (arch({"kernel_size": 3}), "blocks[0].out_channels"),
    (arch({"out_channels": 3}), "blocks[0].kernel_size"),
    (arch(BLOCK, {"out_channels": 3}), "blocks[1].kernel_size"),
])
def test_missing_required_field_is_named(data, path):
    exc = error(data)
    assert exc.path == path and str(exc) == f"{path}: missing (required)"


TOP = {"input", "num_classes", "blocks", "head"}


@pytest.mark.parametrize("data, path, keys", [
    ({"input": [1, 8, 8], "num_classes": 2, "colour": 1}, "colour", TOP),
    (arch({**BLOCK, "colour": 1}), "blocks[0].colour", set(BlockSpec.__dataclass_fields__)),
    (arch(BLOCK, {**BLOCK, "colour": 1}), "blocks[1].colour", set(BlockSpec.__dataclass_fields__)),
    (arch(head={"colour": 1}), "head.colour", set(HeadSpec.__dataclass_fields__)),
    (arch(head={"pool": "avg", "width": 1}), "head.width", set(HeadSpec.__dataclass_fields__)),
])
def test_unknown_key_is_named_with_the_allowed_ones(data, path, keys):
    exc = error(data)
    assert exc.path == path and str(exc).startswith(f"{path}: unknown key (allowed: ")
    assert set(str(exc).split("(allowed: ")[1].rstrip(")").split(", ")) == keys


def test_only_the_first_unknown_key_is_named():
    exc = error({"input": [1, 8, 8], "num_classes": 2, "zeta": 1, "alpha": 2})
    assert exc.path == "zeta"
    exc = error(arch({**BLOCK, "zeta": 1, "alpha": 2}))
    assert exc.path == "blocks[0].zeta"


@pytest.mark.parametrize("data, path", [
    ("spec", "spec"), (None, "spec"),
    (arch("block"), "blocks[0]"), (arch(BLOCK, [1]), "blocks[1]"),
    (arch(head=[64]), "head"),
])
def test_a_table_that_is_not_a_table(data, path):
    exc = error(data)
    bad = data if path == "spec" else (data["blocks"][-1] if path.startswith("blocks") else data["head"])
    assert exc.path == path and str(exc) == f"{path}: expected an object, got {bad!r}"


def test_blocks_must_be_a_list_and_hidden_a_list():
    exc = error({"input": [1, 8, 8], "num_classes": 2, "blocks": "conv"})
    assert exc.path == "blocks" and "'conv'" in str(exc)
    exc = error(arch(head={"hidden": 64}))
    assert exc.path == "head.hidden" and "64" in str(exc)


# ------------------------------------------------------------------ fields of another kind


@pytest.mark.parametrize("kind, field, value, users", [
    ("conv", "se", True, "mbconv"),
    ("conv", "se", 0, "mbconv"),  # 0 == False, but not a boolean
    ("conv", "expansion", 6, "mbconv"),
    ("conv", "expansion", 1.0, "mbconv"),
    ("separable", "groups", 2, "conv"),
    ("separable", "expansion", 4, "mbconv"),
    ("mbconv", "padding", 1, "conv and separable"),
    ("mbconv", "padding", 0.0, "conv and separable"),
    ("mbconv", "residual", True, "conv and separable"),
    ("mbconv", "groups", 2, "conv"),
])
def test_field_of_another_kind_is_refused(kind, field, value, users):
    exc = error(arch({**BLOCK, "kind": kind, field: value}))
    assert exc.path == f"blocks[0].{field}"
    default = BlockSpec.__dataclass_fields__[field].default
    assert str(exc) == (f"blocks[0].{field}: {value!r}: applies to kind {users}, not {kind} "
                        f"(leave it out or at {default!r})")


@pytest.mark.parametrize("kind, field, value", [
    ("conv", "se", False), ("conv", "expansion", 1), ("separable", "groups", 1),
    ("mbconv", "padding", 0), ("mbconv", "residual", False), ("mbconv", "groups", 1),
])
def test_field_of_another_kind_at_its_default_is_fine(kind, field, value):
    block = ArchSpec.from_dict(arch({**BLOCK, "kind": kind, field: value})).blocks[0]
    assert getattr(block, field) == value and block.kind == kind


def test_mbconv_refuses_no_norm():
    exc = error(arch({**BLOCK, "kind": "mbconv", "norm": "none"}))
    assert exc.path == "blocks[0].norm" and "batch" in exc.message


def test_kind_is_checked_before_its_fields():
    exc = error(arch({**BLOCK, "kind": "dense", "se": True}))
    assert exc.path == "blocks[0].kind" and "'dense'" in str(exc)


# ------------------------------------------------------------------ long values are shortened


def test_bad_value_is_echoed_whole_up_to_40_characters():
    for length in (38, 37):  # repr adds two quotes: 40 and 39 characters
        word = "x" * length
        exc = error(arch({**BLOCK, "activation": word}))
        assert str(exc).startswith(f"blocks[0].activation: {word!r} is not one of ")


@pytest.mark.parametrize("length", [39, 200])
def test_longer_bad_value_is_shortened_to_40_characters(length):
    word = "y" * length
    exc = error(arch({**BLOCK, "activation": word}))
    shown = exc.message.split(" is not one of ")[0]
    assert len(shown) == 40 and shown.endswith("...") and shown[:-3] == repr(word)[:37]
    assert repr(word) not in str(exc)


# ------------------------------------------------------------------ files and round trips


def test_from_json_reads_a_file(tmp_path):
    path = tmp_path / "net.json"
    data = arch({**BLOCK, "pool": "max"}, head={"hidden": [16]}, input=(1, 16, 16), num_classes=4)
    path.write_text(json.dumps(data))
    spec = ArchSpec.from_json(path)
    assert spec == ArchSpec.from_dict(data) and spec.head.hidden == (16,)
    assert ArchSpec.from_json(str(path)) == spec


def test_from_json_missing_file_names_the_file(tmp_path):
    path = tmp_path / "absent.json"
    with pytest.raises(SpecError) as info:
        ArchSpec.from_json(path)
    assert info.value.path == path and str(info.value).startswith(f"{path}: cannot read (")
    assert "No such file" in info.value.message


def test_from_json_bad_json_names_the_file_and_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "input": [1, 8, 8],\n  "num_classes": 2,,\n}\n')
    with pytest.raises(SpecError) as info:
        ArchSpec.from_json(path)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: not valid JSON (") and "line 3" in info.value.message


def test_from_json_bad_spec_names_the_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(arch({**BLOCK, "stride": 0})))
    with pytest.raises(SpecError) as info:
        ArchSpec.from_json(path)
    assert info.value.path == "blocks[0].stride"


SPECS = [
    arch(BLOCK),
    arch({**BLOCK, "kind": "mbconv", "expansion": 6, "se": True, "dilation": 2, "pool": "avg", "pool_size": 3},
         {"out_channels": 16, "kernel_size": 5, "kind": "separable", "padding": "same", "norm": "batch",
          "residual": True, "dropout": 0.25, "activation": "hardswish"},
         {"out_channels": 16, "kernel_size": 1, "groups": 4, "stride": 2, "activation": "none"},
         head={"pool": "avg", "hidden": [32, 8], "activation": "gelu", "dropout": 0.5}),
    {"input": [1, 4, 4], "num_classes": 2},
]


@pytest.mark.parametrize("data", SPECS)
def test_to_dict_to_json_round_trip(data, tmp_path):
    spec = ArchSpec.from_dict(data)
    plain = spec.to_dict()
    assert ArchSpec.from_dict(plain) == spec
    assert set(plain) == {"input", "num_classes", "blocks", "head"}
    assert all(set(b) == set(BlockSpec.__dataclass_fields__) for b in plain["blocks"])
    assert isinstance(plain["input"], list) and isinstance(plain["head"]["hidden"], list)
    text = spec.to_json()
    assert json.loads(text) == plain
    path = tmp_path / "spec.json"
    path.write_text(text)
    assert ArchSpec.from_json(path) == spec and ArchSpec.from_json(path).digest == spec.digest


def test_to_json_is_a_readable_file():
    """One key per line, indented by two spaces per level, ending in a newline."""
    text = ArchSpec.from_dict(SPECS[1]).to_json()
    assert text.endswith("}\n") and not text.endswith("\n\n")
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    top = [line for line in lines if line.startswith('  "')]
    assert [line.split('"')[1] for line in top] == ["input", "num_classes", "blocks", "head"]
    assert any(line.startswith('      "out_channels": ') for line in lines)  # blocks[i] fields: 3 levels in


def test_every_head_row_names_the_spec_field_it_comes_from():
    from cnnsearch import check

    spec = ArchSpec.from_dict({"input": [1, 8, 8], "num_classes": 3, "blocks": [{"out_channels": 4, "kernel_size": 3}],
                               "head": {"pool": "avg", "hidden": [16], "dropout": 0.2}})
    assert [(r.name, r.where) for r in check(spec).rows] == [
        ("conv1", "blocks[0].conv"), ("act1", "blocks[0].activation"), ("global_pool", "head.pool"),
        ("flatten", "head.pool"), ("fc1", "head.hidden[0]"), ("act_fc1", "head.activation"),
        ("drop_fc1", "head.dropout"), ("fc2", "num_classes")]
