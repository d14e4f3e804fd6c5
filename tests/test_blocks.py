"""Block kinds against networks built by torch and torchvision themselves.

Every kind's shape table (shapes, params, FLOPs) must equal what torch measures on the
built model and on an independently built reference: ``nn.Conv2d`` for ``conv``, the
MobileNetV1 depthwise + pointwise ``nn.Sequential`` for ``separable``, and torchvision's
own ``InvertedResidual`` for ``mbconv``.

State-dict layout: a cnnsearch network names every submodule after its shape-table row
(``dw3``, ``se_reduce3``, ``project_bn3``: one flat list that the builder, the exporter
and the shape table share), while torchvision nests them (``block.1.0``, ``block.2.fc1``).
The tensors are the same ones, in the same order and shapes, so a strict load works after
renaming the keys one to one (``RENAME`` below), and then both compute the same outputs.
"""

from collections import OrderedDict

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig, _make_divisible
from torchvision.ops import SqueezeExcitation

from cnnsearch import ArchSpec, ShapeError, build, check
from cnnsearch.shapes import make_divisible
from tests.torch_reference import assert_table_matches_torch

ACT = {"relu": nn.ReLU, "hardswish": nn.Hardswish}


def flops(model, x):
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops()


def randomize_bn(*models):
    torch.manual_seed(1)
    for model in models:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.5, 0.5)


def compare(spec, reference, rename):
    """The spec's block (everything before the head) against ``reference``: params, FLOPs,
    strict load of the built weights under ``rename``, equal outputs."""
    table = assert_table_matches_torch(spec)
    model = build(spec).eval()
    reference.eval()
    randomize_bn(model)
    head = {r.name for r in table.rows if r.where.startswith(("head", "num_classes"))}
    block_rows = [r for r in table.rows if r.name not in head]
    assert sum(r.params for r in block_rows) == sum(p.numel() for p in reference.parameters())
    x = torch.randn(1, *spec.input)
    assert sum(r.flops for r in block_rows) == flops(reference, x)
    state = {}
    for key, value in model.state_dict().items():
        module, _, tensor = key.partition(".")
        if module not in head:
            state[f"{rename(module)}.{tensor}"] = value
    reference.load_state_dict(state, strict=True)
    features = {}  # the block's output: the input of the first head row
    handle = model._modules[table.rows[len(block_rows)].name].register_forward_hook(
        lambda _m, inp, _out: features.__setitem__("x", inp[0]))
    with torch.no_grad():
        model(x)
        expected = reference(x)
    handle.remove()
    assert block_rows[-1].shape == tuple(expected.shape[1:])
    assert torch.equal(features["x"], expected)


def head(spec_blocks, c, h, w, classes=3):
    return ArchSpec.from_dict({"input": [c, h, w], "num_classes": classes, "blocks": spec_blocks})


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 4), st.sampled_from([1, 2, 3, 4, 6]), st.integers(1, 5), st.integers(1, 3),
       st.integers(1, 2), st.sampled_from([0, 1, "same"]), st.integers(5, 16), st.booleans())
def test_conv_groups_and_dilation_match_nn_conv2d(groups, per_group, k, stride, dilation, padding, side, norm):
    c_in, c_out = groups * 2, groups * per_group
    block = {"out_channels": c_out, "kernel_size": k, "stride": stride, "padding": padding,
             "groups": groups, "dilation": dilation, "norm": "batch" if norm else "none"}
    spec = head([block], c_in, side, side)
    try:
        check(spec)
    except ShapeError:
        return
    reference = nn.Sequential(OrderedDict(
        conv=nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, groups=groups,
                       bias=not norm),
        **({"bn": nn.BatchNorm2d(c_out)} if norm else {}), act=nn.ReLU()))
    compare(spec, reference, {"conv1": "conv", "bn1": "bn"}.__getitem__)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from([1, 3, 5]), st.integers(1, 2),
       st.integers(1, 2), st.sampled_from(["relu", "hardswish"]), st.booleans(), st.integers(5, 16))
def test_separable_matches_depthwise_then_pointwise(c_in, c_out, k, stride, dilation, act, norm, side):
    padding = (k - 1) // 2 * dilation
    block = {"kind": "separable", "out_channels": c_out, "kernel_size": k, "stride": stride,
             "padding": padding, "dilation": dilation, "activation": act, "norm": "batch" if norm else "none"}
    spec = head([block], c_in, side, side)
    layers = [nn.Conv2d(c_in, c_in, k, stride, padding, dilation, groups=c_in, bias=not norm),
              nn.BatchNorm2d(c_in) if norm else None, ACT[act](),
              nn.Conv2d(c_in, c_out, 1, bias=not norm), nn.BatchNorm2d(c_out) if norm else None, ACT[act]()]
    reference = nn.Sequential(*[m for m in layers if m is not None])
    names = ["dw1", "dw_bn1", "dw_act1", "pw1", "bn1", "act1"]
    names = [n for n, m in zip(names, layers) if m is not None]
    compare(spec, reference, lambda module: str(names.index(module)))


