"""The exported module computes what the built one computes, in eval and in train mode.

Every activation, dropout, residual and projection shortcut, squeeze-excitation, pool and
head kind goes through ``to_source``: the generated class loads ``build(spec)``'s weights
strictly and gives bit-identical outputs in eval mode, and in train mode under the same torch
seed (the same dropout masks, the same batch-norm statistics). Both are also checked against
the layers composed by hand with plain torch, so a fault shared by builder and exporter shows.
The generated file is checked as a reader uses it: its shape comments are true, norms and
activations fold into the statement before them, no layer or import is dead, its docstring's
usage snippet runs, and it refuses a data description that does not fit.
"""

import ast
import math
import re
import textwrap

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from cnnsearch import ArchSpec, SpecError, build, check, ops
from cnnsearch.export import check_class_name, export_files, load_weights, save_weights, to_source

# Each activation written out from its definition, independently of torch.nn's classes.
REFERENCE = {
    "relu": lambda t: t.clamp(min=0),
    "relu6": lambda t: t.clamp(0, 6),
    "leaky_relu": lambda t: torch.where(t > 0, t, 0.01 * t),
    "elu": lambda t: torch.where(t > 0, t, torch.expm1(t)),
    "gelu": lambda t: 0.5 * t * (1 + torch.erf(t / math.sqrt(2))),
    "silu": lambda t: t * torch.sigmoid(t),
    "hardswish": lambda t: t * (t + 3).clamp(0, 6) / 6,
    "tanh": lambda t: (torch.exp(2 * t) - 1) / (torch.exp(2 * t) + 1),
    "none": lambda t: t,
}
HARDSIGMOID = lambda t: (t + 3).clamp(0, 6) / 6  # noqa: E731


def make_spec(blocks, head=None, input=(2, 6, 6), num_classes=3) -> ArchSpec:
    return ArchSpec.from_dict({"input": list(input), "num_classes": num_classes, "blocks": blocks,
                               "head": head or {}})


def exported_namespace(spec, **kwargs) -> dict:
    namespace = {}
    exec(compile(to_source(spec, **kwargs), "exported.py", "exec"), namespace)  # our own generated file
    return namespace


def pair(spec, seed=0):
    """(built model, exported model holding the same weights and batch-norm statistics)."""
    torch.manual_seed(seed)
    built = build(spec)
    for m in built.modules():  # non-trivial batch norms: eval mode must use these statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    exported = exported_namespace(spec)["Net"]()
    exported.load_state_dict(built.state_dict(), strict=True)
    return built, exported


def assert_same_in_both_modes(built, exported, x, *, exported_x=None):
    """Bit-identical outputs in eval mode, and in train mode from the same seed, after which
    both hold the same running statistics. ``exported_x``: what the exported model gets
    instead of ``x`` (raw images, where it normalises them itself). Returns (eval output,
    train output)."""
    exported_x = x if exported_x is None else exported_x
    built.eval()
    exported.eval()
    with torch.no_grad():
        expected = built(x)
        assert torch.equal(exported(exported_x), expected)
    built.train()
    exported.train()
    torch.manual_seed(123)
    trained = built(x)
    torch.manual_seed(123)
    assert torch.equal(exported(exported_x), trained)
    exported_buffers = dict(exported.named_buffers())
    for name, buffer in built.named_buffers():
        assert torch.equal(exported_buffers[name], buffer), name
    return expected, trained


def batch_norm(bn, t, training=False):
    return F.batch_norm(t, None if training else bn.running_mean, None if training else bn.running_var,
                        bn.weight, bn.bias, training, 0.1, bn.eps)


def linear(layer, t):
    return t @ layer.weight.T + layer.bias


# --- every activation and dropout, eval and train --------------------------------------------

def test_every_activation_has_a_reference():
    assert set(REFERENCE) == {*ops.ACTIVATIONS, "none"}


