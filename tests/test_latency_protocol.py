"""The latency protocol on a scripted clock: a fake model advances a fake timer by known
amounts per call, so warm-up length, group size, the samples, their statistics, the
settling rule, the time cap and the thread count are all derivable by hand."""

import os
import platform

import numpy as np
import pytest
import torch
from torch import nn

from cnnsearch import latency, latency_server
from cnnsearch.latency import device_name, fingerprint, measure

MS = 1_000_000  # ns


class Clock:
    def __init__(self):
        self.ns = 0
        self.slept = []

    def perf_counter(self):
        return self.ns / 1e9

    def perf_counter_ns(self):
        return self.ns

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.ns += round(seconds * 1e9)


class Scripted(nn.Module):
    """Each call takes `warm` ns during the first `warmup_calls` calls, then `groups[j % len]`
    ns per call in timed group j of `group` calls; records what each call saw."""

    def __init__(self, clock, warm, warmup_calls, group, groups):
        super().__init__()
        self.clock, self.warm, self.warmup_calls, self.group, self.groups = clock, warm, warmup_calls, group, groups
        self.calls, self.seen = 0, set()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        self.seen.add((self.training, torch.is_inference_mode_enabled(), torch.get_num_threads(), tuple(x.shape)))
        if self.calls < self.warmup_calls:
            self.clock.ns += self.warm
        else:
            j = (self.calls - self.warmup_calls) // self.group
            self.clock.ns += self.groups[j % len(self.groups)]
        self.calls += 1
        return x


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(latency_server, "time", c)
    return c


def quartiles(samples):
    return np.percentile(samples, [25, 50, 75])  # linear interpolation: the inclusive method


def test_steady_model_settles_at_the_first_check(clock):
    model = Scripted(clock, warm=2 * MS, warmup_calls=50, group=2, groups=[2 * MS])
    lat = measure(model, (3, 4, 4), batch_size=2, threads=3, warmup_s=0.1, min_runs=25, lock=False, rounds=1)
    # 50 warm-up calls of 2 ms fill 0.1 s; groups of round(5 ms / 2 ms) = 2 calls
    assert lat.calls_per_run == 2 and lat.runs == 30 and lat.settled  # checks every 10 runs from min_runs on
    assert lat.median_ms == pytest.approx(2.0) and lat.iqr_ms == pytest.approx(0.0)
    assert model.calls == 50 + 30 * 2
    assert model.seen == {(False, True, 3, (2, 3, 4, 4))}  # eval, inference mode, the thread count, the batch
    assert torch.get_num_threads() == 1 and model.training  # both restored
    assert lat.batch_size == 2 and lat.runtime == "torch" and lat.fingerprint["threads"] == 3
    assert lat.to_dict()["median_ms"] == lat.median_ms


def test_the_model_is_timed_on_the_device_asked_for():
    moved = []

    class Net(nn.Sequential):
        def to(self, *args, **kwargs):
            moved.append(args)
            return super().to(*args, **kwargs)

    measure(Net(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2), device="cpu", warmup_s=0.0, min_runs=3, max_runs=5,
            lock=False, rounds=1)
    assert moved == [(torch.device("cpu"),)]


def test_a_spread_at_the_limit_settles_and_above_it_does_not(clock):
    # groups alternate 1 ms and 3 ms per call: median 2, IQR 2, so IQR/median = 1
    model = Scripted(clock, warm=MS, warmup_calls=3, group=5, groups=[MS, 3 * MS])
    lat = measure(model, (1, 2, 2), warmup_s=0.0, min_runs=30, rel_iqr=1.0, lock=False, rounds=1)
    assert lat.settled and lat.runs == 30 and model.calls == 3 + 30 * 5  # three warm-up calls at the least
    assert (lat.median_ms, lat.iqr_ms) == pytest.approx((2.0, 2.0))
    clock.ns = 0
    model = Scripted(clock, warm=MS, warmup_calls=3, group=5, groups=[MS, 3 * MS])
    lat = measure(model, (1, 2, 2), warmup_s=0.0, min_runs=30, rel_iqr=0.99, max_runs=45, time_cap_s=100.0,
                  lock=False, rounds=1)
    assert not lat.settled and lat.runs == 45 and model.calls == 3 + 45 * 5  # max_runs ends it


