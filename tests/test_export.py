"""Exported code: standalone, lint-clean, loads build(spec)'s weights, same outputs."""

import ast
import json
import subprocess
import sys
import textwrap

import onnxruntime as ort
import optuna
import pytest
import torch
from safetensors.torch import save_file

from cnnsearch import ArchSpec, ShapeError, SpecError, build, check
from cnnsearch.export import load_weights, save_weights, to_source
from cnnsearch.space import load_space
from tests.conftest import ROOT, SPACES, SPECS, load_spec, run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)
INPUTS = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def sampled_specs(n_per_space: int):
    specs = [load_spec(p.name) for p in sorted(SPECS.glob("*.json"))]
    for path in SPACES:
        space = load_space(path)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7))
        taken = 0
        while taken < n_per_space:
            trial = study.ask()
            spec = space.sample(trial, input=INPUTS[taken % 3], num_classes=10)
            study.tell(trial, 0.0)
            try:
                check(spec)
            except ShapeError:
                continue
            specs.append(spec)
            taken += 1
    return specs


CHILD = textwrap.dedent("""
    import importlib.util, json, sys
    import torch
    from safetensors.torch import load_file
    torch.set_num_threads(1)
    sys.modules["cnnsearch"] = None  # any import of cnnsearch from an exported file now fails
    results = []
    for case in json.load(open(sys.argv[1])):
        spec = importlib.util.spec_from_file_location("exported", case["py"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model = module.Net()
        model.load_state_dict(load_file(case["weights"]), strict=True)
        model.eval()
        data = load_file(case["io"])
        with torch.no_grad():
            out = model(data["x"])
        results.append(bool(torch.equal(out, data["y"])))
    assert sys.modules["cnnsearch"] is None
    print(json.dumps(results))
""")


def assert_exports_match_in_isolation(tmp_path, models, *, timeout: int = 600) -> None:
    """Each (spec, model) exported as code and weights into ``tmp_path``, lint-clean, and
    bit-identical to ``model`` on random inputs when run in ``python -I`` without cnnsearch."""
    cases = []
    for i, (spec, model) in enumerate(models):
        py, weights, io = tmp_path / f"net_{i}.py", tmp_path / f"w_{i}.safetensors", tmp_path / f"io_{i}.st"
        py.write_text(to_source(spec))
        save_weights(model, weights)
        x = torch.randn(2, *spec.input)
        with torch.no_grad():
            save_file({"x": x, "y": model(x)}, str(io))
        cases.append({"py": str(py), "weights": str(weights), "io": str(io)})
    lint = subprocess.run([sys.executable, "-m", "ruff", "check", "--isolated", "--select", "F,E9",
                           str(tmp_path)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-2000:]
    manifest = tmp_path / "cases.json"
    manifest.write_text(json.dumps(cases))
    child = subprocess.run([sys.executable, "-I", "-c", CHILD, str(manifest)], capture_output=True,
                           text=True, cwd=tmp_path, timeout=timeout)
    assert child.returncode == 0, child.stderr[-3000:]
    assert json.loads(child.stdout) == [True] * len(cases)


@pytest.mark.slow
def test_200_exports_lint_clean_import_isolated_load_strict_and_match(tmp_path):
    specs = sampled_specs(67)  # the tutorial nets + 67 from each shipped space (mobile.toml included)
    assert len(specs) >= 200
    torch.manual_seed(0)
    models = []
    for spec in specs:
        model = build(spec).eval()
        for m in model.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
        models.append((spec, model))
    assert_exports_match_in_isolation(tmp_path, models)


def test_golden_tutorial_cnn64_export():
    """The tutorial's 64x64 five-class CNN, byte for byte (tests/fixtures/)."""
    expected = (ROOT / "tests" / "fixtures" / "tutorial_cnn64_export.py").read_text()
    assert to_source(load_spec("tutorial_cnn64.json"), class_name="CNN") == expected
    assert "self.fc1 = nn.Linear(20 * 13 * 13, 50)" in expected
    assert "import torch.nn.functional as F" in expected


def test_source_is_deterministic_and_imports_only_what_it_uses():
    spec = ArchSpec.from_dict({"input": [1, 8, 8], "num_classes": 3, "blocks": [
        {"out_channels": 4, "kernel_size": 3, "activation": "none"}]})
    first, second = to_source(spec), to_source(ArchSpec.from_dict(spec.to_dict()))
    assert first == second
    assert "torch.nn.functional" not in first  # no activation: no F import
    assert "self.fc1 = nn.Linear(4 * 6 * 6, 3)" in first


@pytest.mark.parametrize("name", ["1Net", "class", "torch", "F", "Net(nn.Module):\n    import os", "N" * 65, "",
                                  "Net; import os"])
def test_hostile_class_names_are_rejected(name):
    with pytest.raises(SpecError, match="class name"):
        to_source(load_spec("tutorial_net32.json"), class_name=name)


@pytest.mark.parametrize("patch", [
    {"activation": "relu);import os;(x"}, {"padding": "same\"; import os; \""}, {"out_channels": 10**9},
    {"kernel_size": 2**40}, {"dropout": "0.1); import os; ("}, {"pool": "max\nimport os"},
])
def test_hostile_specs_fail_validation(patch):
    data = json.loads((SPECS / "tutorial_cnn64.json").read_text())
    data["blocks"][0].update(patch)
    with pytest.raises(SpecError, match=r"^blocks\[0\]\."):
        to_source(data)


@pytest.mark.slow
def test_cli_export_writes_code_and_weights_that_load_in_a_fresh_interpreter(tmp_path):
    out, weights = tmp_path / "model.py", tmp_path / "model.safetensors"
    result = run_cli("export", "--spec", str(SPECS / "tutorial_cnn64.json"), "-o", str(out),
                     "--weights", str(weights), "--class-name", "CNN")
    assert result.returncode == 0, result.stderr
    code = ("import sys, torch; sys.modules['cnnsearch'] = None; sys.path.insert(0, sys.argv[1]); from model import CNN;"
            "from safetensors.torch import load_file; m = CNN(); "
            "m.load_state_dict(load_file(sys.argv[2]), strict=True); print(tuple(m(torch.zeros(1, 3, 64, 64)).shape))")
    child = subprocess.run([sys.executable, "-I", "-c", code, str(tmp_path), str(weights)],
                           capture_output=True, text=True)
    assert child.stdout.strip() == "(1, 5)", child.stderr
    model = load_weights(build(load_spec("tutorial_cnn64.json")), weights)  # and back into build()
    torch.manual_seed(0)
    assert torch.equal(model.conv1.weight, build(load_spec("tutorial_cnn64.json")).conv1.weight)


@pytest.mark.slow
def test_cli_export_bad_inputs_exit_2(tmp_path):
    result = run_cli("export", "--spec", str(SPECS / "tutorial_cnn64.json"), "-o", str(tmp_path / "m.py"),
                     "--class-name", "import")
    assert result.returncode == 2 and result.stderr.startswith("error: class name: 'import'")
    assert not (tmp_path / "m.py").exists()
    result = run_cli("export", "--spec", str(tmp_path / "missing.json"), "-o", str(tmp_path / "m.py"))
    assert result.returncode == 2 and "cannot read" in result.stderr
    result = run_cli("export", "-o", str(tmp_path / "m.py"))
    assert result.returncode == 2 and result.stderr == (
        "error: give --spec SPEC.json, a recipe (.toml), or --storage URL --study NAME\n")


INTEROP = ["tutorial_cnn64.json", "compact_residual.json"]


@pytest.mark.parametrize("name", INTEROP)
def test_torch_export_and_onnx_match(tmp_path, name):
    spec = load_spec(name)
    path = tmp_path / "exported.py"
    path.write_text(to_source(spec))
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)  # our own generated file
    model = namespace["Net"]().eval()
    x = torch.randn(2, *spec.input)
    with torch.no_grad():
        expected = model(x)
    program = torch.export.export(model, (x,))
    assert torch.allclose(program.module()(x), expected, atol=1e-6)
    onnx_path = tmp_path / "model.onnx"
    torch.onnx.export(model, (x,), str(onnx_path), dynamo=True)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert abs(got - expected.numpy()).max() <= 1e-5