@pytest.mark.parametrize("act", sorted(REFERENCE))
def test_activation_and_dropout_match_build_and_hand_composition_in_eval_and_train(act):
    spec = make_spec([{"out_channels": 4, "kernel_size": 3, "padding": 1, "norm": "batch", "activation": act,
                       "pool": "max", "dropout": 0.25}],
                     head={"hidden": [6], "activation": act, "dropout": 0.5})
    built, exported = pair(spec)
    x = 4 * torch.randn(5, *spec.input)  # beyond relu6's 6 and hardswish's +-3
    f = REFERENCE[act]

    def by_hand(training):
        t = F.conv2d(x, built.conv1.weight, None, padding=1)
        t = f(batch_norm(built.bn1, t, training))
        t = F.max_pool2d(t, 2)
        t = F.dropout(t, 0.25, training)
        t = f(linear(built.fc1, t.flatten(1)))
        return linear(built.fc2, F.dropout(t, 0.5, training))

    with torch.no_grad():
        in_eval = by_hand(False)  # before train mode updates the running statistics
        expected, trained = assert_same_in_both_modes(built, exported, x)
        assert torch.allclose(expected, in_eval, atol=1e-5, rtol=1e-4)
        torch.manual_seed(123)  # the same masks as the models drew: same calls, same order
        assert torch.allclose(trained, by_hand(True), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(trained, expected, atol=1e-3)
        torch.manual_seed(7)  # another seed, other masks: dropout is live in the export
        assert not torch.equal(exported(x), trained)


# --- residual, projection and squeeze-excitation blocks --------------------------------------

RESIDUAL_CASES = {
    "conv identity": (
        (4, 6, 6), {"out_channels": 4, "kernel_size": 3, "padding": 1, "residual": True},
        lambda m, x: REFERENCE["relu"](m.conv1(x)) + x),
    "conv projection, batch norm, stride 2": (
        (3, 6, 6), {"out_channels": 5, "kernel_size": 3, "stride": 2, "padding": 1, "norm": "batch",
                    "residual": True, "activation": "silu"},
        lambda m, x: REFERENCE["silu"](m.bn1(m.conv1(x))) + m.proj_bn1(m.proj1(x))),
    "conv projection with bias, same padding": (
        (3, 5, 5), {"out_channels": 6, "kernel_size": 3, "padding": "same", "residual": True,
                    "activation": "tanh"},
        lambda m, x: REFERENCE["tanh"](m.conv1(x)) + m.proj1(x)),
    "separable projection": (
        (3, 6, 6), {"kind": "separable", "out_channels": 6, "kernel_size": 3, "padding": 1, "norm": "batch",
                    "residual": True, "activation": "relu6"},
        lambda m, x: REFERENCE["relu6"](m.bn1(m.pw1(REFERENCE["relu6"](m.dw_bn1(m.dw1(x))))))
        + m.proj_bn1(m.proj1(x))),
    "mbconv expansion and squeeze-excitation, residual": (
        (8, 5, 5), {"kind": "mbconv", "out_channels": 8, "kernel_size": 3, "expansion": 2, "se": True,
                    "activation": "hardswish"},
        lambda m, x: _mbconv(m, x, expand=True, se=True, act=REFERENCE["hardswish"]) + x),
    "mbconv squeeze-excitation without expansion, residual": (
        (8, 5, 5), {"kind": "mbconv", "out_channels": 8, "kernel_size": 3, "se": True},
        lambda m, x: _mbconv(m, x, expand=False, se=True, act=REFERENCE["relu"]) + x),
    "mbconv stride 2, no residual": (
        (4, 6, 6), {"kind": "mbconv", "out_channels": 6, "kernel_size": 3, "stride": 2, "expansion": 3,
                    "activation": "elu"},
        lambda m, x: _mbconv(m, x, expand=True, se=False, act=REFERENCE["elu"])),
}


def _mbconv(m, x, *, expand, se, act):
    h = act(m.expand_bn1(m.expand1(x))) if expand else x
    h = act(m.dw_bn1(m.dw1(h)))
    if se:
        gate = HARDSIGMOID(m.se_expand1(REFERENCE["relu"](m.se_reduce1(h.mean((2, 3), keepdim=True)))))
        h = h * gate
    return m.project_bn1(m.project1(h))


@pytest.mark.parametrize("case", sorted(RESIDUAL_CASES))
def test_residual_projection_and_squeeze_excitation_blocks(case):
    shape, block, by_hand = RESIDUAL_CASES[case]
    spec = make_spec([block], input=shape)
    built, exported = pair(spec)
    x = 2 * torch.randn(3, *shape)
    with torch.no_grad():
        in_eval = built.eval().fc1(by_hand(built, x).flatten(1))
        expected, _ = assert_same_in_both_modes(built, exported, x)
        assert torch.allclose(expected, in_eval, atol=1e-5, rtol=1e-4)


def test_two_residual_blocks_in_a_row_each_add_their_own_input():
    spec = make_spec([{"out_channels": 4, "kernel_size": 3, "padding": 1, "residual": True},
                      {"out_channels": 6, "kernel_size": 3, "padding": 1, "norm": "batch", "residual": True}],
                     input=(4, 5, 5))
    built, exported = pair(spec)
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        built.eval()
        t = REFERENCE["relu"](built.conv1(x)) + x
        t = REFERENCE["relu"](built.bn2(built.conv2(t))) + built.proj_bn2(built.proj2(t))
        in_eval = built.fc1(t.flatten(1))
        expected, _ = assert_same_in_both_modes(built, exported, x)
        assert torch.allclose(expected, in_eval, atol=1e-5, rtol=1e-4)


# --- pools and heads --------------------------------------------------------------------------

@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("pool_size", [2, 3])
@pytest.mark.parametrize("head_pool", ["flatten", "avg", "max"])
@pytest.mark.parametrize("hidden", [[], [5, 4]])
def test_every_pool_and_head_kind(pool, pool_size, head_pool, hidden):
    spec = make_spec([{"out_channels": 3, "kernel_size": 3, "pool": pool, "pool_size": pool_size,
                       "activation": "none"}],
                     head={"pool": head_pool, "hidden": hidden, "activation": "leaky_relu", "dropout": 0.3},
                     input=(2, 9, 8), num_classes=4)
    built, exported = pair(spec)
    x = torch.randn(3, *spec.input)
    with torch.no_grad():
        expected, _ = assert_same_in_both_modes(built, exported, x)
        t = built.conv1(x)
        t = (F.max_pool2d if pool == "max" else F.avg_pool2d)(t, pool_size)
        assert t.shape[2:] == ((9 - 2) // pool_size, (8 - 2) // pool_size)
        if head_pool == "avg":
            t = t.mean((2, 3))
        elif head_pool == "max":
            t = t.amax((2, 3))
        t = t.flatten(1)
        layers = [built.get_submodule(f"fc{j + 1}") for j in range(len(hidden) + 1)]
        for layer in layers[:-1]:
            t = REFERENCE["leaky_relu"](linear(layer, t))
        assert torch.allclose(expected, linear(layers[-1], t), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("hidden", [[], [7]])
def test_a_network_without_blocks_is_a_linear_head_on_the_flattened_image(hidden):
    spec = make_spec([], head={"hidden": hidden, "activation": "gelu"}, input=(1, 4, 3))
    built, exported = pair(spec)
    x = torch.randn(2, 1, 4, 3)
    with torch.no_grad():
        expected, _ = assert_same_in_both_modes(built, exported, x)
        t = x.flatten(1)
        if hidden:
            t = REFERENCE["gelu"](linear(built.fc1, t))
        assert torch.allclose(expected, linear(built.fc2 if hidden else built.fc1, t), atol=1e-5, rtol=1e-4)


def test_built_network_records_its_input_shape():
    spec = make_spec([{"out_channels": 3, "kernel_size": 3}], input=(2, 7, 5))
    assert build(spec).input_shape == (2, 7, 5)
    assert build(spec.to_dict()).input_shape == (2, 7, 5)  # a plain dict builds the same network


# --- the generated file as a reader sees it --------------------------------------------------

READABLE_SPECS = {
    "residual": make_spec([{"out_channels": 4, "kernel_size": 3, "padding": 1, "norm": "batch",
                            "residual": True, "pool": "avg", "dropout": 0.1},
                           {"out_channels": 6, "kernel_size": 3, "stride": 2, "padding": 1, "norm": "batch",
                            "residual": True, "activation": "tanh"}],
                          head={"pool": "max", "hidden": [5], "dropout": 0.2}, input=(4, 8, 8)),
    "mbconv": make_spec([{"kind": "mbconv", "out_channels": 8, "kernel_size": 3, "expansion": 2, "se": True,
                          "activation": "hardswish"},
                         {"kind": "separable", "out_channels": 6, "kernel_size": 3, "norm": "batch",
                          "residual": True, "padding": 1}],
                        head={"hidden": [5], "activation": "none"}, input=(8, 5, 5)),
    "plain": make_spec([{"out_channels": 3, "kernel_size": 3, "activation": "elu"}], input=(1, 5, 6)),
    "no blocks": make_spec([], head={"hidden": [4]}, input=(1, 3, 3)),
}
DATA = {"mean": [0.25, 0.5, 0.125, 0.75, 0.5, 0.5, 0.5, 0.5], "std": [0.5, 0.25, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0]}


def data_for(spec) -> dict:
    c = spec.input[0]
    return {"mean": DATA["mean"][:c], "std": DATA["std"][:c],
            "classes": [f"class {i}" for i in range(spec.num_classes)]}


def forward_of(source: str) -> tuple[list[str], ast.FunctionDef]:
    tree = ast.parse(source)
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    (forward,) = [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "forward"]
    return source.splitlines(), forward


SHAPE_COMMENT = re.compile(r"  # \(N, (\d+(?:, \d+)*)\)$")


@pytest.mark.parametrize("with_data", [False, True])
@pytest.mark.parametrize("name", sorted(READABLE_SPECS))
def test_forward_shape_comments_are_the_true_shapes(name, with_data):
    """Run the exported forward() one statement at a time: each statement that computes a
    tensor says its true shape in a ``# (N, ...)`` comment, and the input is announced as
    ``# x: (N, C, H, W)`` before the first statement."""
    spec = READABLE_SPECS[name]
    data = data_for(spec) if with_data else None
    source = to_source(spec, data=data)
    lines, forward = forward_of(source)
    first = forward.body[0].lineno - 1
    assert lines[first - 1].strip() == f"# x: (N, {', '.join(map(str, spec.input))})"
    namespace = exported_namespace(spec, data=data)
    model = namespace["Net"]().eval()
    x = torch.rand(2, *spec.input)
    scope = {"self": model, "F": F, "torch": torch, "x": x}
    checked = 0
    assert isinstance(forward.body[-1], ast.Return)
    for stmt in forward.body[:-1]:
        exec(compile(ast.Module([stmt], []), "forward", "exec"), scope)
        if isinstance(stmt, ast.Assign) and not isinstance(stmt.value, ast.Name):
            line = lines[stmt.lineno - 1]
            if with_data and "self.mean" in line:
                assert scope["x"].shape[1:] == spec.input
                continue
            comment = SHAPE_COMMENT.search(line)
            assert comment, line
            (target,) = stmt.targets
            assert tuple(scope[target.id].shape) == (2, *map(int, comment.group(1).split(", "))), line
            checked += 1
    assert checked >= 2
    with torch.no_grad():
        assert torch.equal(scope["x"], model(x))


@pytest.mark.parametrize("name", sorted(READABLE_SPECS))
def test_norms_and_activations_fold_into_the_statement_before_them(name):
    """``x = F.relu(self.bn1(self.conv1(x)))``, never a statement that only applies a norm,
    an activation or a gate to a variable."""
    spec = READABLE_SPECS[name]
    source = to_source(spec)
    model = exported_namespace(spec)["Net"]()
    norms = {n for n, m in model.named_children() if isinstance(m, torch.nn.BatchNorm2d)}
    functional = {f.functional for f in ops.OPS.values() if f.functional}
    _, forward = forward_of(source)
    for stmt in forward.body:
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)):
            continue
        call = ast.unparse(stmt.value.func)
        if call in functional or (call.startswith("self.") and call[5:] in norms):
            assert not isinstance(stmt.value.args[0], ast.Name), ast.unparse(stmt)


@pytest.mark.parametrize("with_data", [False, True])
@pytest.mark.parametrize("name", sorted(READABLE_SPECS))
def test_no_dead_layer_and_no_unused_import(name, with_data):
    spec = READABLE_SPECS[name]
    source = to_source(spec, data=data_for(spec) if with_data else None)
    tree = ast.parse(source)
    (cls,) = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    made = {t.attr for n in ast.walk(methods["__init__"]) if isinstance(n, ast.Assign)
            for t in n.targets if isinstance(t, ast.Attribute)}
    used = {n.attr for n in ast.walk(methods["forward"]) if isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id == "self"}
    assert made and made <= used
    imported = {(a.asname or a.name).split(".")[0] for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names}
    names = {n.id for n in ast.walk(cls) if isinstance(n, ast.Name)}
    assert imported <= names, imported - names


def _final_map(spec):
    table = check(spec)
    flatten = [i for i, r in enumerate(table.rows) if r.op == "flatten"][0]
    return table.rows[flatten - 1].shape if flatten else spec.input


@pytest.mark.parametrize(("spec", "written"), [
    (make_spec([{"out_channels": 3, "kernel_size": 3}], input=(2, 6, 8)), "3 * 4 * 6"),
    (make_spec([{"out_channels": 3, "kernel_size": 3}], input=(2, 3, 4)), "3 * 1 * 2"),
    (make_spec([{"out_channels": 3, "kernel_size": 3}], input=(2, 3, 3)), "3"),
    (make_spec([{"out_channels": 5, "kernel_size": 3, "pool": "max"}], head={"pool": "avg", "hidden": [4]},
               input=(2, 6, 6)), "5"),
    (make_spec([{"out_channels": 3, "kernel_size": 3, "pool": "max"}], head={"activation": "none"},
               input=(2, 7, 7)), "3 * 2 * 2"),
    (make_spec([], head={"hidden": [4], "activation": "none"}, input=(1, 4, 3)), "1 * 4 * 3"),
])
def test_first_linear_writes_the_flatten_size_as_the_tutorial_arithmetic(spec, written):
    """``nn.Linear(20 * 13 * 13, 50)`` as in the tutorial when the map has more than one
    pixel; a plain channel count after global pooling or a 1x1 map."""
    source = to_source(spec)
    line = [s for s in source.splitlines() if s.strip().startswith("self.fc1 = ")][0]
    first_arg = ast.parse(line.strip()).body[0].value.args[0]
    assert ast.unparse(first_arg) == written
    c, *hw = _final_map(spec)
    assert eval(written) == c * math.prod(hw)  # noqa: S307 (numbers only)
    built, exported = pair(spec)
    assert_same_in_both_modes(built, exported, torch.randn(2, *spec.input))


def _docstring_snippet(source: str) -> str:
    """The indented code at the end of the module docstring, as a reader copies it."""
    lines = ast.get_docstring(ast.parse(source), clean=False).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("    "))
    return textwrap.dedent("\n".join(lines[start:]))


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB")])
def test_docstring_usage_classifies_an_image_file(tmp_path, monkeypatch, capsys, channels, mode):
    from PIL import Image
    from torchvision.transforms.functional import to_tensor

    spec = make_spec([{"out_channels": 4, "kernel_size": 3, "norm": "batch", "pool": "max"}],
                     head={"pool": "avg"}, input=(channels, 10, 12), num_classes=5)
    data = {"mean": [0.4, 0.5, 0.6][:channels], "std": [0.2, 0.25, 0.3][:channels],
            "classes": ["cat", 'dog "rex"', "é-ü", "line\nbreak", "😀"]}
    built, _ = pair(spec)
    built.eval()
    monkeypatch.chdir(tmp_path)
    save_weights(built, "weights.safetensors")
    torch.manual_seed(0)
    pixels = (torch.rand(17, 13, 3) * 255).to(torch.uint8).numpy()  # any size: the snippet resizes
    Image.fromarray(pixels, "RGB").save("image.png")
    namespace = exported_namespace(spec, data=data)
    exec(compile(_docstring_snippet(to_source(spec, data=data)), "snippet", "exec"), namespace)
    image = to_tensor(Image.open("image.png").convert(mode).resize((12, 10), Image.BILINEAR))
    mean, std = torch.tensor(data["mean"]).view(-1, 1, 1), torch.tensor(data["std"]).view(-1, 1, 1)
    with torch.no_grad():
        logits = built(((image - mean) / std).unsqueeze(0))
    assert capsys.readouterr().out == data["classes"][logits.argmax(1).item()] + "\n"
    assert torch.equal(namespace["image"], image)  # read as the model's channels, at its size
    docstring = ast.get_docstring(ast.parse(to_source(spec, data=data)))
    assert "\nGenerated by cnnsearch; needs only PyTorch.\nTakes images scaled to [0, 1]" in docstring
    assert "normalises them inside forward(); `classes` names the outputs. To classify a file:" in docstring
    model = namespace["model"]
    with torch.no_grad():
        assert torch.allclose(model(image.unsqueeze(0)), logits, atol=1e-6)
    assert model.classes == data["classes"] and model.input_size == (channels, 10, 12)
    assert not model.training


