"""What the shape table must agree with: a built model measured by torch itself."""

import torch
from torch.utils.flop_counter import FlopCounterMode

from cnnsearch import build, check, ops


def measured(spec):
    """(per-row output shapes from forward hooks, params, FLOPs at batch 1, model)."""
    model = build(spec).eval()
    shapes = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(
        name, tuple(out.shape[1:]))) for name, m in model.named_children()]
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        out = model(torch.randn(1, *spec.input))
    for h in hooks:
        h.remove()
    params = sum(p.numel() for p in model.parameters())
    return shapes, params, counter.get_total_flops(), out, model


def assert_table_matches_torch(spec):
    table = check(spec)
    shapes, params, flops, out, model = measured(spec)
    named = {r.name: r for r in table.rows if ops.OPS[r.op].module is not None}
    assert list(named) == [n for n, _ in model.named_children()]
    for name, row in named.items():
        assert shapes[name] == row.shape, f"{name}: table {row.shape} != torch {shapes[name]}"
    assert table.params == params
    assert table.flops == flops
    assert tuple(out.shape[1:]) == table.output_shape == (spec.num_classes,)
    return table