def mbconv_reference(c_in, k, expansion, c_out, se, act, stride, dilation):
    cnf = InvertedResidualConfig(c_in, k, c_in * expansion, c_out, se, "HS" if act == "hardswish" else "RE",
                                 stride, dilation, 1.0)
    # InvertedResidualConfig rounds channels to multiples of 8 (adjust_channels); a cnnsearch
    # spec's numbers are literal, so for other widths the rounded fields are set back
    cnf.input_channels, cnf.expanded_channels, cnf.out_channels = c_in, c_in * expansion, c_out
    return InvertedResidual(cnf, nn.BatchNorm2d)


def mbconv_rename(expanded: bool, se: bool):
    """cnnsearch's flat row names -> torchvision's nested InvertedResidual keys."""
    j = 1 if expanded else 0
    names = {"dw": f"block.{j}.0", "dw_bn": f"block.{j}.1", "se_reduce": f"block.{j + 1}.fc1",
             "se_expand": f"block.{j + 1}.fc2", "project": f"block.{j + 1 + se}.0",
             "project_bn": f"block.{j + 1 + se}.1", "expand": "block.0.0", "expand_bn": "block.0.1"}
    return lambda module: names[module.rstrip("0123456789")]


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([8, 16, 24, 5, 12]), st.sampled_from([3, 5, 7]), st.sampled_from([1, 2, 3, 4, 6]),
       st.sampled_from([8, 16, 24, 5]), st.booleans(), st.sampled_from(["relu", "hardswish"]),
       st.sampled_from([(1, 1), (2, 1), (1, 2)]), st.integers(3, 17))
def test_mbconv_matches_torchvision_inverted_residual(c_in, k, expansion, c_out, se, act, stride_dilation, side):
    stride, dilation = stride_dilation
    block = {"kind": "mbconv", "out_channels": c_out, "kernel_size": k, "expansion": expansion, "se": se,
             "activation": act, "stride": stride, "dilation": dilation}
    spec = head([block], c_in, side, side)
    reference = mbconv_reference(c_in, k, expansion, c_out, se, act, stride, dilation)
    assert reference.use_res_connect == any(r.op == "add" for r in check(spec).rows)
    compare(spec, reference, mbconv_rename(expansion > 1, se))