def test_docstring_usage_without_data_loads_the_weights(tmp_path, monkeypatch):
    spec = READABLE_SPECS["residual"]
    built, _ = pair(spec)
    monkeypatch.chdir(tmp_path)
    save_weights(built, "weights.safetensors")
    namespace = exported_namespace(spec)
    exec(compile(_docstring_snippet(to_source(spec)), "snippet", "exec"), namespace)
    loaded = namespace["model"].state_dict()
    assert loaded.keys() == built.state_dict().keys()
    assert all(torch.equal(loaded[k], v) for k, v in built.state_dict().items())


@pytest.mark.parametrize("channels", [1, 2])
def test_export_with_data_normalises_raw_images_and_names_classes(channels):
    spec = make_spec([{"out_channels": 4, "kernel_size": 3, "norm": "batch", "dropout": 0.5}],
                     input=(channels, 6, 5), num_classes=2)
    data = {"mean": [0.5, 0.25][:channels], "std": [0.25, 2][:channels], "classes": ["no", "yes"]}
    built, _ = pair(spec)
    model = exported_namespace(spec, data=data)["Net"]()
    model.load_state_dict(built.state_dict(), strict=True)  # the statistics are no weights
    assert model.classes == ["no", "yes"] and model.input_size == (channels, 6, 5)
    raw = torch.rand(3, *spec.input)
    normalised = (raw - torch.tensor(data["mean"]).view(1, -1, 1, 1)) / torch.tensor(data["std"]).view(1, -1, 1, 1)
    assert_same_in_both_modes(built, model, normalised, exported_x=raw)


