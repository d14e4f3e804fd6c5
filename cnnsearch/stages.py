"""Sampling blocks from a space's dimensions: one block, kind-aware, and whole stages.

``sample_block`` suggests one block's values through an Optuna trial, following the
feature map: only the fields of the sampled ``kind`` are suggested (``se`` only for an
``mbconv`` block), a stride or a pool only while the map stays at least ``min_side`` wide.
``sample_stages`` expands MnasNet-style stages: one set of choices per stage (kind, width,
kernel, expansion, SE, ...) shared by its ``repeats`` blocks, where only the first block
may downsample and only the last may pool; every width is scaled by the space's ``width``
multiplier and rounded as torchvision's ``_make_divisible(channels * width, 8)``. A stage's
parameters exist only when it has blocks. Dimensions are duck-typed (``suggest``,
``largest``): this module knows nothing of the TOML they came from.
"""

from __future__ import annotations

from .blocks import conv_side, make_divisible, mbconv_padding
from .ops import COMMON_FIELDS, KIND_FIELDS
from .spec import BlockSpec

# suggestion order: the plain conv block's historical order first, so old spaces keep
# their parameter names and order
_ORDER = ("out_channels", "kernel_size", "activation", "norm", "residual", "dropout", "groups", "dilation",
          "expansion", "se")


def _uses(kind: str, key: str) -> bool:
    return key in COMMON_FIELDS or key in KIND_FIELDS[kind]


def sample_block(trial, dims: dict, prefix: str, h: int, w: int, min_side: int, *,
                 width: float | None = None, may_stride: bool = True, may_pool: bool = True):
    """(block dict, height, width after it) for ``dims`` on an ``h x w`` map."""
    kind = dims["kind"].suggest(trial, f"{prefix}kind")
    pick = {"kind": kind}
    for key in _ORDER:
        if _uses(kind, key):
            pick[key] = dims[key].suggest(trial, f"{prefix}{key}")
    if width is not None:
        pick["out_channels"] = make_divisible(pick["out_channels"] * width)
    k, d = pick["kernel_size"], pick["dilation"]  # every kind has a dilation (ops.KIND_FIELDS)
    stride = BlockSpec.stride  # no room to stride: 1
    if may_stride and min(h, w) >= min_side * dims["stride"].largest:  # the map stays min_side wide
        stride = dims["stride"].suggest(trial, f"{prefix}stride")
    if kind == "mbconv":
        padding = mbconv_padding(k, d)
    else:
        padding = dims["padding"].suggest(trial, f"{prefix}padding")
        if padding == "half" or (padding == "same" and stride != 1):  # "same" for a strided conv
            padding = k // 2 * d
        pick["padding"] = padding
    h, w = conv_side(h, k, stride, padding, d), conv_side(w, k, stride, padding, d)
    pool, pool_size = BlockSpec.pool, BlockSpec.pool_size  # no room to pool: none
    if may_pool and min(h, w) >= min_side * dims["pool_size"].largest:
        pool = dims["pool"].suggest(trial, f"{prefix}pool")
        if pool != "none":
            pool_size = dims["pool_size"].suggest(trial, f"{prefix}pool_size")
            # / would be the same: every later use floors a side or compares it with an integer
            h, w = h // pool_size, w // pool_size  # pragma: no mutate (/ for //: see above)
    return {**pick, "stride": stride, "pool": pool, "pool_size": pool_size}, h, w


def sample_stages(trial, stages: tuple, width_dim, input: tuple[int, int, int], min_side: int) -> list[dict]:
    """The blocks of every stage, as plain dicts for ``ArchSpec.from_dict``."""
    width = width_dim.suggest(trial, "width")
    _, h, w = input
    blocks = []
    for j, dims in enumerate(stages):
        repeats = dims["repeats"].suggest(trial, f"s{j}_repeats")
        if repeats == 0:
            continue
        first, h, w = sample_block(trial, dims, f"s{j}_", h, w, min_side, width=width,
                                   may_pool=False)  # pragma: no mutate (None is as false)
        stage = [first]
        for _ in range(1, repeats):  # the repeats keep the first block's choices, at stride 1
            k, d = first["kernel_size"], first["dilation"]
            pad = first.get("padding", mbconv_padding(k, d))  # mbconv blocks have no padding field
            h, w = conv_side(h, k, 1, pad, d), conv_side(w, k, 1, pad, d)
            stage.append({**first, "stride": 1})
        # a pool after the stage's last block, offered only while the map stays >= min_side
        if min(h, w) >= min_side * dims["pool_size"].largest:
            pool = dims["pool"].suggest(trial, f"s{j}_pool")
            if pool != "none":
                pool_size = dims["pool_size"].suggest(trial, f"s{j}_pool_size")
                stage[-1] = {**stage[-1], "pool": pool, "pool_size": pool_size}
                # / would be the same: every later use floors a side or compares it with an integer
                h, w = h // pool_size, w // pool_size  # pragma: no mutate (/ for //: see above)
        blocks += stage
    return blocks
