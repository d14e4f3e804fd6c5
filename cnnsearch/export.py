"""Export an ArchSpec as standalone, readable PyTorch source (+ safetensors weights).

The source is generated from the shape table's rows only, through the ``ops.py``
whitelist: module class names come from that table, arguments are numbers or whitelisted
words written by ``ops.literal``, attribute names are the rows' own (``conv1``, ``fc2``),
which the shape arithmetic made from integers. Nothing a user stored as a string is ever
interpolated into the source except as a fully escaped string literal (a study's class
names, through ``ops.text_literal``). The output is deterministic: the same spec gives the same
bytes. Layer names match ``build(spec)``'s, so its ``state_dict`` loads with strict=True.
"""

from __future__ import annotations

import keyword
import math
import re
from pathlib import Path

import torch

from . import ops
from .errors import SpecError
from .shapes import Layer, ShapeTable, check
from .spec import ArchSpec

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_RESERVED = {"torch", "nn", "F", "Tensor"}
_FOLDED = {"batchnorm", *ops.ACTIVATIONS, *ops.GATES}  # written inside the previous statement


def check_class_name(name: str) -> str:
    if (not isinstance(name, str) or not _IDENTIFIER.fullmatch(name) or keyword.iskeyword(name)
            or name in _RESERVED):
        raise SpecError("class name", f"{str(name)[:40]!r} is not a plain Python identifier "
                        "(letters, digits, _; not a keyword or torch/nn/F)")
    return name


def _shape_comment(shape: tuple[int, ...]) -> str:
    return "# (N, " + ", ".join(map(str, shape)) + ")"


def _constructor(row: Layer, table: ShapeTable, index: int) -> str:
    args = [ops.literal(a) for a in row.args]
    if row.op == "linear" and index > 0 and table.rows[index - 1].op == "flatten":
        c, h, w = _flatten_input(table, index - 1)
        if h * w > 1:  # write the flatten size as the tutorial's arithmetic: 20 * 13 * 13
            args[0] = f"{c} * {h} * {w}"
    args += [f"{key}={ops.literal(value)}" for key, value in row.kwargs]
    return f"nn.{ops.module_class(row.op)}({', '.join(args)})"


def _flatten_input(table: ShapeTable, flatten_index: int) -> tuple[int, int, int]:
    if flatten_index == 0:
        return table.spec.input
    return table.rows[flatten_index - 1].shape


def _uses_functional(table: ShapeTable) -> bool:
    return any(ops.OPS[r.op].functional and ops.OPS[r.op].functional.startswith("F.")
               for r in table.rows)


_TARGET = {"x": "x", "skip": "skip", "squeeze": "se", "gate": "se"}  # the variable a row assigns


def _forward_lines(table: ShapeTable) -> list[str]:
    """One statement per step; norms and activations fold into the statement before them."""
    lines = [f"# x: (N, {', '.join(map(str, table.spec.input))})"]
    for i, row in enumerate(table.rows):
        if row.saves_input:
            lines.append("skip = x")
        if row.flow == "add":
            lines.append(f"x = x + skip  {_shape_comment(row.shape)}")
            continue
        if row.flow == "scale":
            lines.append(f"x = x * se  {_shape_comment(row.shape)}")
            continue
        target = _TARGET[row.flow]
        source = "x" if row.flow == "squeeze" else target
        if row.op in _FOLDED and i > 0 and table.rows[i - 1].flow == row.flow != "add":
            prev_target, expr = lines.pop().split("  # ")[0].split(" = ", 1)
            assert prev_target == target
        else:
            expr = source
        if ops.OPS[row.op].functional:
            expr = f"{ops.OPS[row.op].functional}({expr})"
        elif row.op == "flatten":
            expr = f"{expr}.flatten(1)"
        else:
            expr = f"self.{row.name}({expr})"
        lines.append(f"{target} = {expr}  {_shape_comment(row.shape)}")
    lines.append("return x")
    return lines


def _preprocess(data: dict, spec: ArchSpec) -> tuple[list[str], list[str], list[str]]:
    """(class attribute lines, __init__ lines, forward lines) that make the module take raw
    images in [0, 1] and normalise them with the training statistics, from a study's stored
    data description (``ImageData.description()``). Only numbers and escaped literals."""
    c = spec.input[0]
    mean, std, classes = data.get("mean"), data.get("std"), data.get("classes")
    if (not isinstance(mean, list) or not isinstance(std, list) or len(mean) != c or len(std) != c
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                       for v in mean + std) or not all(v > 0 for v in std)
            or not isinstance(classes, list) or len(classes) != spec.num_classes
            or not all(isinstance(n, str) and len(n) <= 200 for n in classes)):
        raise SpecError("data", f"the stored data description does not fit a {c}-channel, "
                        f"{spec.num_classes}-class network")
    names = ", ".join(ops.text_literal(str(n)) for n in classes)
    attrs = [f"    classes = [{names}]",
             f"    input_size = ({', '.join(ops.literal(v) for v in spec.input)})  # (C, H, W)",
             ""]
    init = ["        # training statistics: forward() takes images in [0, 1] and normalises them itself",  # pragma: no mutate (a comment's wording)
            f"        self.register_buffer(\"mean\", torch.tensor([{', '.join(ops.literal(float(v)) for v in mean)}])"
            f".view(1, {c}, 1, 1), persistent=False)",
            f"        self.register_buffer(\"std\", torch.tensor([{', '.join(ops.literal(float(v)) for v in std)}])"
            f".view(1, {c}, 1, 1), persistent=False)"]
    return attrs, init, ["x = (x - self.mean) / self.std  # normalised as in training"]