# --- data descriptions that do not fit --------------------------------------------------------

GOOD = {"mean": [0.5, 0.25], "std": [0.5, 1], "classes": ["a", "b", "c"]}


@pytest.mark.parametrize("patch", [
    {"mean": None}, {"std": None}, {"classes": None},
    {"mean": [0.5]}, {"std": [0.5, 0.5, 0.5]}, {"mean": [0.5, float("nan")]}, {"std": [0.5, float("inf")]},
    {"mean": [True, 0.5]}, {"mean": ["0.5", 0.5]}, {"std": [0.5, 0.0]}, {"std": [-0.5, 1.0]},
    {"classes": ["a", "b"]}, {"classes": ["a", "b", 3]}, {"classes": ["a", "b", "c" * 201]},
    {"classes": ("a", "b", "c")},
])
def test_a_data_description_that_does_not_fit_is_one_clear_error(patch):
    spec = make_spec([{"out_channels": 3, "kernel_size": 3}], input=(2, 5, 5), num_classes=3)
    data = {k: v for k, v in {**GOOD, **patch}.items() if v is not None}
    with pytest.raises(SpecError) as caught:
        to_source(spec, data=data)
    assert caught.value.path == "data"
    assert "2-channel" in caught.value.message and "3-class" in caught.value.message


