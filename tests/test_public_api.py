"""The public API as DESIGN.md writes it, end to end."""

import optuna

import cnnsearch
from tests.conftest import ROOT, SPECS


def test_design_api_round_trip():
    spec = cnnsearch.ArchSpec.from_json(SPECS / "tutorial_cnn64.json")
    table = cnnsearch.check(spec)
    assert table.output_shape == (5,) and table.params == 175_085 and table.flops == 12_498_500
    assert [r.name for r in table.rows][:3] == ["conv1", "act1", "pool1"]
    model = cnnsearch.build(spec)
    assert sum(p.numel() for p in model.parameters()) == table.params
    assert "class Net(nn.Module):" in cnnsearch.to_source(spec)
    space = cnnsearch.load_space(ROOT / "spaces" / "compact.toml")
    trial = optuna.create_study().ask()
    sampled = space.sample(trial, input=(3, 32, 32), num_classes=10)
    assert isinstance(sampled, cnnsearch.ArchSpec) and sampled.num_classes == 10
    assert issubclass(cnnsearch.ShapeError, cnnsearch.CnnSearchError)
    assert {"SpecError", "SpaceError", "RecipeError", "DataError"} <= set(cnnsearch.__all__)
