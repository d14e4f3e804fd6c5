"""On a real (small) study: the HTML report in headless Chromium, and export --trial."""

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
import torch
from playwright.sync_api import sync_playwright
from safetensors.torch import load_file, save_file

from cnnsearch import ArchSpec, build
from cnnsearch.data import load_data
from cnnsearch.recipe import load_recipe
from tests.conftest import ROOT, run_cli
from tests.study_helpers import load, write_recipe

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    recipe = write_recipe(tmp, name="small", trials=8, epochs=3)
    result = run_cli("search", str(recipe))
    assert result.returncode == 0, result.stderr
    second = write_recipe(tmp, name="other", trials=4, epochs=2)  # a second study to compare
    assert run_cli("search", str(second)).returncode == 0
    return tmp


@pytest.mark.slow
def test_report_in_headless_chromium(study_dir):
    out = study_dir / "report.html"
    result = run_cli("report", str(study_dir / "small.toml"), str(study_dir / "other.toml"), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert (study_dir / "report_small.csv").exists() and (study_dir / "report_other.csv").exists()
    page_text = out.read_text()
    assert not re.findall(r"<script[^>]*\bsrc=", page_text)  # plotly.js inlined; any fetch fails below
    trained = {name: sum(t.user_attrs.get("status") == "ok" for t in load(study_dir / f"{name}.toml", name).trials)
               for name in ("small", "other")}
    errors = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 1400})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.route("http*://**", lambda route: (errors.append(f"network: {route.request.url}"), route.abort()))
        page.goto(out.as_uri())
        page.wait_for_selector("#pareto .scatterlayer .trace path.point")
        drawn = page.evaluate("""() => {
            // each drawn trace's element carries its trace (legend-only traces are not drawn)
            const counts = {};
            document.querySelectorAll('#pareto .scatterlayer .trace').forEach(el => {
                const trace = el.__data__[0].trace;
                if (trace.meta && trace.meta.role === 'trained') {
                    counts[trace.meta.study] = el.querySelectorAll('path.point').length;
                }
            });
            return counts;
        }""")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report.png"))
        browser.close()
    assert drawn == trained, (drawn, trained)
    assert errors == []
    assert "Pareto-optimal architectures" in page_text and "trial " in page_text


@pytest.mark.slow
def test_report_cli_errors(tmp_path):
    result = run_cli("report")
    assert result.returncode == 2 and result.stderr.startswith("error: give one or more recipes")
    result = run_cli("report", str(tmp_path / "missing.toml"))
    assert result.returncode == 2 and "cannot read" in result.stderr


CHILD = textwrap.dedent("""
    import importlib.util, json, sys
    import torch
    from safetensors.torch import load_file
    sys.modules["cnnsearch"] = None  # the exported module must not need it
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("model", sys.argv[1])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Net()
    assert model.classes == [str(c) for c in range(10)] and model.input_size == (1, 8, 8)
    model.load_state_dict(load_file(sys.argv[2]), strict=True)
    model.eval()
    data = load_file(sys.argv[3])
    with torch.no_grad():
        correct = (model(data["x"]).argmax(1) == data["y"]).sum().item()
    print(json.dumps({"accuracy": correct / len(data["y"]), "n": len(data["y"])}))
""")


@pytest.mark.parametrize("which", ["best", "fastest"])
def test_export_trial_loads_strictly_and_reproduces_its_accuracy(study_dir, tmp_path, which):
    recipe = study_dir / "small.toml"
    model, weights = tmp_path / "model.py", tmp_path / "model.safetensors"
    result = run_cli("export", str(recipe), "--trial", which, "-o", str(model), "--weights", str(weights))
    assert result.returncode == 0, result.stderr
    number = int(result.stdout.split("trial ")[1].split()[0])
    trial = load(recipe, "small").trials[number]
    r = load_recipe(recipe)
    data = load_data(r.dataset, **r.data)
    # the user's raw images: digits' pixels / 16 in [0, 1] (undo our normalisation, then snap
    # to the 1/16 grid the raw pixels live on); the exported module normalises them itself
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    raw = torch.round((data.x_val * std + mean) * 16) / 16
    assert raw.min() >= 0 and raw.max() <= 1
    val = tmp_path / "val.safetensors"
    save_file({"x": raw.contiguous(), "y": data.y_val}, str(val))
    child = subprocess.run([sys.executable, "-I", "-c", CHILD, str(model), str(weights), str(val)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert child.returncode == 0, child.stderr
    got = json.loads(child.stdout)
    # same network, same weights, same split; only float summation order may differ (channels_last
    # during training), which could flip a near-tie: allow at most one image
    assert abs(got["accuracy"] - trial.user_attrs["accuracy"]) <= 1 / got["n"] + 1e-12, (got, trial.user_attrs)


@pytest.mark.slow
def test_export_trial_by_storage_and_study(study_dir, tmp_path):
    url = f"sqlite:///{study_dir / 'small.db'}"
    study = optuna.load_study(study_name="small", storage=url)
    number = next(t.number for t in study.trials if t.user_attrs.get("status") == "ok")
    result = run_cli("export", "--storage", url, "--study", "small", "--trial", str(number),
                     "-o", str(tmp_path / "m.py"), "--weights", str(tmp_path / "m.safetensors"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "m.safetensors").stat().st_size > 0
    other = next(t.number for t in study.trials if t.user_attrs.get("status") == "ok" and t.number != number)
    again = run_cli("export", "--storage", url, "--study", "small", "--trial", str(other),
                    "-o", str(tmp_path / "m.py"), "--weights", str(tmp_path / "m.safetensors"))
    assert again.returncode == 0, again.stderr  # a second export overwrites, as the demo run twice does
    want = build(ArchSpec.from_dict(study.trials[other].user_attrs["arch"])).state_dict()
    assert {k: v.shape for k, v in load_file(tmp_path / "m.safetensors").items()} == {
        k: v.shape for k, v in want.items()}
    bad = run_cli("export", "--storage", url, "--study", "small", "--trial", "nope", "-o", str(tmp_path / "x.py"))
    assert bad.returncode == 2 and "--trial: expected best, fastest or a trial number" in bad.stderr
    assert Path(tmp_path / "m.py").read_text().startswith('"""Net: a CNN classifier for 1x8x8 images')