def test_a_data_description_at_the_limits_fits():
    spec = make_spec([{"out_channels": 3, "kernel_size": 3}], input=(2, 5, 5), num_classes=3)
    names = ["a" * 200, "", "c"]
    model = exported_namespace(spec, data={"mean": [0, 1], "std": [1, 3], "classes": names})["Net"]()
    assert model.classes == names


# --- literals: numbers, whitelisted words and escaped class names -----------------------------

@given(st.one_of(st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
                 st.just("same")))
@settings(max_examples=200, deadline=None, derandomize=True)
def test_literal_is_source_that_evaluates_back_to_the_value(value):
    text = ops.literal(value)
    back = ast.literal_eval(text)
    assert back == value and type(back) is type(value)


@pytest.mark.parametrize("value", ["valid", "same\"); import os; (\"", None, [1], b"same", object()])
def test_literal_refuses_anything_off_the_whitelist_naming_it(value):
    with pytest.raises(TypeError, match=re.escape(repr(value)[:20])):
        ops.literal(value)


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_text_literal_is_a_plain_string_literal_of_the_same_text(text):
    literal = ops.text_literal(text)
    assert ast.literal_eval(literal) == text
    assert "\n" not in literal and "\r" not in literal and literal.count('"') == 2
    node = ast.parse(literal, mode="eval").body
    assert isinstance(node, ast.Constant) and node.value == text


