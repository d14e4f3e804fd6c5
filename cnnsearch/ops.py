"""The one whitelist of layer kinds, shared by the builder and the exporter.

A shape-table row names an op from ``OPS`` and carries its constructor arguments as
plain numbers (and the odd whitelisted word such as ``"same"``). ``build`` turns a row
into ``getattr(torch.nn, op.module)(*args, **kwargs)``; ``export`` writes the same call
as source text. Nothing outside this table can reach either, so a spec can never smuggle
a name or a string of code into a model or into generated source.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    module: str | None  # class in torch.nn that implements it; None for ops with no module
    functional: str | None = None  # parameter-free form the exporter writes in forward()


# Activation names accepted by specs -> torch.nn class and its functional spelling.
ACTIVATIONS: dict[str, Op] = {
    "relu": Op("ReLU", "F.relu"),
    "relu6": Op("ReLU6", "F.relu6"),
    "leaky_relu": Op("LeakyReLU", "F.leaky_relu"),
    "elu": Op("ELU", "F.elu"),
    "gelu": Op("GELU", "F.gelu"),
    "silu": Op("SiLU", "F.silu"),
    "hardswish": Op("Hardswish", "F.hardswish"),
    "tanh": Op("Tanh", "torch.tanh"),
}

# Gates: the squeeze-and-excitation scale of an mbconv block (not a block activation).
GATES: dict[str, Op] = {"hardsigmoid": Op("Hardsigmoid", "F.hardsigmoid")}

OPS: dict[str, Op] = {
    "conv": Op("Conv2d"),
    "dwconv": Op("Conv2d"),  # depthwise: groups = channels (separable and mbconv blocks)
    "batchnorm": Op("BatchNorm2d"),
    "maxpool": Op("MaxPool2d"),
    "avgpool": Op("AvgPool2d"),
    "global_avgpool": Op("AdaptiveAvgPool2d"),
    "global_maxpool": Op("AdaptiveMaxPool2d"),
    "flatten": Op("Flatten"),
    "linear": Op("Linear"),
    "dropout": Op("Dropout"),
    "add": Op(None),  # residual sum: arithmetic in forward(), no module
    "mul": Op(None),  # squeeze-and-excitation: x * gate, arithmetic in forward()
    **ACTIVATIONS,
    **GATES,
}

# Whitelisted vocabularies of the spec, in the order error messages list them.
NORMS = ("none", "batch")
POOLS = ("none", "max", "avg")
HEAD_POOLS = ("flatten", "avg", "max")
PADDING_WORDS = ("same",)

# Block kinds and the fields each uses besides the common ones (out_channels, kernel_size,
# stride, activation, pool, pool_size, dropout, kind). Any other field must hold its default.
BLOCK_KINDS = ("conv", "separable", "mbconv")
KIND_FIELDS: dict[str, frozenset[str]] = {
    "conv": frozenset({"padding", "norm", "residual", "groups", "dilation"}),
    "separable": frozenset({"padding", "norm", "residual", "dilation"}),
    "mbconv": frozenset({"dilation", "expansion", "se"}),
}
COMMON_FIELDS = frozenset({"out_channels", "kernel_size", "stride", "activation", "pool", "pool_size",
                           "dropout", "kind"})

POOL_OP = {"max": "maxpool", "avg": "avgpool"}
HEAD_POOL_OP = {"avg": "global_avgpool", "max": "global_maxpool"}

# The only strings that may appear as constructor arguments in generated source.
_SAFE_STRINGS = frozenset(PADDING_WORDS)


def literal(value: object) -> str:
    """Source text of one constructor argument; refuses anything not whitelisted."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and value in _SAFE_STRINGS:
        return f'"{value}"'
    raise TypeError(f"refusing to emit {value!r} as source: not a whitelisted literal")


_PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,+()")


def text_literal(text: str, limit: int = 200) -> str:
    """A string from data (a class name) as a Python literal that cannot be anything else:
    letters, digits and a few marks as themselves, every other character as a \\u escape,
    so no quote, backslash or newline of the data ever reaches the source."""
    if not isinstance(text, str) or len(text) > limit:
        raise TypeError(f"refusing to emit {str(text)[:40]!r} as source: not a string of <= {limit} characters")
    body = "".join(c if c in _PLAIN else (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}")
                   for c in text)
    return f'"{body}"'


def module_class(op: str) -> str:
    name = OPS[op].module
    if name is None:
        raise KeyError(f"op {op!r} has no module")
    return name
