"""Bad specs fail with an error that names the field or the layer; nothing is evaluated."""

import json

import pytest

from cnnsearch import ArchSpec, ShapeError, SpecError, build, check
from tests.conftest import run_cli


def spec(**block):
    return {"input": [3, 32, 32], "num_classes": 10, "blocks": [{"out_channels": 8, "kernel_size": 3, **block}]}


@pytest.mark.parametrize("data, message", [
    ({"input": [3, 32, 32], "num_classes": 10, "colour": 1}, "colour: unknown key"),
    ({"input": [3, 32], "num_classes": 10}, "input: expected [C, H, W]"),
    ({"num_classes": 10}, "input: missing"),
    ({"input": [3, 32, 32], "num_classes": 1}, "num_classes: 1 is out of range [2, 100000]"),
    ({"input": [3, 32, 32], "num_classes": True}, "num_classes: expected an integer, got True"),
    (spec(kernel_size="3"), "blocks[0].kernel_size: expected an integer, got '3'"),
    (spec(kernel_size=3.0), "blocks[0].kernel_size: expected an integer, got 3.0"),
    (spec(out_channels=0), "blocks[0].out_channels: 0 is out of range"),
    (spec(out_channels=10**12), "blocks[0].out_channels: 1000000000000 is out of range"),
    (spec(activation="foo"), "blocks[0].activation: 'foo' is not one of relu,"),
    (spec(norm="layer"), "blocks[0].norm: 'layer' is not one of none, batch"),
    (spec(pool="median"), "blocks[0].pool: 'median' is not one of none, max, avg"),
    (spec(padding="valid"), "blocks[0].padding: 'valid' is not one of same"),
    (spec(dropout=1.0), "blocks[0].dropout: 1.0 is out of range [0, 1)"),
    (spec(dropout=float("nan")), "blocks[0].dropout: nan is out of range"),
    (spec(residual="yes"), "blocks[0].residual: expected true or false"),
    (spec(colour=2), "blocks[0].colour: unknown key"),
    (spec(kind="inverted"), "blocks[0].kind: 'inverted' is not one of conv, separable, mbconv"),
    (spec(groups=0), "blocks[0].groups: 0 is out of range [1, 8192]"),
    (spec(dilation=9), "blocks[0].dilation: 9 is out of range [1, 8]"),
    (spec(kind="mbconv", expansion=0), "blocks[0].expansion: 0 is out of range [1, 16]"),
    (spec(kind="mbconv", se="yes"), "blocks[0].se: expected true or false"),
    (spec(se=True), "blocks[0].se: True: applies to kind mbconv, not conv"),
    (spec(expansion=6), "blocks[0].expansion: 6: applies to kind mbconv, not conv"),
    (spec(kind="separable", groups=2), "blocks[0].groups: 2: applies to kind conv, not separable"),
    (spec(kind="mbconv", padding=1), "blocks[0].padding: 1: applies to kind conv and separable, not mbconv"),
    (spec(kind="mbconv", residual=True), "blocks[0].residual: True: applies to kind conv and separable"),
    (spec(kind="mbconv", norm="none"), "blocks[0].norm: an mbconv block always has batch norm"),
    ({**spec(), "head": {"hidden": [64, "128"]}}, "head.hidden[1]: expected an integer"),
    ({**spec(), "head": {"pool": "attention"}}, "head.pool: 'attention' is not one of flatten, avg, max"),
    ({**spec(), "head": {"hidden": 64}}, "head.hidden: expected a list"),
    ({**spec(), "blocks": {"0": {}}}, "blocks: expected a list"),
    ([1, 2], "spec: expected an object"),
])
def test_bad_spec_names_the_field(data, message):
    with pytest.raises(SpecError) as info:
        ArchSpec.from_dict(data)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize("data, message", [
    ({"input": [3, 4, 4], "num_classes": 2, "blocks": [{"out_channels": 8, "kernel_size": 5}]},
     "blocks[0].conv: kernel 5 is larger than its 4x4 input (after input)"),
    ({"input": [1, 8, 8], "num_classes": 2, "blocks": [
        {"out_channels": 8, "kernel_size": 3, "pool": "max"},
        {"out_channels": 8, "kernel_size": 5}]},
     "blocks[1].conv: kernel 5 is larger than its 3x3 input (after blocks[0].pool)"),
    ({"input": [1, 2, 2], "num_classes": 2, "blocks": [{"out_channels": 8, "kernel_size": 5, "padding": 1}]},
     "blocks[0].conv: kernel 5 is larger than its 2x2 input padded by 1 to 4x4"),
    ({"input": [1, 8, 8], "num_classes": 2, "blocks": [
        {"out_channels": 8, "kernel_size": 3, "padding": "same", "stride": 2}]},
     'blocks[0].conv: padding "same" needs stride 1, got stride 2'),
    ({"input": [1, 5, 5], "num_classes": 2, "blocks": [
        {"out_channels": 8, "kernel_size": 3, "pool": "max", "pool_size": 4}]},
     "blocks[0].pool: pool 4 shrinks its 3x3 input to zero (after blocks[0].conv)"),
    ({"input": [1, 8, 8], "num_classes": 2, "blocks": [
        {"out_channels": 8, "kernel_size": 3, "residual": True}]},
     "blocks[0].residual: the conv maps 8x8 to 6x6"),
    ({"input": [16, 8, 8], "num_classes": 2, "blocks": [{"out_channels": 8, "kernel_size": 3, "groups": 3}]},
     "blocks[0].groups: 3 does not divide in_channels 16"),
    ({"input": [3, 8, 8], "num_classes": 2, "blocks": [{"out_channels": 6, "kernel_size": 3, "groups": 3},
                                                        {"out_channels": 8, "kernel_size": 1, "groups": 3}]},
     "blocks[1].groups: 3 does not divide out_channels 8"),
    ({"input": [1, 8, 8], "num_classes": 2, "blocks": [{"out_channels": 8, "kernel_size": 5, "dilation": 2}]},
     "blocks[0].conv: kernel 5 at dilation 2 (spanning 9) is larger than its 8x8 input (after input)"),
    ({"input": [1, 8, 8], "num_classes": 2, "blocks": [
        {"kind": "separable", "out_channels": 8, "kernel_size": 3, "dilation": 2, "padding": "same", "stride": 2}]},
     'blocks[0].conv: padding "same" needs stride 1, got stride 2'),
    ({"input": [4, 8, 8], "num_classes": 2, "blocks": [
        {"kind": "mbconv", "out_channels": 8, "kernel_size": 3, "dilation": 2, "stride": 2}]},
     "blocks[0].dilation: an mbconv block with dilation 2 needs stride 1"),
    ({"input": [8, 8, 8], "num_classes": 2, "blocks": [{"kind": "mbconv", "out_channels": 8, "kernel_size": 4}]},
     "blocks[0].kernel_size: an mbconv block adds its input back (stride 1, 8 channels in and out), but the "
     "even kernel 4 maps 8x8 to 7x7"),
])
def test_impossible_network_names_the_layer_and_numbers(data, message):
    bad = ArchSpec.from_dict(data)
    with pytest.raises(ShapeError) as info:
        check(bad)
    assert str(info.value).startswith(message), str(info.value)
    with pytest.raises(ShapeError):
        build(bad)  # the builder checks first: no tensor is ever made