@pytest.mark.parametrize("char", ["\uffff", "\U00010000", "\U0001f600", "\U0010ffff", "\x00", "\\", "'"])
def test_text_literal_escapes_every_plane(char):
    assert ast.literal_eval(ops.text_literal(f"a{char}b")) == f"a{char}b"


def test_text_literal_keeps_plain_names_readable_and_limits_length():
    assert ops.text_literal("Golden Retriever-2 (big), v1.0+") == '"Golden Retriever-2 (big), v1.0+"'
    assert ast.literal_eval(ops.text_literal("x" * 200)) == "x" * 200
    for bad in ("x" * 201, 12345, None):  # the message echoes (the start of) the bad value
        with pytest.raises(TypeError) as caught:
            ops.text_literal(bad)
        assert repr(str(bad)[:40]) in str(caught.value)


def test_module_class_of_an_op_without_module_names_it():
    assert ops.module_class("conv") == "Conv2d" and ops.module_class("gelu") == "GELU"
    for op in ("add", "mul"):
        with pytest.raises(KeyError, match=op):
            ops.module_class(op)


# --- class names --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["N" * 64, "_x", "Net2", "Tensor_"])
def test_plain_identifiers_are_class_names(name):
    assert check_class_name(name) == name
    assert name in exported_namespace(make_spec([], input=(1, 2, 2)), class_name=name)


