"""Shape, parameter and FLOP arithmetic of an ArchSpec, in plain Python (no torch).

``check(spec)`` walks the network the way the tutorial does by hand
(``64 -> 60 -> 30 -> 26 -> 13``) and returns a ShapeTable with one row per layer, or
raises ShapeError naming the layer and the numbers. The table is exact:

* ``params`` equals ``sum(p.numel() for p in build(spec).parameters())``;
* ``flops`` equals what ``torch.utils.flop_counter.FlopCounterMode`` counts for one
  forward pass at batch 1: 2 x multiply-accumulates of convolutions and matmuls (biases,
  norms, activations, pools and the residual add are not counted by it, nor here).

The rows of each block kind (conv, separable, mbconv) come from ``blocks.py``; this module
walks the blocks, adds the head and sums. The rows also drive the builder and the exporter (see ``ops.py``), so the three can never
disagree about what the network is.
"""

from __future__ import annotations

from typing import NamedTuple

from .blocks import Layer, Shape, block_rows, conv_side, make_divisible
from .ops import HEAD_POOL_OP
from .spec import ArchSpec

__all__ = ["Layer", "Shape", "ShapeTable", "check", "conv_side", "make_divisible"]


class ShapeTable(NamedTuple):
    spec: ArchSpec
    rows: tuple[Layer, ...]
    params: int
    flops: int
    peak_activation_bytes: int  # fp32, one image, each tensor freed after its last use: see _peak

    @property
    def output_shape(self) -> Shape:
        """The last layer's output shape: ``(num_classes,)``."""
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


def _peak(first: int, rows: list[Layer]) -> int:
    """Largest number of values alive at once: a row's input and output, plus what the
    block's residual add will need (the saved input, or its projection once computed), plus
    the main path while a projection runs, and the live map while a squeeze-excitation
    gate is computed."""
    x, skip, side, gate, peak = first, 0, 0, 0, 0
    for r in rows:
        out, f = _size(r.shape), r.flow
        kept = side or skip  # what the add will read: the projection's output, else the saved input
        if f == "skip":  # the projection reads the saved input while the main path's output waits
            live = kept + out + x
            side = out
        elif f == "gate" or f == "scale":
            live = x + gate + out + kept
            if f == "gate":
                gate = out
        else:  # "x", "add", "squeeze"
            live = x + out + kept
        if live > peak:
            peak = live
        if r.saves_input:
            skip = x
        if f == "squeeze":
            gate = out
        elif f != "skip" and f != "gate":
            x = out
            if f == "add":
                skip = side = 0
    return peak


def check(spec: ArchSpec) -> ShapeTable:
    """Every layer's output shape, parameters and FLOPs, computed without a tensor.

    Args:
        spec: the architecture.

    Returns:
        Its ``ShapeTable``: one row per layer, and the totals (``params``, ``flops`` at
        batch 1, ``peak_activation_bytes`` for one fp32 image).

    Raises:
        ShapeError: the network cannot run on its input (a map shrinks below 1 pixel, a
            residual's shapes do not meet, ...); the message names the block and the sizes.
    """
    rows: list[Layer] = []
    shape: Shape = spec.input
    after = "input"
    for i, b in enumerate(spec.blocks):
        shape, after = block_rows(rows, b, i, shape, after)
    c, h, w = shape

    head = spec.head
    if head.pool != "flatten":
        rows.append(Layer("global_pool", HEAD_POOL_OP[head.pool], (1,), (), (c, 1, 1), 0, 0, where="head.pool"))
        h = w = 1
    features = c * h * w
    rows.append(Layer("flatten", "flatten", (), (), (features,), 0, 0, where="head.pool"))
    widths = (*head.hidden, spec.num_classes)
    for j, width in enumerate(widths):
        n = j + 1
        where = f"head.hidden[{j}]" if j < len(head.hidden) else "num_classes"
        rows.append(Layer(f"fc{n}", "linear", (features, width), (), (width,), features * width + width,
                          2 * features * width, where=where))
        features = width
        if j == len(head.hidden):
            break
        if head.activation != "none":
            rows.append(Layer(f"act_fc{n}", head.activation, (), (), (width,), 0, 0, where="head.activation"))
        if head.dropout > 0:
            rows.append(Layer(f"drop_fc{n}", "dropout", (head.dropout,), (), (width,), 0, 0,
                              where="head.dropout"))

    return ShapeTable(
        spec=spec,
        rows=tuple(rows),
        params=sum(r.params for r in rows),
        flops=sum(r.flops for r in rows),
        peak_activation_bytes=4 * _peak(_size(spec.input), rows),
    )
