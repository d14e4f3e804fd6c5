"""Number formatting shared by the CLI's tables and the HTML report, and the shape table as
text and as JSON (``cnnsearch show``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .shapes import ShapeTable


# what an imbalanced dataset's note tells the user to do about it
BALANCED_HINT = "objective balanced_accuracy weighs every class alike"


def imbalance(sizes) -> float | None:
    """The largest class's images over the smallest's when that is 2x or more (and no class
    is empty), else None: the one rule for `show DATASET` and the search's data line."""
    sizes = list(sizes)
    if not sizes or not min(sizes) or max(sizes) < 2 * min(sizes):
        return None
    return max(sizes) / min(sizes)


def human(n: float) -> str:
    """12498500 -> '12.5M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(int(n)) if float(n).is_integer() else f"{n:.3g}"


def format_table(table: ShapeTable) -> str:
    header = ("layer", "op", "output shape", "params", "FLOPs")
    lines = [header]
    lines.append(("input", "", "x".join(map(str, table.spec.input)), "", ""))
    for r in table.rows:
        lines.append((r.name, r.op, "x".join(map(str, r.shape)), f"{r.params:,}", human(r.flops)))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
           for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    out.append("")
    out.append(f"spatial: {table.spatial_chain}   params: {table.params:,}   FLOPs: "
               f"{human(table.flops)} ({table.flops:,})   peak activations: "
               f"{human(table.peak_activation_bytes)}B per image")
    return "\n".join(out)


def table_json(table: ShapeTable) -> dict:
    return {
        "summary": table.spec.summary,
        "digest": table.spec.digest,
        "input": list(table.spec.input),
        "output_shape": list(table.output_shape),
        "spatial_chain": table.spatial_chain,
        "params": table.params,
        "flops": table.flops,
        "peak_activation_bytes": table.peak_activation_bytes,
        "rows": [{"name": r.name, "op": r.op, "shape": list(r.shape), "params": r.params,
                  "flops": r.flops} for r in table.rows],
    }