@pytest.mark.parametrize("name", ["torch", "nn", "F", "Tensor", "class", "None", "2x", "a-b", "N" * 65, 5, None])
def test_bad_class_names_are_a_spec_error_echoing_the_name(name):
    with pytest.raises(SpecError) as caught:
        check_class_name(name)
    assert caught.value.path == "class name"
    assert repr(str(name)[:40]) in caught.value.message


# --- weights files and export_files ---------------------------------------------------------------

def test_weights_round_trip_and_load_strictly(tmp_path):
    spec = READABLE_SPECS["mbconv"]
    built, _ = pair(spec)
    path = tmp_path / "w.safetensors"
    save_weights(built, path)
    torch.manual_seed(99)
    fresh = build(spec)
    assert load_weights(fresh, path) is fresh
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in built.state_dict().items())
    state = load_file(str(path))
    missing, extra = tmp_path / "missing.safetensors", tmp_path / "extra.safetensors"
    save_file({k: v for k, v in state.items() if k != "fc1.bias"}, str(missing))
    save_file({**state, "fc9.weight": torch.zeros(1)}, str(extra))
    for path, key in ((missing, "fc1.bias"), (extra, "fc9.weight")):
        with pytest.raises(RuntimeError, match=re.escape(key)):
            load_weights(build(spec), path)


def test_export_files_writes_source_and_seeded_weights(tmp_path):
    spec = READABLE_SPECS["plain"]
    out = export_files(spec, str(tmp_path / "net.py"), weights=tmp_path / "w0.safetensors")
    assert out == tmp_path / "net.py" and out.read_text() == to_source(spec)
    torch.manual_seed(0)
    seed0 = build(spec).state_dict()
    written = load_file(str(tmp_path / "w0.safetensors"))
    assert written.keys() == seed0.keys() and all(torch.equal(written[k], v) for k, v in seed0.items())
    export_files(spec, tmp_path / "net3.py", weights=tmp_path / "w3.safetensors", seed=3)
    torch.manual_seed(3)
    seed3 = build(spec).state_dict()
    written = load_file(str(tmp_path / "w3.safetensors"))
    assert all(torch.equal(written[k], v) for k, v in seed3.items())
    assert not torch.equal(written["conv1.weight"], seed0["conv1.weight"])


def test_export_files_writes_a_given_model_class_name_and_data(tmp_path):
    spec = READABLE_SPECS["plain"]
    built, _ = pair(spec, seed=11)
    data = data_for(spec)
    out = export_files(spec, tmp_path / "net.py", class_name="Digits", weights=tmp_path / "w.safetensors",
                       model=built, data=data)
    assert out.read_text() == to_source(spec, "Digits", data=data)
    written = load_file(str(tmp_path / "w.safetensors"))
    assert all(torch.equal(written[k], v) for k, v in built.state_dict().items())
    export_files(spec, tmp_path / "only.py")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.py", "only.py", "w.safetensors"]
    assert (tmp_path / "only.py").read_text() == to_source(spec)
