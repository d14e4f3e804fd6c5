"""Shape, parameter and FLOP arithmetic of an ArchSpec, in plain Python (no torch).

``check(spec)`` walks the network the way the tutorial does by hand
(``64 -> 60 -> 30 -> 26 -> 13``) and returns a ShapeTable with one row per layer, or
raises ShapeError naming the layer and the numbers. The table is exact:

* ``params`` equals ``sum(p.numel() for p in build(spec).parameters())``;
* ``flops`` equals what ``torch.utils.flop_counter.FlopCounterMode`` counts for one
  forward pass at batch 1: 2 x multiply-accumulates of convolutions and matmuls (biases,
  norms, activations, pools and the residual add are not counted by it, nor here).

The rows also drive the builder and the exporter (see ``ops.py``), so the three can never
disagree about what the network is.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import ShapeError
from .ops import HEAD_POOL_OP, POOL_OP
from .spec import ArchSpec

Shape = tuple[int, ...]


class Layer(NamedTuple):
    name: str  # module attribute name in the built and the exported model
    op: str  # key of ops.OPS
    args: tuple  # positional constructor arguments (numbers, whitelisted words)
    kwargs: tuple  # (name, value) pairs, only where they differ from PyTorch's defaults
    shape: Shape  # output shape of one image: (C, H, W), or (F,) after flatten
    params: int
    flops: int
    flow: str = "x"  # "x": x = f(x); "skip": skip = f(skip); "add": x = x + skip
    saves_input: bool = False  # skip = x before this row (first row of a residual block)
    where: str = ""  # the spec field it comes from, for messages: "blocks[1].conv"


class ShapeTable(NamedTuple):
    spec: ArchSpec
    rows: tuple[Layer, ...]
    params: int
    flops: int
    peak_activation_bytes: int  # fp32, one image: largest live input + output (+ skip)

    @property
    def output_shape(self) -> Shape:
        return self.rows[-1].shape

    @property
    def spatial_chain(self) -> str:
        """The tutorial's stepwise sizes, e.g. ``64->60->30->26->13``."""
        sides = [self.spec.input[1]]
        for row in self.rows:
            if row.flow == "x" and len(row.shape) == 3 and row.shape[1] != sides[-1]:
                sides.append(row.shape[1])
        return "->".join(map(str, sides))