def test_mbconv_is_torchvision_verbatim_at_multiples_of_8():
    """No field set back: InvertedResidualConfig as the issue writes it, MobileNetV3-Large's
    fifth block (24 -> 40, k5, expanded 72, SE, ReLU, stride 2)."""
    spec = head([{"kind": "mbconv", "out_channels": 40, "kernel_size": 5, "expansion": 3, "se": True,
                  "stride": 2}], 24, 28, 28)
    reference = InvertedResidual(InvertedResidualConfig(24, 5, 72, 40, True, "RE", 2, 1, 1.0), nn.BatchNorm2d)
    compare(spec, reference, mbconv_rename(True, True))
    squeeze = [r for r in check(spec).rows if r.name == "se_reduce1"][0]
    assert squeeze.shape[0] == _make_divisible(72 // 4, 8) == make_divisible(72 // 4) == 24


def test_squeeze_excitation_rows_are_torchvision_ops():
    se = SqueezeExcitation(96, make_divisible(96 // 4), scale_activation=nn.Hardsigmoid)
    spec = head([{"kind": "mbconv", "out_channels": 48, "kernel_size": 3, "expansion": 2, "se": True}], 48, 6, 6)
    rows = {r.name: r for r in check(spec).rows}
    assert rows["se_reduce1"].params + rows["se_expand1"].params == sum(p.numel() for p in se.parameters())
    assert rows["se_reduce1"].flops + rows["se_expand1"].flops == flops(se, torch.randn(1, 96, 6, 6))


@pytest.mark.parametrize("size", [
    {"input": [3, 224, 224], "num_classes": 1000}, {"input": [3, 28, 28], "num_classes": 10}])
def test_mobilenet_v3_large_stem_and_first_seven_blocks_match_torchvision(size):
    """MobileNetV3-Large's stem and first seven inverted residuals (16 -> 80 channels) as a
    spec: params and FLOPs equal torchvision's ``features[:8]`` at 224x224 and 28x28. (Its
    eighth block expands 80 to 200 channels, 2.5x: ``expansion`` is an integer, as MnasNet's
    and EfficientNet's are.)"""
    from torchvision.models import mobilenet_v3_large

    features = mobilenet_v3_large().features[:8].eval()
    blocks = [{"out_channels": 16, "kernel_size": 3, "stride": 2, "padding": 1, "norm": "batch",
               "activation": "hardswish"}]
    c = 16
    for m in features[1:]:
        cnf_layers = list(m.block)
        expanded = cnf_layers[0][0].out_channels
        dw = cnf_layers[1 if expanded != c else 0][0]
        se = any(isinstance(x, SqueezeExcitation) for x in cnf_layers)
        act = "hardswish" if isinstance(cnf_layers[1 if expanded != c else 0][2], nn.Hardswish) else "relu"
        out = cnf_layers[-1][0].out_channels
        blocks.append({"kind": "mbconv", "out_channels": out, "kernel_size": dw.kernel_size[0],
                       "expansion": expanded // c if expanded != c else 1, "se": se, "activation": act,
                       "stride": dw.stride[0]})
        assert expanded % c == 0
        c = out
    spec = ArchSpec.from_dict({**size, "blocks": blocks, "head": {"pool": "avg"}})
    table = check(spec)
    body = [r for r in table.rows if not r.where.startswith(("head", "num_classes"))]
    assert sum(r.params for r in body) == sum(p.numel() for p in features.parameters())
    assert sum(r.flops for r in body) == flops(features, torch.randn(1, *spec.input))


MOBILE_SPECS = [
    {"input": [3, 32, 32], "num_classes": 10, "head": {"pool": "avg"}, "blocks": [
        {"out_channels": 16, "kernel_size": 3, "stride": 2, "padding": 1, "norm": "batch", "activation": "hardswish"},
        {"kind": "separable", "out_channels": 16, "kernel_size": 3, "padding": 1, "norm": "batch", "residual": True},
        {"kind": "mbconv", "out_channels": 24, "kernel_size": 5, "expansion": 4, "se": True, "stride": 2,
         "activation": "hardswish"},
        {"kind": "mbconv", "out_channels": 24, "kernel_size": 3, "expansion": 3, "dilation": 2},
        {"kind": "mbconv", "out_channels": 24, "kernel_size": 3, "se": True, "pool": "max", "dropout": 0.1},
        {"out_channels": 32, "kernel_size": 3, "groups": 8, "dilation": 2, "padding": "same", "residual": True}]},
    {"input": [1, 28, 28], "num_classes": 3, "head": {"hidden": [16]}, "blocks": [
        {"kind": "separable", "out_channels": 8, "kernel_size": 5, "stride": 2, "dilation": 2, "padding": 4,
         "residual": True},
        {"kind": "mbconv", "out_channels": 8, "kernel_size": 7, "expansion": 6, "se": True, "activation": "silu"},
        {"out_channels": 12, "kernel_size": 3, "groups": 4, "stride": 2, "pool": "avg"}]},
]


def test_new_blocks_export_bit_identical_in_an_isolated_interpreter(tmp_path):
    from tests.test_export import assert_exports_match_in_isolation

    models = []
    for data in MOBILE_SPECS:
        spec = ArchSpec.from_dict(data)
        model = build(spec).eval()
        randomize_bn(model)
        models.append((spec, model))
    assert_exports_match_in_isolation(tmp_path, models, timeout=300)
    source = (tmp_path / "net_0.py").read_text()
    assert "groups=64" in source and "x = x * se" in source and "F.hardsigmoid(" in source


def test_new_blocks_run_in_onnxruntime(tmp_path):
    import onnxruntime as ort

    spec = ArchSpec.from_dict(MOBILE_SPECS[0])
    model = build(spec).eval()
    randomize_bn(model)
    x = torch.randn(2, *spec.input)
    with torch.no_grad():
        expected = model(x)
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(path), dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert abs(got - expected.numpy()).max() <= 1e-4


def test_old_specs_load_as_conv_blocks_and_new_ones_round_trip(tutorial_cnn64):
    old = {"input": [3, 64, 64], "num_classes": 5, "blocks": [{"out_channels": 10, "kernel_size": 5}]}
    block = ArchSpec.from_dict(old).blocks[0]
    assert (block.kind, block.groups, block.dilation, block.expansion, block.se) == ("conv", 1, 1, 1, False)
    stored = tutorial_cnn64.to_dict()  # a stored arch dict from before the new fields
    for b in stored["blocks"]:
        for key in ("kind", "groups", "dilation", "expansion", "se"):
            del b[key]
    assert ArchSpec.from_dict(stored) == tutorial_cnn64
    for data in MOBILE_SPECS:
        spec = ArchSpec.from_dict(data)
        assert ArchSpec.from_dict(spec.to_dict()) == spec
    assert ArchSpec.from_dict(MOBILE_SPECS[0]).to_dict()["blocks"][2]["norm"] == "batch"  # explicit
    assert ArchSpec.from_dict(MOBILE_SPECS[0]).summary == (
        "c16k3s2b-ds16k3br-mb4c24k5s2se-mb3c24k3d2-mb1c24k3sep-c32k3g8d2r-gap")


@pytest.mark.parametrize("spec", MOBILE_SPECS)
def test_every_row_holds_its_constructor_arguments_as_tuples_and_an_add_none(spec):
    """What build and export read off a row: positional and keyword arguments as tuples
    (kwargs as (name, value) pairs); a residual's add takes none of either."""
    rows = check(ArchSpec.from_dict(spec)).rows
    for row in rows:
        assert isinstance(row.args, tuple) and isinstance(row.kwargs, tuple), row
        assert all(isinstance(pair, tuple) and isinstance(pair[0], str) for pair in row.kwargs), row
    adds = [row for row in rows if row.op == "add"]
    assert adds and all((row.args, row.kwargs, row.flow) == ((), (), "add") for row in adds)