def test_min_runs_is_shared_among_the_rounds_with_ten_at_the_least():
    """A steady timer settles at the first check (every 10 samples) past each round's share."""
    for rounds, per_round in ((1, [30]), (2, [20, 20]), (3, [10, 10, 10]), (4, [10, 10, 10, 10])):
        result, _, settled, _ = latency_server.run_protocol(lambda: None, warmup_s=0.0, min_runs=30, rounds=rounds,
                                                            pause_s=0.0, timed_group=lambda n: 1.0)
        assert settled and [len(r) for r in result] == per_round, rounds


def test_statistics_come_from_the_samples(clock):
    # every timed group slower than the last: never settles; stopped by the time cap
    groups = [MS + j * MS // 10 for j in range(200)]  # 1.0, 1.1, 1.2, ... ms per call
    model = Scripted(clock, warm=MS, warmup_calls=100, group=5, groups=groups)
    lat = measure(model, (1, 2, 2), warmup_s=0.1, min_runs=30, time_cap_s=0.5, lock=False, rounds=1)
    # at 30 samples 0.3675 s have passed, at 40 samples 0.59 s: the cap (0.5 s) ends it there
    assert not lat.settled and lat.runs == 40 and lat.calls_per_run == 5
    samples = [g / MS for g in groups[:40]]
    q1, med, q3 = quartiles(samples)
    assert lat.median_ms == pytest.approx(med) and lat.iqr_ms == pytest.approx(q3 - q1)


def test_the_defaults(clock):
    torch.set_num_threads(2)
    try:
        # warm-up calls of 1.25 ms: 80 fill the default 0.1 s, groups of 4 calls; groups then
        # alternate 1.0 and 2.1 ms per call (IQR/median 0.7: never within the default 10%)
        model = Scripted(clock, warm=1_250_000, warmup_calls=80, group=4, groups=[MS, 2_100_000])
        lat = measure(model, (1, 2, 2), lock=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    # 3 rounds, each with a third of the 3 s cap: 12.4 ms per pair of samples (4 and 8.4 ms), so each round
    # is past 1 s at its check at 170 samples (1.054 s; 0.992 s at 160)
    assert lat.rounds == 3 and lat.calls_per_run == 4 and lat.runs == 3 * 170 and not lat.settled
    assert clock.slept == [0.02, 0.02]  # a pause between rounds
    assert model.calls == 80 + 3 * 170 * 4 + 2 * 4  # and one untimed group after each pause
    assert model.seen == {(False, True, 1, (1, 1, 2, 2))}  # one thread, batch 1 by default
    q1, med, q3 = quartiles([1.0, 2.1] * 85)
    assert lat.round_medians_ms == pytest.approx([med] * 3)
    assert lat.median_ms == pytest.approx(med) and lat.iqr_ms == pytest.approx(q3 - q1)


def test_the_figure_is_the_lowest_round_median(clock):
    # groups of 2 calls; per call: round 1 at 2 ms, (untimed), round 2 at 3 ms: a burst of load
    # elsewhere, (untimed), round 3 at 2.2 ms; each round steady: settled at its first check
    groups = [2 * MS] * 10 + [MS] + [3 * MS] * 10 + [MS] + [2_200_000] * 10
    model = Scripted(clock, warm=2 * MS, warmup_calls=3, group=2, groups=groups)
    lat = measure(model, (1, 2, 2), warmup_s=0.0, min_runs=30, pause_s=0.5, lock=False)
    assert lat.runs == 30 and lat.settled and clock.slept == [0.5, 0.5]
    assert lat.round_medians_ms == pytest.approx([2.0, 3.0, 2.2])
    assert lat.median_ms == pytest.approx(2.0) and lat.iqr_ms == pytest.approx(0.0)
    assert model.calls == 3 + 30 * 2 + 2 * 2


def test_rounds_share_the_budget_and_settle_on_their_own(clock):
    # round 1 alternates 1 and 3 ms per call (never settles: IQR/median 1); rounds 2 and 3 steady
    groups = [MS, 3 * MS] * 10 + [MS] + [MS] * 10 + [MS] + [MS] * 10
    model = Scripted(clock, warm=MS, warmup_calls=3, group=5, groups=groups)
    lat = measure(model, (1, 2, 2), warmup_s=0.0, min_runs=30, max_runs=60, time_cap_s=100.0, lock=False)
    # 30 runs at the least (10 per round), at most 60 (20 per round): round 1 stops at 20
    assert lat.runs == 20 + 10 + 10 and not lat.settled
    assert lat.round_medians_ms == pytest.approx([2.0, 1.0, 1.0]) and lat.median_ms == pytest.approx(1.0)


@pytest.mark.parametrize(("per_call", "group"), [(20 * MS, 1), (1000, 1000)])
def test_group_size_is_clamped(clock, per_call, group):
    model = Scripted(clock, warm=per_call, warmup_calls=10 ** 9, group=1, groups=[per_call])
    lat = measure(model, (1, 2, 2), warmup_s=0.001, min_runs=10, lock=False, rounds=1)
    assert lat.calls_per_run == group and lat.settled and lat.runs == 10
    assert lat.median_ms == pytest.approx(per_call / MS)


def test_unknown_runtime_and_onnxruntime_on_cuda_are_refused():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="'tflite'.*torch, onnxruntime"):
        measure(model, (2,), runtime="tflite")
    with pytest.raises(ValueError, match="cpu only"):
        measure(model, (2,), device="cuda", runtime="onnxruntime")


def test_fingerprint_names_what_makes_numbers_comparable():
    found = fingerprint(torch.device("cpu"), 3)
    assert found == {"device": "cpu", "name": device_name(torch.device("cpu")), "torch": torch.__version__,
                     "threads": 3, "cpus": os.cpu_count(), "runtime": "torch", "os": platform.system(),
                     "arch": platform.machine()}


def test_cpu_name_is_the_model_name_from_cpuinfo():
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    if not names:
        pytest.skip("no model name in /proc/cpuinfo")
    assert device_name(torch.device("cpu")) == names[0]


def test_onnxruntime_session_honours_the_thread_count():
    pytest.importorskip("onnxruntime")
    from cnnsearch.latency import onnx_session

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3)).eval()
    x = torch.randn(2, 1, 4, 4)
    session = onnx_session(model, x, threads=2)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    import onnxruntime as ort

    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert session.get_providers() == ["CPUExecutionProvider"]
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert np.allclose(out, model(x).numpy(), atol=1e-5)