def _size(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _hw(h: int, w: int) -> str:
    return f"{h}x{w}"


def conv_side(side: int, kernel: int, stride: int, padding: int | str) -> int:
    """Output side of a convolution (PyTorch's formula, dilation 1); < 1 means impossible."""
    if padding == "same":
        return side
    return (side + 2 * padding - kernel) // stride + 1 if side + 2 * padding >= kernel else 0


def _conv_kwargs(stride: int, padding: int | str, bias: bool) -> tuple:
    kwargs = []
    if stride != 1:
        kwargs.append(("stride", stride))
    if padding != 0:
        kwargs.append(("padding", padding))
    if not bias:
        kwargs.append(("bias", False))
    return tuple(kwargs)


def check(spec: ArchSpec) -> ShapeTable:
    """The shape table of ``spec``, or ShapeError for a network that cannot run."""
    rows: list[Layer] = []
    c, h, w = spec.input
    after = "input"
    peak = 0

    def add(layer: Layer, before: Shape) -> None:
        nonlocal peak
        live = _size(before) + _size(layer.shape) + (_size(skip) if skip else 0)
        peak = max(peak, live)
        rows.append(layer)

    skip: Shape | None = None
    for i, b in enumerate(spec.blocks):
        n = i + 1
        at = f"blocks[{i}]"
        block_in = (c, h, w)
        k, s = b.kernel_size, b.stride
        if b.padding == "same":
            if s != 1:
                raise ShapeError(f'{at}.conv: padding "same" needs stride 1, got stride {s}')
            oh, ow, pad = h, w, "same"
        else:
            p = b.padding
            if h + 2 * p < k or w + 2 * p < k:
                padded = f" padded by {p} to {_hw(h + 2 * p, w + 2 * p)}" if p else ""
                raise ShapeError(
                    f"{at}.conv: kernel {k} is larger than its {_hw(h, w)} input{padded}"
                    f" (after {after})"
                )
            oh, ow, pad = conv_side(h, k, s, p), conv_side(w, k, s, p), p
        bias = b.norm == "none"
        macs = c * k * k * b.out_channels * oh * ow
        conv_params = b.out_channels * c * k * k + (b.out_channels if bias else 0)
        c = b.out_channels
        kwargs = _conv_kwargs(s, pad, bias)
        add(Layer(f"conv{n}", "conv", (block_in[0], c, k), kwargs, (c, oh, ow), conv_params, 2 * macs,
                  saves_input=b.residual, where=f"{at}.conv"), block_in)
        if b.residual:
            skip = block_in
        h, w = oh, ow
        if b.norm == "batch":
            add(Layer(f"bn{n}", "batchnorm", (c,), (), (c, h, w), 2 * c, 0, where=f"{at}.norm"), (c, h, w))
        if b.activation != "none":
            add(Layer(f"act{n}", b.activation, (), (), (c, h, w), 0, 0, where=f"{at}.activation"), (c, h, w))
        if b.residual:
            sc, sh, sw = block_in
            if (sc, sh, sw) != (c, h, w):
                ph, pw = (sh - 1) // s + 1, (sw - 1) // s + 1
                if (ph, pw) != (h, w):
                    raise ShapeError(
                        f"{at}.residual: the conv maps {_hw(sh, sw)} to {_hw(h, w)}, which a 1x1"
                        f" stride-{s} shortcut cannot match ({_hw(ph, pw)}); use an odd kernel"
                        f' with padding kernel_size // 2 or "same"'
                    )
                add(Layer(f"proj{n}", "conv", (sc, c, 1), _conv_kwargs(s, 0, bias), (c, h, w), c * sc + (c if bias else 0),
                          2 * sc * c * h * w, flow="skip", where=f"{at}.residual"), block_in)
                if b.norm == "batch":
                    add(Layer(f"proj_bn{n}", "batchnorm", (c,), (), (c, h, w), 2 * c, 0, flow="skip",
                              where=f"{at}.residual"), (c, h, w))
            add(Layer(f"add{n}", "add", (), (), (c, h, w), 0, 0, flow="add", where=f"{at}.residual"),
                (c, h, w))
            skip = None
        after = f"{at}.conv"
        if b.pool != "none":
            q = b.pool_size
            if h < q or w < q:
                raise ShapeError(
                    f"{at}.pool: pool {q} shrinks its {_hw(h, w)} input to zero (after {after})"
                )
            h, w = h // q, w // q
            add(Layer(f"pool{n}", POOL_OP[b.pool], (q,), (), (c, h, w), 0, 0, where=f"{at}.pool"), (c, h * q, w * q))
            after = f"{at}.pool"
        if b.dropout > 0:
            add(Layer(f"drop{n}", "dropout", (b.dropout,), (), (c, h, w), 0, 0, where=f"{at}.dropout"),
                (c, h, w))

    head = spec.head
    if head.pool != "flatten":
        add(Layer("global_pool", HEAD_POOL_OP[head.pool], (1,), (), (c, 1, 1), 0, 0, where="head.pool"), (c, h, w))
        h = w = 1
    features = c * h * w
    add(Layer("flatten", "flatten", (), (), (features,), 0, 0, where="head.pool"), (c, h, w))
    widths = (*head.hidden, spec.num_classes)
    for j, width in enumerate(widths):
        n = j + 1
        where = f"head.hidden[{j}]" if j < len(head.hidden) else "num_classes"
        add(Layer(f"fc{n}", "linear", (features, width), (), (width,), features * width + width,
                  2 * features * width, where=where), (features,))
        features = width
        if j == len(head.hidden):
            break
        if head.activation != "none":
            add(Layer(f"act_fc{n}", head.activation, (), (), (width,), 0, 0, where="head.activation"),
                (width,))
        if head.dropout > 0:
            add(Layer(f"drop_fc{n}", "dropout", (head.dropout,), (), (width,), 0, 0,
                      where="head.dropout"), (width,))

    return ShapeTable(
        spec=spec,
        rows=tuple(rows),
        params=sum(r.params for r in rows),
        flops=sum(r.flops for r in rows),
        peak_activation_bytes=4 * peak,
    )
