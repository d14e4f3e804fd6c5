"""The reference network of drift-robust latency (issue 23, item 4), as ONNX bytes.

A fixed, small CNN (four 3x3 convolutions with ReLU, 16-64 channels on a 32x32 image, global
average pooling, a linear layer to 10 classes: 25 MFLOPs, about 0.2 ms on one core in
onnxruntime) that ``[latency] reference = true`` times interleaved with every candidate
(``latency_server.run_protocol``): the candidate's figure is its ratio to the reference in the
same moments, times the reference's quiet calibration. Built here by hand in protobuf, without
torch or the onnx package, from exact weights (a fixed function of their index), so that it is
the same bytes on every machine and cnnsearch version (``REFERENCE_SHA256``); a latency server
is sent these bytes with each candidate and needs nothing of this module.
"""

from __future__ import annotations

import functools
import math

REFERENCE_SHAPE = (1, 3, 32, 32)  # the reference network's input
# (out channels, kernel, stride) of its convolutions, each followed by a ReLU
REFERENCE_CONVS = ((16, 3, 1), (32, 3, 1), (32, 3, 2), (64, 3, 1))
REFERENCE_SHA256 = "13511a09a6159315d08f15ae4fc76005baddddf27e5e3c4ad65ad99ee179dcc0"


def _pb(*fields: tuple[int, object]) -> bytes:
    """A protobuf message from (field number, value): an int is a varint, bytes or a str
    length-delimited (enough for the ONNX messages of ``reference_model``)."""
    out = bytearray()

    def varint(v: int) -> None:
        v &= (1 << 64) - 1  # a negative int as protobuf writes it: ten bytes
        while True:
            out.append(v & 0x7F | (0x80 if v > 0x7F else 0))
            v >>= 7
            if not v:
                return

    for number, value in fields:
        if isinstance(value, int):
            varint(number << 3)
            varint(value)
        else:
            data = value.encode() if isinstance(value, str) else value
            varint(number << 3 | 2)
            varint(len(data))
            out.extend(data)
    return bytes(out)


def _tensor(name: str, shape: tuple[int, ...]) -> bytes:
    """A float TensorProto of exact values: (index mod 17 - 8) / 64."""
    import numpy as np

    values = ((np.arange(math.prod(shape)) % 17 - 8) / 64).astype("<f4").tobytes()  # exact in float32
    return _pb(*((1, d) for d in shape), (2, 1), (8, name), (9, values))


def _node(op: str, inputs: list[str], output: str, *attributes: bytes) -> bytes:
    return _pb(*((1, i) for i in inputs), (2, output), (3, output), (4, op), *((5, a) for a in attributes))


def _value_info(name: str, shape: tuple[int, ...]) -> bytes:
    dims = _pb(*((1, _pb((1, d))) for d in shape))
    return _pb((1, name), (2, _pb((1, _pb((1, 1), (2, dims))))))  # TypeProto.tensor_type: float, shape


def _ints(name: str, values: tuple[int, ...]) -> bytes:
    return _pb((1, name), *((8, v) for v in values), (20, 7))  # AttributeProto of type INTS


@functools.cache
def reference_model() -> bytes:
    """The reference network as a self-contained ONNX model (opset 17), the same bytes everywhere."""
    nodes, inits, x, channels = [], [], "x", REFERENCE_SHAPE[1]
    for i, (out, k, stride) in enumerate(REFERENCE_CONVS):
        inits += [_tensor(f"w{i}", (out, channels, k, k)), _tensor(f"b{i}", (out,))]
        nodes += [_node("Conv", [x, f"w{i}", f"b{i}"], f"c{i}", _ints("pads", (k // 2,) * 4),
                        _ints("strides", (stride, stride))), _node("Relu", [f"c{i}"], f"r{i}")]
        x, channels = f"r{i}", out
    inits += [_tensor("wl", (10, channels)), _tensor("bl", (10,))]
    nodes += [_node("GlobalAveragePool", [x], "g"), _node("Flatten", ["g"], "f"),
              _node("Gemm", ["f", "wl", "bl"], "y", _pb((1, "transB"), (3, 1), (20, 2)))]
    graph = _pb(*((1, n) for n in nodes), (2, "reference"), *((5, t) for t in inits),
                (11, _value_info("x", REFERENCE_SHAPE)), (12, _value_info("y", (1, 10))))
    return _pb((1, 8), (7, graph), (8, _pb((1, ""), (2, 17))))  # IR version 8, the default domain's opset 17
