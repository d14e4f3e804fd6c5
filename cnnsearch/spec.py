"""ArchSpec: a CNN classifier described as plain, validated data.

Defaults follow PyTorch's, so a hand-written tutorial network translates one to one.
``from_dict`` is strict: an unknown key, a wrong type or a value off the whitelist is a
SpecError naming the field path, e.g. ``blocks[2].activation: 'foo' is not one of ...``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpecError, not_utf8
from .ops import ACTIVATIONS, BLOCK_KINDS, COMMON_FIELDS, HEAD_POOLS, KIND_FIELDS, NORMS, PADDING_WORDS, POOLS

ACTIVATION_NAMES = (*ACTIVATIONS, "none")

# Bounds keep specs sane and keep huge numbers out of generated code.
MAX_CHANNELS = 8192
MAX_KERNEL = 31
MAX_STRIDE = 8
MAX_PADDING = 31
MAX_POOL = 8
MAX_SIDE = 4096
MAX_INPUT_CHANNELS = 64
MAX_CLASSES = 100_000
MAX_HIDDEN = 65_536
MAX_BLOCKS = 64
MAX_DILATION = 8
MAX_EXPANSION = 16


@dataclass(frozen=True)
class BlockSpec:
    """conv -> norm -> activation -> (+ residual) -> pool -> dropout.

    ``kind`` says what "conv" is: a plain ``nn.Conv2d`` (``"conv"``, with ``groups`` and
    ``dilation``), a depthwise-separable pair (``"separable"``: depthwise k x k -> norm ->
    activation -> pointwise 1x1 -> norm -> activation), or MobileNetV3's inverted residual
    (``"mbconv"``: ``expansion``, ``se``; always batch norm, padding (k - 1) // 2 * dilation,
    its own residual add when stride is 1 and the channels stay). A field that does not
    apply to the kind must keep its default (``ops.KIND_FIELDS``).
    """

    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int | str = 0  # an int, or "same" (stride 1 only)
    activation: str = "relu"
    norm: str = "none"  # "batch" drops the conv bias, as BatchNorm makes it redundant
    pool: str = "none"
    pool_size: int = 2  # pooling stride equals its size, like nn.MaxPool2d(k)
    dropout: float = 0.0
    residual: bool = False  # adds the block input, through a 1x1 conv when shapes differ
    kind: str = "conv"  # "conv", "separable" or "mbconv"
    groups: int = 1  # conv: as nn.Conv2d's
    dilation: int = 1  # conv, separable (the depthwise conv), mbconv (its depthwise conv)
    expansion: int = 1  # mbconv: the expanded width is in_channels * expansion
    se: bool = False  # mbconv: squeeze-and-excitation (torchvision's, hardsigmoid gate)


@dataclass(frozen=True)
class HeadSpec:
    """(flatten | global pool) -> [Linear -> activation -> dropout]* -> Linear(num_classes)."""

    pool: str = "flatten"
    hidden: tuple[int, ...] = ()
    activation: str = "relu"
    dropout: float = 0.0


@dataclass(frozen=True)
class ArchSpec:
    input: tuple[int, int, int]  # (C, H, W) of one image
    num_classes: int
    blocks: tuple[BlockSpec, ...]
    head: HeadSpec = field(default_factory=HeadSpec)

    @classmethod
    def from_dict(cls, data: Any) -> ArchSpec:
        """A spec from plain data, strictly checked.

        Args:
            data: a dict as ``to_dict`` gives (``input``, ``num_classes``, ``blocks``,
                ``head``); omitted block and head fields take their defaults.

        Returns:
            The frozen ``ArchSpec``.

        Raises:
            SpecError: an unknown key, a wrong type or a value off its whitelist; ``path``
                names the field (``blocks[2].activation``).
        """
        return _arch_from_dict(data)

    @classmethod
    def from_json(cls, path: str | Path) -> ArchSpec:
        """A spec from a JSON file (``to_json``'s form).

        Args:
            path: the file.

        Returns:
            The frozen ``ArchSpec``.

        Raises:
            SpecError: the file cannot be read, is not UTF-8 JSON, or its content is not a
                valid spec; ``path`` names the file or the field.
        """
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise SpecError(path, f"cannot read ({exc.strerror})") from None
        except UnicodeDecodeError as exc:
            raise SpecError(path, not_utf8(exc)) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(path, f"not valid JSON ({exc.msg}, line {exc.lineno})") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-data form: every field present, lists instead of tuples."""
        return json.loads(json.dumps(asdict(self)))

    def to_json(self) -> str:
        """``to_dict()`` as indented JSON with a final newline: ``from_json`` reads it back."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @property
    def summary(self) -> str:
        """Compact architecture, e.g. ``c32k3p-c64k3s2br-gap-fc128``.

        Per block: ``c<out>k<kernel>`` (``ds<out>k<kernel>`` separable,
        ``mb<expansion>c<out>k<kernel>`` mbconv), then ``g<groups>``, ``d<dilation>``,
        ``s<stride>`` where not 1, ``se`` squeeze-excitation, ``b`` batch norm,
        ``r`` residual, ``p`` max pool / ``a`` avg pool. Head: ``gap``/``gmp`` for global
        pooling, ``fc<width>`` per hidden layer.
        """
        parts = []
        for b in self.blocks:
            if b.kind == "mbconv":  # mb<expansion>c<out>k<kernel>...: MnasNet's "MBConv6 k5"
                text = f"mb{b.expansion}c{b.out_channels}k{b.kernel_size}"
            else:
                text = f"{'ds' if b.kind == 'separable' else 'c'}{b.out_channels}k{b.kernel_size}"
            text += f"g{b.groups}" if b.groups != 1 else ""
            text += f"d{b.dilation}" if b.dilation != 1 else ""
            text += f"s{b.stride}" if b.stride != 1 else ""
            text += "se" if b.se else ""
            text += "b" if b.norm == "batch" and b.kind != "mbconv" else ""
            text += "r" if b.residual else ""
            text += {"max": "p", "avg": "a"}.get(b.pool, "")
            parts.append(text)
        if self.head.pool != "flatten":
            parts.append("gap" if self.head.pool == "avg" else "gmp")
        parts += [f"fc{w}" for w in self.head.hidden]
        return "-".join(parts) or "linear"

    @property
    def digest(self) -> str:
        """Stable content hash: equal specs give equal digests across runs and machines."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- validation


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _table(value: Any, path: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()):
    if not isinstance(value, dict):
        raise SpecError(path or "spec", f"expected an object, got {_show(value)}")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        where = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise SpecError(where, f"unknown key (allowed: {', '.join(allowed)})")
    for key in required:
        if key not in value:
            raise SpecError(f"{path}.{key}" if path else key, "missing (required)")
    return value


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(path, f"expected an integer, got {_show(value)}")
    if not lo <= value <= hi:
        raise SpecError(path, f"{_show(value)} is out of range [{lo}, {hi}]")
    return value


def _choice(value: Any, path: str, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise SpecError(path, f"{_show(value)} is not one of {', '.join(choices)}")
    return value


def _dropout(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(path, f"expected a number, got {_show(value)}")
    if not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise SpecError(path, f"{_show(value)} is out of range [0, 1)")
    return float(value)


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise SpecError(path, f"expected true or false, got {_show(value)}")
    return value


_BLOCK_FIELDS = tuple(BlockSpec.__dataclass_fields__)
_DEFAULTS = {name: f.default for name, f in BlockSpec.__dataclass_fields__.items()}
_OWN = {kind: COMMON_FIELDS | names | ({"norm"} if kind == "mbconv" else set())
        for kind, names in KIND_FIELDS.items()}


def _block(data: Any, path: str) -> BlockSpec:
    d = _table(data, path, _BLOCK_FIELDS, required=("out_channels", "kernel_size"))
    kind = _choice(d.get("kind", "conv"), f"{path}.kind", BLOCK_KINDS)
    for key in sorted(d.keys() - _OWN[kind]):  # a field of another kind is a mistake unless at its default
        if d[key] != _DEFAULTS[key] or type(d[key]) is not type(_DEFAULTS[key]):
            users = " and ".join(k for k, names in KIND_FIELDS.items() if key in names)
            raise SpecError(f"{path}.{key}", f"{_show(d[key])}: applies to kind {users}, not {kind} "
                            f"(leave it out or at {_DEFAULTS[key]!r})")
    if kind == "mbconv":
        if _choice(d.get("norm", "batch"), f"{path}.norm", NORMS) != "batch":
            raise SpecError(f"{path}.norm", "an mbconv block always has batch norm "
                            "(torchvision's InvertedResidual); give 'batch' or leave it out")
        d = {**d, "norm": "batch"}
    padding = d.get("padding", 0)
    if isinstance(padding, str):
        padding = _choice(padding, f"{path}.padding", PADDING_WORDS)
    else:
        padding = _int(padding, f"{path}.padding", 0, MAX_PADDING)
    return BlockSpec(
        out_channels=_int(d["out_channels"], f"{path}.out_channels", 1, MAX_CHANNELS),
        kernel_size=_int(d["kernel_size"], f"{path}.kernel_size", 1, MAX_KERNEL),
        stride=_int(d.get("stride", 1), f"{path}.stride", 1, MAX_STRIDE),
        padding=padding,
        activation=_choice(d.get("activation", "relu"), f"{path}.activation", ACTIVATION_NAMES),
        norm=_choice(d.get("norm", "none"), f"{path}.norm", NORMS),
        pool=_choice(d.get("pool", "none"), f"{path}.pool", POOLS),
        pool_size=_int(d.get("pool_size", 2), f"{path}.pool_size", 1, MAX_POOL),
        dropout=_dropout(d.get("dropout", 0.0), f"{path}.dropout"),
        residual=_bool(d.get("residual", False), f"{path}.residual"),
        kind=kind,
        groups=_int(d.get("groups", 1), f"{path}.groups", 1, MAX_CHANNELS),
        dilation=_int(d.get("dilation", 1), f"{path}.dilation", 1, MAX_DILATION),
        expansion=_int(d.get("expansion", 1), f"{path}.expansion", 1, MAX_EXPANSION),
        se=_bool(d.get("se", False), f"{path}.se"),
    )


def _head(data: Any) -> HeadSpec:
    d = _table(data, "head", tuple(HeadSpec.__dataclass_fields__))
    hidden = d.get("hidden", [])
    if not isinstance(hidden, (list, tuple)):
        raise SpecError("head.hidden", f"expected a list of widths, got {_show(hidden)}")
    if len(hidden) > MAX_BLOCKS:
        raise SpecError("head.hidden", f"{len(hidden)} layers is more than {MAX_BLOCKS}")
    return HeadSpec(
        pool=_choice(d.get("pool", "flatten"), "head.pool", HEAD_POOLS),
        hidden=tuple(_int(w, f"head.hidden[{i}]", 1, MAX_HIDDEN) for i, w in enumerate(hidden)),
        activation=_choice(d.get("activation", "relu"), "head.activation", ACTIVATION_NAMES),
        dropout=_dropout(d.get("dropout", 0.0), "head.dropout"),
    )


def _arch_from_dict(data: Any) -> ArchSpec:
    d = _table(data, "", ("input", "num_classes", "blocks", "head"), ("input", "num_classes"))
    shape = d["input"]
    if not isinstance(shape, (list, tuple)) or len(shape) != 3:
        raise SpecError("input", f"expected [C, H, W], got {_show(shape)}")
    c = _int(shape[0], "input[0]", 1, MAX_INPUT_CHANNELS)
    h = _int(shape[1], "input[1]", 1, MAX_SIDE)
    w = _int(shape[2], "input[2]", 1, MAX_SIDE)
    blocks = d.get("blocks", [])
    if not isinstance(blocks, (list, tuple)):
        raise SpecError("blocks", f"expected a list of blocks, got {_show(blocks)}")
    if len(blocks) > MAX_BLOCKS:
        raise SpecError("blocks", f"{len(blocks)} blocks is more than {MAX_BLOCKS}")
    return ArchSpec(
        input=(c, h, w),
        num_classes=_int(d["num_classes"], "num_classes", 2, MAX_CLASSES),
        blocks=tuple(_block(b, f"blocks[{i}]") for i, b in enumerate(blocks)),
        head=_head(d.get("head", {})),
    )
