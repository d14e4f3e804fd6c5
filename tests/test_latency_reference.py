"""Drift-robust latency (issue 23, item 4): the reference network, the interleaved protocol
and its scaled figure, in process and through a latency server; the recipe's setting."""

import hashlib
import math
import subprocess
import sys

import pytest
import torch

from cnnsearch import ArchSpec, build
from cnnsearch import latency_server as ls
from cnnsearch.latency import measure
from cnnsearch.latency_reference import REFERENCE_SHA256, REFERENCE_SHAPE, reference_model
from cnnsearch.latency_remote import LatencyServerError, measure_remote
from cnnsearch.recipe import changed_meaning, load_recipe
from tests.conftest import ROOT
from tests.study_helpers import write_recipe
from tests.test_latency_server import FAST, SPEC, TOKEN, ask, model_bytes, server  # noqa: F401 (a fixture)

ort = pytest.importorskip("onnxruntime")


def test_the_reference_is_the_same_bytes_everywhere_a_valid_onnx_model_and_needs_no_torch():
    body = reference_model()
    assert hashlib.sha256(body).hexdigest() == REFERENCE_SHA256  # a change of it is a change of every figure
    onnx = pytest.importorskip("onnx")
    onnx.checker.check_model(onnx.load_from_string(body), full_check=True)
    session = ort.InferenceSession(body, providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": torch.ones(REFERENCE_SHAPE).numpy()})[0].shape == (1, 10)
    ls.check_model(body)  # what a server accepts
    code = ("import sys, importlib.util; sys.modules['torch'] = None; "
            f"spec = importlib.util.spec_from_file_location('r', {str(ROOT / 'cnnsearch' / 'latency_reference.py')!r}); "
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); "
            "import hashlib; print(hashlib.sha256(m.reference_model()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == REFERENCE_SHA256


class DriftingClock:
    """time for run_protocol: calls cost their work times the host's slowness, which drifts
    (1x to 2x and back over ~6 s), as a machine whose speed changes would."""

    def __init__(self):
        self.ns = 0

    def slowness(self) -> float:
        return 1.5 + 0.5 * math.sin(self.ns / 1e9)

    def work(self, ms: float) -> None:
        self.ns += round(ms * 1e6 * self.slowness())

    def perf_counter_ns(self) -> int:
        return self.ns

    def perf_counter(self) -> float:
        return self.ns / 1e9

    def sleep(self, s: float) -> None:
        self.ns += round(s * 1e9)


def test_interleaved_with_the_reference_a_drifting_host_gives_the_same_figure(monkeypatch):
    clock = DriftingClock()
    monkeypatch.setattr(ls, "time", clock)
    candidate, reference = (lambda: clock.work(1.0)), (lambda: clock.work(0.25))
    figures, raw = [], []
    calibration = ls.calibrate(reference)
    for _ in range(5):
        clock.ns += 1_300_000_000  # another moment of the drift
        per_round, group, settled, refs = ls.run_protocol(candidate, reference=reference)
        assert len(refs) == 3 and [len(r) for r in refs] == [len(s) for s in per_round]
        found = ls.summary(per_round, group, settled, refs, calibration)
        figures.append(found["median_ms"])
        raw.append(found["raw_median_ms"])
        assert found["reference_calibration_ms"] == calibration and found["reference_ms"] > 0 and settled
    assert max(raw) / min(raw) - 1 > 0.2  # the raw figure drifts with the host...
    assert max(figures) / min(figures) - 1 < 0.02  # ... the scaled one does not
    assert figures[0] == pytest.approx(4 * calibration, rel=0.02)  # the candidate does 4x the reference's work


def test_without_a_reference_the_protocol_and_its_summary_are_as_before(monkeypatch):
    clock = DriftingClock()
    monkeypatch.setattr(ls, "time", clock)
    per_round, group, settled, refs = ls.run_protocol(lambda: clock.work(1.0))
    assert refs == []
    found = ls.summary(per_round, group, settled)
    assert "raw_median_ms" not in found and found["median_ms"] == min(found["round_medians_ms"])


def test_measure_with_the_reference_in_process_records_the_raw_and_reference_figures():
    spec = ArchSpec.from_dict(SPEC)
    model = build(spec)
    lat = measure(model, spec.input, reference=True, **FAST)
    again = measure(model, spec.input, reference=True, runtime="onnxruntime", **FAST)
    assert lat.raw_median_ms > 0 and lat.reference_ms > 0 and lat.reference_calibration_ms > 0
    assert again.reference_calibration_ms == lat.reference_calibration_ms  # once per process and thread count
    assert lat.median_ms == pytest.approx(lat.to_dict()["median_ms"]) and "raw_median_ms" in lat.to_dict()
    plain = measure(model, spec.input, **FAST)
    assert plain.raw_median_ms is None and plain.reference_calibration_ms is None
    with pytest.raises(ValueError, match="reference: times on the cpu only"):
        measure(model, spec.input, device="cuda", reference=True)


def test_the_server_times_a_reference_sent_before_the_model_and_calibrates_it_once(server):  # noqa: F811
    ref, body = reference_model(), model_bytes()
    status, got = ask(server, f"/measure?shape=1,1,8,8&reference={len(ref)}", ref + body)
    assert status == 200, got
    assert got["raw_median_ms"] > 0 and got["reference_ms"] > 0 and got["reference_calibration_ms"] > 0
    status, again = ask(server, f"/measure?shape=1,1,8,8&reference={len(ref)}", ref + body)
    assert again["reference_calibration_ms"] == got["reference_calibration_ms"]
    for split, why in (("x", "reference: 'x'"), (str(len(ref) + len(body)), "must be the length"),
                       (str(len(ref) // 2), "not an ONNX model")):
        status, bad = ask(server, f"/measure?shape=1,1,8,8&reference={split}", ref + body)
        assert status == 400 and why in bad["error"], bad
    spec = ArchSpec.from_dict(SPEC)
    lat = measure_remote(build(spec), spec.input, server=server, reference=True)
    assert lat.reference_calibration_ms == got["reference_calibration_ms"] and lat.raw_median_ms > 0


def test_a_server_that_ignores_the_reference_is_a_clear_error_not_retried(monkeypatch):
    answer = {"median_ms": 1.0, "iqr_ms": 0.1, "runs": 30, "calls_per_run": 5, "settled": True, "rounds": 3,
              "round_medians_ms": [1.0] * 3, "fingerprint": {}}
    monkeypatch.setattr("cnnsearch.latency_remote.call", lambda *a, **k: answer)
    spec = ArchSpec.from_dict(SPEC)
    with pytest.raises(LatencyServerError, match="no reference figures") as info:
        measure_remote(build(spec), spec.input, server="http://127.0.0.1:9", reference=True)
    assert not info.value.retry


def test_reference_is_off_by_default_written_out_it_changes_nothing_and_switching_it_is_refused(tmp_path):
    for d in "abc":
        (tmp_path / d).mkdir()
    plain = load_recipe(write_recipe(tmp_path / "a", extra="[latency]\n"))
    explicit = load_recipe(write_recipe(tmp_path / "b", extra="[latency]\nreference = false\n"))
    scaled = load_recipe(write_recipe(tmp_path / "c", extra="[latency]\nreference = true\n"))
    assert plain.latency.reference is False
    # a study made before the setting existed (no such key stored) resumes under the default
    assert plain.fingerprint() == explicit.fingerprint() and changed_meaning(plain, explicit) == []
    assert changed_meaning(plain, scaled) == ["latency.reference: False -> True"]
    assert scaled.fingerprint() != plain.fingerprint()


def test_a_study_with_reference_records_the_scaled_raw_and_reference_figures(tmp_path):
    from tests.study_helpers import run_recipe

    recipe = load_recipe(write_recipe(tmp_path, extra="[latency]\nreference = true\n", epochs=1, trials=2))
    study = run_recipe(recipe, until=2)
    timed = [t.user_attrs for t in study.trials if "latency_ms" in t.user_attrs]
    assert timed
    for attrs in timed:
        lat = attrs["latency"]
        assert lat["raw_median_ms"] > 0 and lat["reference_ms"] > 0 and lat["reference_calibration_ms"] > 0
        assert attrs["latency_ms"] > 0
    assert study.user_attrs["recipe"]["latency"]["reference"] is True


def test_varints_set_the_continuation_bit_only_past_seven_bits():
    from cnnsearch.latency_reference import _pb
    assert _pb((1, 127)) == b"\x08\x7f"
    assert _pb((1, 128)) == b"\x08\x80\x01"
    assert _pb((2, "ab")) == b"\x12\x02ab"
    assert _pb((1, -1)) == b"\x08" + b"\xff" * 9 + b"\x01"