def _usage(class_name: str, spec: ArchSpec, data: dict) -> list[str]:
    """The docstring's how-to. A photo folder's network learnt from photos resized on their
    short side and centre-cropped (``data.image_folder``): its snippet does the same."""
    c, h, w = spec.input
    mode = "L" if c == 1 else "RGB"
    name = data.get("name")
    cropped = isinstance(name, str) and name.startswith("folder:") and h == w
    read = (["    from torchvision.transforms import CenterCrop, Resize"] if cropped else []) + [
        "    from torchvision.transforms.functional import to_tensor",
        f"    model = {class_name}().eval()",
        '    model.load_state_dict(load_file("weights.safetensors"))']
    if cropped:
        read += [f"    # as in training: the short side resized to {h}, then the centre {h}x{w} kept",
                 f'    image = Image.open("image.png").convert("{mode}")',
                 f"    image = to_tensor(CenterCrop({h})(Resize({h})(image)))"]
    else:
        read.append(f'    image = to_tensor(Image.open("image.png").convert("{mode}").resize(({w}, {h}), Image.BILINEAR))')
    return [
        f"Takes images scaled to [0, 1] as torchvision's to_tensor gives them ({c}x{h}x{w}) and",
        "normalises them inside forward(); `classes` names the outputs. To classify a file:",
        "    from PIL import Image",
        "    from safetensors.torch import load_file",
        *read,
        "    print(model.classes[model(image.unsqueeze(0)).argmax(1).item()])",
    ]


def to_source(spec: ArchSpec | dict, class_name: str = "Net", *, data: dict | None = None) -> str:
    """Standalone PyTorch source of ``spec``: imports only torch, deterministic, and made
    only from whitelisted values (no stored string reaches the source).

    Args:
        spec: an ``ArchSpec`` or its plain-data form.
        class_name: the ``nn.Module`` class's name: a Python identifier.
        data: a study's stored data description (mean, std, classes, input size, data
            name). With it the module takes raw images in [0, 1], normalises them itself and
            carries ``classes`` and ``input_size``; a ``folder:...`` data name makes the
            usage snippet resize and centre-crop a photo, as training did.

    Returns:
        The module's source text; its state-dict keys are ``build(spec)``'s.

    Raises:
        SpecError: ``spec`` is malformed, or ``class_name`` is not an identifier.
        ShapeError: the network cannot run on its input.
    """
    if isinstance(spec, dict):
        spec = ArchSpec.from_dict(spec)
    class_name = check_class_name(class_name)
    table = check(spec)
    attrs, init, first = _preprocess(data, spec) if data is not None else ([], [], [])
    for row in table.rows:  # belt and braces: names are made from integers in shapes.py
        assert _IDENTIFIER.fullmatch(row.name) and row.op in ops.OPS, row
    c, h, w = spec.input
    imports = ["import torch"]
    if _uses_functional(table):
        imports.append("import torch.nn.functional as F")
    imports.append("from torch import nn")
    body = [
        f'"""{class_name}: a CNN classifier for {c}x{h}x{w} images, {spec.num_classes} classes.',
        "",
        f"Architecture {spec.summary}; spatial sizes {table.spatial_chain}.",
        f"Parameters: {table.params:,}. FLOPs per image: {table.flops:,}.",
        *(["Generated by cnnsearch; needs only PyTorch.", *_usage(class_name, spec, data)] if data is not None else [
            "Generated by cnnsearch; needs only PyTorch. Weights in safetensors format load with",
            "    from safetensors.torch import load_file",
            f"    model = {class_name}()",
            '    model.load_state_dict(load_file("weights.safetensors"))']),
        '"""',
        "",
        *imports,
        "",
        "",
        f"class {class_name}(nn.Module):",
        *attrs,
        "    def __init__(self):",
        "        super().__init__()",
        *init,
    ]
    for i, row in enumerate(table.rows):
        if ops.OPS[row.op].module and not ops.OPS[row.op].functional and row.op != "flatten":
            body.append(f"        self.{row.name} = {_constructor(row, table, i)}")
    body += ["", "    def forward(self, x: torch.Tensor) -> torch.Tensor:"]
    forward = _forward_lines(table)
    body += [f"        {line}" for line in forward[:1] + first + forward[1:]]
    return "\n".join(body) + "\n"


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Write ``model``'s state_dict as safetensors (contiguous CPU copies)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}  # pragma: no mutate (.to: a no-op for a CPU model; only a GPU run tells)
    save_file(state, str(path))


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load safetensors weights into ``model`` strictly (no pickle involved)."""
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)), strict=True)
    return model


def export_files(spec: ArchSpec, out: str | Path, *, class_name: str = "Net",
                 weights: str | Path | None = None, model: torch.nn.Module | None = None,
                 seed: int = 0, data: dict | None = None) -> Path:
    """Write ``out`` (source) and, if asked, ``weights``: of ``model`` when given (a trained
    trial), else of a freshly initialised ``build(spec)`` seeded with ``seed``. ``data``:
    see ``to_source``."""
    source = to_source(spec, class_name, data=data)
    out = Path(out)
    if weights is not None:
        if model is None:
            from .build import build

            torch.manual_seed(seed)
            model = build(spec)
        save_weights(model, weights)
    out.write_text(source)
    return out
