"""Build a torch module from an ArchSpec, after its shapes have been checked."""

from __future__ import annotations

import torch
from torch import nn

from . import ops
from .shapes import Layer, ShapeTable, check
from .spec import ArchSpec


def make_layer(row: Layer) -> nn.Module:
    """The torch module of one shape-table row, from the ops whitelist only."""
    cls = getattr(nn, ops.module_class(row.op))
    return cls(*row.args, **dict(row.kwargs))


class Network(nn.Module):
    """A CNN whose submodules are named exactly like its shape table's rows.

    ``forward`` replays the table: most rows map ``x``; a residual block keeps its input
    in ``skip``, maps it through ``proj`` rows when shapes differ, and adds it back; a
    squeeze-excitation computes its gate ``se`` from ``x`` and scales ``x`` by it.
    """

    def __init__(self, table: ShapeTable):
        super().__init__()
        self.input_shape = table.spec.input
        self._plan = tuple((r.name, r.flow, r.saves_input) for r in table.rows)
        for row in table.rows:
            if ops.OPS[row.op].module is not None:
                self.add_module(row.name, make_layer(row))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = se = x  # pragma: no mutate (never read: a valid plan sets both before use)
        for name, flow, saves_input in self._plan:
            if saves_input:
                skip = x
            if flow == "x":
                x = self._modules[name](x)
            elif flow == "add":
                x = x + skip
            elif flow == "skip":
                skip = self._modules[name](skip)
            elif flow == "squeeze":
                se = self._modules[name](x)
            elif flow == "gate":
                se = self._modules[name](se)
            else:  # "scale"
                x = x * se
        return x


def build(spec: ArchSpec | dict) -> Network:
    """The network ``spec`` describes, as an ``nn.Module`` whose layers are the shape table's rows.

    Args:
        spec: an ``ArchSpec``, or its plain-data form (``ArchSpec.to_dict()``, a spec JSON).

    Returns:
        The module (``Network``), its weights initialised by torch's defaults under the
        current ``torch.manual_seed``.

    Raises:
        SpecError: ``spec`` is malformed (it names the field).
        ShapeError: the network cannot run on its input; raised before any tensor is made.
    """
    if isinstance(spec, dict):
        spec = ArchSpec.from_dict(spec)
    return Network(check(spec))
