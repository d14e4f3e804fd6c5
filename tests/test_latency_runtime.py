"""Latency in the deployment runtime: onnxruntime, same protocol, recorded; optional."""

import subprocess
import sys

import pytest
import torch

from cnnsearch import ArchSpec, RecipeError, build
from cnnsearch.latency import measure, onnx_export, onnx_session
from cnnsearch.recipe import check_runnable, load_recipe
from tests.conftest import ROOT
from tests.study_helpers import load, run_recipe, write_recipe
from tests.test_blocks import MOBILE_SPECS


def test_onnxruntime_session_computes_the_model_and_is_timed_by_the_same_protocol():
    spec = ArchSpec.from_dict(MOBILE_SPECS[0])
    model = build(spec).eval()
    x = torch.randn(1, *spec.input)
    session = onnx_session(model, x, threads=1)
    assert session.get_session_options().intra_op_num_threads == 1
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert abs(got - model(x).numpy()).max() <= 1e-4
    lat = measure(model, spec.input, runtime="onnxruntime", time_cap_s=0.5)
    eager = measure(model, spec.input, time_cap_s=0.5)
    assert lat.runtime == lat.fingerprint["runtime"] == "onnxruntime" and "onnxruntime" in lat.fingerprint
    assert eager.runtime == eager.fingerprint["runtime"] == "torch" and "onnxruntime" not in eager.fingerprint
    assert lat.runs >= 30 and lat.median_ms > 0 and lat.calls_per_run >= 1
    assert model.training is False and lat.to_dict()["runtime"] == "onnxruntime"
    with pytest.raises(ValueError, match="runtime 'tensorrt' is not one of torch, onnxruntime"):
        measure(model, spec.input, runtime="tensorrt")


@pytest.mark.parametrize("latency, message", [
    ('runtime = "tensorrt"', "latency.runtime: 'tensorrt' is not one of torch, onnxruntime"),
    ('runtime = "onnxruntime"\ndevice = "cuda"', "latency.runtime: 'onnxruntime' times on the cpu only"),
    ("runtime = 1", "latency.runtime: expected a string, got 1"),
    ("engine = 1", "latency.engine: unknown key (allowed: device, batch_size, threads, runtime, server, reference)"),
    ('reference = "yes"', "latency.reference: expected true or false, got 'yes'"),
    ('reference = true\ndevice = "cuda"', "latency.reference: the reference network runs on the cpu only"),
])
def test_bad_runtime_is_a_recipe_error(tmp_path, latency, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_recipe(write_recipe(tmp_path, extra=f"[latency]\n{latency}\n"))


def test_missing_onnxruntime_is_refused_before_the_study_exists(tmp_path, monkeypatch):
    recipe = write_recipe(tmp_path, extra='[latency]\nruntime = "onnxruntime"\n')
    check_runnable(load_recipe(recipe))  # installed here: fine
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(RecipeError, match=r"latency.runtime: onnxruntime is not installed: "
                                          r"pip install 'cnnsearch\[onnx\]'"):
        check_runnable(load_recipe(recipe))
    code = ("import sys; sys.modules['onnxruntime'] = None; from cnnsearch.cli import main; "
            f"sys.exit(main(['search', {str(recipe)!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert "pip install 'cnnsearch[onnx]'" in result.stderr
    assert not list(tmp_path.glob("*.db"))


def test_a_trial_records_the_runtime_it_was_timed_in(tmp_path):
    path = write_recipe(tmp_path, trials=1, epochs=1, extra='[latency]\nruntime = "onnxruntime"\n')
    run_recipe(load_recipe(path), until=1)
    (trial,) = load(path).trials
    assert trial.user_attrs["latency"]["runtime"] == "onnxruntime"
    assert trial.user_attrs["latency"]["fingerprint"]["runtime"] == "onnxruntime"
    assert trial.user_attrs["latency_ms"] > 0


def test_the_reference_network_runs_on_onnxruntime_s_cpu_provider_without_a_fallback(monkeypatch, capfd):
    """An unknown provider name would make onnxruntime print a fallback notice on every
    worker's first measurement; the reference's session names the CPU provider it gets."""
    pytest.importorskip("onnxruntime")
    from cnnsearch import latency

    monkeypatch.setattr(latency, "_REFERENCES", {})
    call, calibration = latency._reference(1, {"warmup_s": 0.02, "min_runs": 10, "time_cap_s": 0.3})
    call()
    assert calibration > 0
    captured = capfd.readouterr()
    assert "Falling back" not in captured.out + captured.err and "Provider" not in captured.out + captured.err


def test_the_dynamo_exporter_is_the_fallback_and_is_asked_to_be_quiet(monkeypatch):
    """A model the TorchScript exporter cannot take goes to the dynamo one, with verbose=False:
    its default prints every step of the export to the worker's log. The dynamo exporter is
    stood in for by the TorchScript one here (it takes ~6 s)."""
    pytest.importorskip("onnxruntime")
    real, calls = torch.onnx.export, []

    def export(model, args, f, *, dynamo, **kwargs):
        calls.append((dynamo, kwargs.get("verbose")))
        if not dynamo:
            raise RuntimeError("the TorchScript exporter cannot export this")
        return real(model, args, f, dynamo=False, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export)
    spec = ArchSpec.from_dict({"input": [1, 8, 8], "num_classes": 3, "blocks": [{"out_channels": 4, "kernel_size": 3}]})
    onnx_bytes, session = onnx_export(build(spec).eval(), torch.randn(1, 1, 8, 8))
    assert calls == [(False, None), (True, False)] and onnx_bytes and session.get_inputs()[0].name == "x"
