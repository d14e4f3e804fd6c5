"""The rows of one block, per block kind: exact shapes, parameters and FLOPs (no torch).

``block_rows`` turns one ``BlockSpec`` on a ``c x h x w`` input into shape-table rows
(``Layer``), or raises ShapeError naming the field and the numbers. Three kinds:

* ``conv``: ``nn.Conv2d`` (``groups``, ``dilation``) -> norm -> activation;
* ``separable``: depthwise k x k (groups = channels) -> norm -> activation -> pointwise
  1x1 -> norm -> activation (MobileNetV1's block);
* ``mbconv``: MobileNetV3's inverted residual, row for row torchvision's
  ``InvertedResidual``: [1x1 expand -> BN -> act] -> depthwise -> BN -> act ->
  [squeeze-excitation] -> 1x1 project -> BN -> (+ input when stride 1 and in == out).

then, for every kind, residual (conv and separable: the ``residual`` field), pool and
dropout. FLOPs are what ``FlopCounterMode`` counts: 2 x multiply-accumulates of the convs
(a grouped conv does ``in_channels / groups`` per output), nothing for norms, activations,
pools, the squeeze's average, the gate's multiply or the residual add.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import ShapeError
from .ops import POOL_OP
from .spec import BlockSpec

Shape = tuple[int, ...]


class Layer(NamedTuple):
    name: str  # module attribute name in the built and the exported model
    op: str  # key of ops.OPS
    args: tuple  # positional constructor arguments (numbers, whitelisted words)
    kwargs: tuple  # (name, value) pairs, only where they differ from PyTorch's defaults
    shape: Shape  # output shape of one image: (C, H, W), or (F,) after flatten
    params: int
    flops: int
    # "x": x = f(x); "skip": skip = f(skip); "add": x = x + skip; squeeze-excitation:
    # "squeeze": se = f(x); "gate": se = f(se); "scale": x = x * se
    flow: str = "x"
    saves_input: bool = False  # skip = x before this row (first row of a residual block)
    where: str = ""  # the spec field it comes from, for messages: "blocks[1].conv"


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's ``_make_divisible``: round to a multiple of ``divisor``, at least
    ``divisor``, never more than 10% below ``v`` (MobileNet widths and SE squeezes)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _hw(h: int, w: int) -> str:
    return f"{h}x{w}"


def conv_side(side: int, kernel: int, stride: int, padding: int | str, dilation: int = 1) -> int:
    """Output side of a convolution (PyTorch's formula); < 1 means impossible."""
    if padding == "same":
        return side
    span = dilation * (kernel - 1) + 1
    return (side + 2 * padding - span) // stride + 1 if side + 2 * padding >= span else 0


def _conv_kwargs(stride: int, padding: int | str, bias: bool, dilation: int = 1, groups: int = 1) -> tuple:
    kwargs = []  # in nn.Conv2d's order
    if stride != 1:
        kwargs.append(("stride", stride))
    if padding != 0:
        kwargs.append(("padding", padding))
    if dilation != 1:
        kwargs.append(("dilation", dilation))
    if groups != 1:
        kwargs.append(("groups", groups))
    if not bias:
        kwargs.append(("bias", False))
    return tuple(kwargs)


def _spatial(at: str, after: str, h: int, w: int, k: int, s: int, p: int | str, d: int) -> tuple[int, int]:
    """Output size of a block's k x k conv, or ShapeError naming ``{at}.conv``."""
    if p == "same":
        if s != 1:
            raise ShapeError(f'{at}.conv: padding "same" needs stride 1, got stride {s}')
        return h, w
    span = d * (k - 1) + 1
    if h + 2 * p < span or w + 2 * p < span:
        padded = f" padded by {p} to {_hw(h + 2 * p, w + 2 * p)}" if p else ""
        kernel = f"kernel {k}" if d == 1 else f"kernel {k} at dilation {d} (spanning {span})"
        raise ShapeError(f"{at}.conv: {kernel} is larger than its {_hw(h, w)} input{padded} (after {after})")
    return (h + 2 * p - span) // s + 1, (w + 2 * p - span) // s + 1


def _conv(name: str, op: str, c_in: int, c_out: int, k: int, out: Shape, where: str, *, stride: int = 1,
          padding: int | str = 0, dilation: int = 1, groups: int = 1, bias: bool = True, flow: str = "x",
          saves_input: bool = False) -> Layer:
    per_out = (c_in // groups) * k * k  # weights (and MACs per output pixel) of one output channel
    return Layer(name, op, (c_in, c_out, k), _conv_kwargs(stride, padding, bias, dilation, groups), out,
                 c_out * per_out + (c_out if bias else 0), 2 * c_out * per_out * out[1] * out[2], flow,
                 saves_input, where)


def _norm_act(rows: list, prefix: str, n: int, norm: str, activation: str, shape: Shape, at: str,
              flow: str = "x") -> None:
    c = shape[0]
    if norm == "batch":
        rows.append(Layer(f"{prefix}bn{n}", "batchnorm", (c,), (), shape, 2 * c, 0, flow, where=f"{at}.norm"))
    if activation != "none":
        rows.append(Layer(f"{prefix}act{n}", activation, (), (), shape, 0, 0, flow, where=f"{at}.activation"))


def _groups(at: str, groups: int, c_in: int, c_out: int) -> None:
    for what, channels in (("in_channels", c_in), ("out_channels", c_out)):
        if channels % groups:
            raise ShapeError(f"{at}.groups: {groups} does not divide {what} {channels}")


def mbconv_padding(kernel: int, dilation: int) -> int:
    """An mbconv block's depthwise padding, as torchvision's InvertedResidual: never a field."""
    return (kernel - 1) // 2 * dilation


def _mbconv(rows: list, b: BlockSpec, n: int, at: str, after: str, c: int, h: int, w: int) -> Shape:
    k, s, d = b.kernel_size, b.stride, b.dilation
    if d > 1 and s > 1:
        raise ShapeError(f"{at}.dilation: an mbconv block with dilation {d} needs stride 1 (torchvision's "
                         f"InvertedResidual drops the stride when dilated), got stride {s}")
    pad = mbconv_padding(k, d)
    oh, ow = _spatial(at, after, h, w, k, s, pad, d)
    residual = s == 1 and c == b.out_channels  # torchvision's use_res_connect
    if residual and (oh, ow) != (h, w):
        raise ShapeError(f"{at}.kernel_size: an mbconv block adds its input back (stride 1, {c} channels in "
                         f"and out), but the even kernel {k} maps {_hw(h, w)} to {_hw(oh, ow)}; use an odd kernel")
    e = c * b.expansion
    if e != c:
        rows.append(_conv(f"expand{n}", "conv", c, e, 1, (e, h, w), f"{at}.expansion", bias=False,
                          saves_input=residual))
        _norm_act(rows, "expand_", n, "batch", b.activation, (e, h, w), at)
    out = (e, oh, ow)
    rows.append(_conv(f"dw{n}", "dwconv", e, e, k, out, f"{at}.conv", stride=s, padding=pad, dilation=d,
                      groups=e, bias=False, saves_input=residual and e == c))
    _norm_act(rows, "dw_", n, "batch", b.activation, out, at)
    if b.se:  # torchvision.ops.SqueezeExcitation(e, _make_divisible(e // 4, 8), scale_activation=Hardsigmoid)
        q = make_divisible(e // 4, 8)
        where = f"{at}.se"
        rows += [Layer(f"se_pool{n}", "global_avgpool", (1,), (), (e, 1, 1), 0, 0, "squeeze", where=where),
                 _conv(f"se_reduce{n}", "conv", e, q, 1, (q, 1, 1), where, flow="gate"),
                 Layer(f"se_act{n}", "relu", (), (), (q, 1, 1), 0, 0, "gate", where=where),
                 _conv(f"se_expand{n}", "conv", q, e, 1, (e, 1, 1), where, flow="gate"),
                 Layer(f"se_gate{n}", "hardsigmoid", (), (), (e, 1, 1), 0, 0, "gate", where=where),
                 Layer(f"se_scale{n}", "mul", (), (), out, 0, 0, "scale", where=where)]
    c = b.out_channels
    rows.append(_conv(f"project{n}", "conv", e, c, 1, (c, oh, ow), f"{at}.out_channels", bias=False))
    _norm_act(rows, "project_", n, "batch", "none", (c, oh, ow), at)
    if residual:
        rows.append(Layer(f"add{n}", "add", (), (), (c, oh, ow), 0, 0, "add", where=f"{at}.residual"))
    return c, oh, ow


def block_rows(rows: list, b: BlockSpec, i: int, shape: Shape, after: str) -> tuple[Shape, str]:
    """Append block ``i``'s rows to ``rows``; its output shape and what the next block comes
    after (for messages), or ShapeError."""
    n = i + 1
    at = f"blocks[{i}]"
    c, h, w = shape
    k, s = b.kernel_size, b.stride
    if b.kind == "mbconv":
        c, h, w = _mbconv(rows, b, n, at, after, c, h, w)
    else:
        pad = b.padding
        oh, ow = _spatial(at, after, h, w, k, s, pad, b.dilation)
        bias = b.norm == "none"
        out = (b.out_channels, oh, ow)
        if b.kind == "separable":
            rows.append(_conv(f"dw{n}", "dwconv", c, c, k, (c, oh, ow), f"{at}.conv", stride=s, padding=pad,
                              dilation=b.dilation, groups=c, bias=bias, saves_input=b.residual))
            _norm_act(rows, "dw_", n, b.norm, b.activation, (c, oh, ow), at)
            rows.append(_conv(f"pw{n}", "conv", c, b.out_channels, 1, out, f"{at}.out_channels", bias=bias))
        else:
            if b.groups != 1:
                _groups(at, b.groups, c, b.out_channels)
            rows.append(_conv(f"conv{n}", "conv", c, b.out_channels, k, out, f"{at}.conv", stride=s, padding=pad,
                              dilation=b.dilation, groups=b.groups, bias=bias, saves_input=b.residual))
        _norm_act(rows, "", n, b.norm, b.activation, out, at)
        if b.residual:
            _residual(rows, at, n, s, bias, b.norm, shape, out)
        c, h, w = out
    after = f"{at}.conv"
    if b.pool != "none":
        q = b.pool_size
        if h < q or w < q:
            raise ShapeError(f"{at}.pool: pool {q} shrinks its {_hw(h, w)} input to zero (after {after})")
        h, w = h // q, w // q
        rows.append(Layer(f"pool{n}", POOL_OP[b.pool], (q,), (), (c, h, w), 0, 0, where=f"{at}.pool"))
        after = f"{at}.pool"
    if b.dropout > 0:
        rows.append(Layer(f"drop{n}", "dropout", (b.dropout,), (), (c, h, w), 0, 0, where=f"{at}.dropout"))
    return (c, h, w), after


def _residual(rows: list, at: str, n: int, s: int, bias: bool, norm: str, block_in: Shape, out: Shape) -> None:
    """The input added back: as it is, or through a 1x1 stride-s conv (+ norm) when shapes differ."""
    sc, sh, sw = block_in
    c, h, w = out
    if block_in != out:
        ph, pw = (sh - 1) // s + 1, (sw - 1) // s + 1
        if (ph, pw) != (h, w):
            raise ShapeError(
                f"{at}.residual: the conv maps {_hw(sh, sw)} to {_hw(h, w)}, which a 1x1"
                f" stride-{s} shortcut cannot match ({_hw(ph, pw)}); use an odd kernel"
                f' with padding kernel_size // 2 or "same"'
            )
        rows.append(_conv(f"proj{n}", "conv", sc, c, 1, out, f"{at}.residual", stride=s, bias=bias, flow="skip"))
        if norm == "batch":
            rows.append(Layer(f"proj_bn{n}", "batchnorm", (c,), (), out, 2 * c, 0, "skip", where=f"{at}.residual"))
    rows.append(Layer(f"add{n}", "add", (), (), out, 0, 0, "add", where=f"{at}.residual"))