HOSTILE_CLASSES = ['cat"]; import os; os.system("x")  #', "line\nbreak", "back\\slash", "é-ü", "😀", "'''"]


def test_export_with_data_normalises_inside_carries_classes_and_runs_in_onnxruntime(tmp_path):
    spec = load_spec("compact_residual.json")
    c = spec.input[0]
    classes = (HOSTILE_CLASSES * 10)[:spec.num_classes]
    data = {"mean": [0.1 * (i + 1) for i in range(c)], "std": [0.2 + 0.05 * i for i in range(c)],
            "classes": classes}
    source = to_source(spec, data=data)
    tree = ast.parse(source)  # the hostile names stay inside string literals: nothing else appears
    imports = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert imports == {"torch", "torch.nn.functional", "nn"} and "os.system(" not in source.replace(
        "os.system(\\u0022", "")
    calls = {n.func.attr if isinstance(n.func, ast.Attribute) else n.func.id for n in ast.walk(tree)
             if isinstance(n, ast.Call)}
    assert "system" not in calls
    namespace = {}
    exec(compile(source, "exported.py", "exec"), namespace)  # our own generated file
    model = namespace["Net"]().eval()
    assert model.classes == classes and model.input_size == tuple(spec.input)
    torch.manual_seed(0)
    plain = build(spec).eval()
    model.load_state_dict(plain.state_dict(), strict=True)  # the statistics are not weights
    raw = torch.rand(2, *spec.input)  # images in [0, 1]
    mean, std = torch.tensor(data["mean"]).view(1, c, 1, 1), torch.tensor(data["std"]).view(1, c, 1, 1)
    with torch.no_grad():
        expected = plain((raw - mean) / std)
        assert torch.equal(model(raw), expected)
    onnx_path = tmp_path / "model.onnx"
    torch.onnx.export(model, (raw,), str(onnx_path), dynamo=True)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: raw.numpy()})
    assert abs(got - expected.numpy()).max() <= 1e-5
    with pytest.raises(SpecError, match="data"):
        to_source(spec, data={**data, "mean": [0.5] * (c + 1)})