def test_code_in_a_string_field_is_rejected_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    for field in ("activation", "norm", "pool", "padding"):
        with pytest.raises(SpecError, match=rf"blocks\[0\]\.{field}: "):
            ArchSpec.from_dict(spec(**{field: payload}))
    assert not marker.exists()


def test_round_trip_and_stable_digest(tutorial_cnn64):
    again = ArchSpec.from_dict(tutorial_cnn64.to_dict())
    assert again == tutorial_cnn64 and again.digest == tutorial_cnn64.digest
    assert json.loads(tutorial_cnn64.to_json()) == tutorial_cnn64.to_dict()
    assert tutorial_cnn64.to_dict()["blocks"][0]["padding"] == 0  # defaults made explicit
    wider = ArchSpec.from_dict({**tutorial_cnn64.to_dict(), "num_classes": 6})
    assert wider.digest != tutorial_cnn64.digest
    assert tutorial_cnn64.summary == "c10k5p-c20k5p-fc50"


def test_cli_show_bad_spec_is_one_error_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(spec(activation="foo")))
    result = run_cli("show", str(bad))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: blocks[0].activation: 'foo'"), result.stderr


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    (json.dumps({"input": [3, 4, 4], "num_classes": 2, "blocks": [{"out_channels": 1, "kernel_size": 7}]}),
     "blocks[0].conv: kernel 7 is larger"),
])
def test_cli_show_bad_files_exit_2(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = run_cli("show", str(bad))
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


@pytest.mark.slow
def test_cli_show_missing_file_and_bad_flags():
    for args in (["show", "nope.json"], ["show", "spaces/compact.toml", "--input", "3,x"], ["show"]):
        result = run_cli(*args)
        assert result.returncode == 2, args
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