def test_onnxruntime_measure_passes_its_threads_and_input(monkeypatch):
    pytest.importorskip("onnxruntime")
    seen = []
    real = latency.onnx_session

    def spy(model, x, threads):
        seen.append((tuple(x.shape), threads))
        return real(model, x, threads)

    monkeypatch.setattr(latency, "onnx_session", spy)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    lat = measure(model, (1, 2, 2), batch_size=3, threads=2, runtime="onnxruntime", warmup_s=0.0, min_runs=10,
                  time_cap_s=0.05, lock=False)
    assert seen == [((3, 1, 2, 2), 2)] and lat.fingerprint["threads"] == 2
    assert lat.fingerprint["runtime"] == lat.runtime == "onnxruntime"
    import onnxruntime

    assert lat.fingerprint["onnxruntime"] == onnxruntime.__version__  # a new onnxruntime: not comparable


@pytest.mark.parametrize("rounds", [0, -1])
def test_rounds_below_one_are_refused(rounds):
    with pytest.raises(ValueError, match=f"rounds {rounds} must be >= 1"):
        measure(nn.Linear(2, 2), (2,), rounds=rounds, lock=False)


def test_rounds_share_max_runs_in_whole_samples(clock):
    # alternating 1 and 3 ms per call never settles; max_runs 35 over 3 rounds: 11 each
    model = Scripted(clock, warm=MS, warmup_calls=3, group=5, groups=[MS, 3 * MS])
    lat = measure(model, (1, 2, 2), warmup_s=0.0, min_runs=30, max_runs=35, time_cap_s=100.0, lock=False)
    assert lat.runs == 3 * 11 and not lat.settled


