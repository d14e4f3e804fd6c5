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


def _public_callables():
    """Every public function of ``cnnsearch.__all__`` and every public method of its classes."""
    import inspect

    for name in cnnsearch.__all__:
        obj = getattr(cnnsearch, name)
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj) and not issubclass(obj, Exception):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                fn = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
                fn = fn.fget if isinstance(fn, property) else fn
                if inspect.isfunction(fn):
                    yield f"{name}.{attr}", fn


def test_the_public_api_documents_its_arguments_returns_and_errors():
    """Google style: a function that takes arguments lists each under ``Args:``, says what it
    gives under ``Returns:``, and one that raises ours names them under ``Raises:``."""
    import inspect

    problems = []
    for name, fn in _public_callables():
        doc = inspect.getdoc(fn) or ""
        if not doc:
            problems.append(f"{name}: no docstring")
            continue
        params = [p for p in inspect.signature(fn).parameters if p not in ("self", "cls")]
        if params:
            args = doc.split("Args:", 1)[1].split("Returns:", 1)[0] if "Args:" in doc else ""
            problems += [f"{name}: Args: lacks {p}" for p in params if f"{p}:" not in args]
            if "Returns:" not in doc:
                problems.append(f"{name}: no Returns:")
            if "raise " in inspect.getsource(fn) or name in ("build", "check", "to_source", "ArchSpec.from_dict"):
                if "Raises:" not in doc:
                    problems.append(f"{name}: no Raises:")
    assert not problems, problems
    assert {"build", "check", "to_source", "load_space", "open_study", "trials_frame",
            "ArchSpec.from_dict", "ArchSpec.from_json"} <= {n for n, _ in _public_callables()}