def test_the_cpu_name_is_everything_after_the_first_colon(monkeypatch):
    import io

    def fake_open(path, *args, **kwargs):
        assert path == "/proc/cpuinfo"
        return io.StringIO("processor\t: 0\nmodel name\t: Vendor: Model 9 @ 2.0GHz\n")

    monkeypatch.setattr(latency_server, "open", fake_open, raising=False)
    assert device_name(torch.device("cpu")) == "Vendor: Model 9 @ 2.0GHz"


def test_the_cpu_name_is_the_model_name_where_there_is_one_else_a_boards(monkeypatch):
    import io

    for text, name in (("model name\t: Xeon\nHardware\t: BCM2835\nModel\t: Pi 4\n", "Xeon"),  # the first wins
                       ("Hardware\t: BCM2835\nModel\t: Raspberry Pi 4 Model B\n", "Raspberry Pi 4 Model B")):
        monkeypatch.setattr(latency_server, "open", lambda path, *a, text=text, **k: io.StringIO(text), raising=False)
        assert latency_server.cpu_name() == name


def test_the_lowest_median_wins_even_over_a_tighter_round(clock):
    # round 1 alternates 1 and 3 ms (median 2, upper quartile 3), round 2 a steady 2.2 ms,
    # round 3 a steady 2.5 ms; a wide rel_iqr lets every round settle at its first check
    groups = [MS, 3 * MS] * 5 + [MS] + [2_200_000] * 10 + [MS] + [2_500_000] * 10
    model = Scripted(clock, warm=MS, warmup_calls=3, group=5, groups=groups)
    lat = measure(model, (1, 2, 2), warmup_s=0.0, min_runs=30, rel_iqr=10.0, lock=False)
    assert lat.settled and lat.round_medians_ms == pytest.approx([2.0, 2.2, 2.5])
    q1, med, q3 = quartiles([1.0, 3.0] * 5)
    assert lat.median_ms == pytest.approx(2.0) and lat.iqr_ms == pytest.approx(q3 - q1)


def test_a_steady_model_at_the_defaults_takes_ten_samples_a_round(clock):
    model = Scripted(clock, warm=MS, warmup_calls=100, group=5, groups=[MS])
    lat = measure(model, (1, 2, 2), lock=False)
    # 100 warm-up calls of 1 ms fill the default 0.1 s; 30 runs at the least, 10 in each of
    # 3 rounds, each settled (IQR 0) at its first check
    assert lat.settled and lat.runs == 30 and lat.round_medians_ms == pytest.approx([1.0] * 3)


def test_without_a_model_name_the_cpu_is_named_by_platform(monkeypatch):
    import io

    monkeypatch.setattr(latency_server, "open", lambda path, *a, **k: io.StringIO("processor\t: 0\n"), raising=False)
    monkeypatch.setattr(latency_server.platform, "processor", lambda: "")
    monkeypatch.setattr(latency_server.platform, "machine", lambda: "aarch64")
    assert device_name(torch.device("cpu")) == "aarch64"
    monkeypatch.setattr(latency_server.platform, "processor", lambda: "arm")
    assert device_name(torch.device("cpu")) == "arm"
