"""Inference latency with a sound protocol.

Eval mode and ``inference_mode``; warm-up first; on a GPU, CUDA events around each run
with a synchronisation; on a CPU, a fixed and recorded thread count and
``perf_counter_ns``. After the warm-up come ``rounds`` rounds, ``pause_s`` apart; in each,
runs repeat until the interquartile range is within ``rel_iqr`` of the median or the
round's share of ``time_cap_s`` passes; the result says whether every round settled. The
figure is the lowest round median: load elsewhere on the machine only ever adds time, so
a round it slowed is ignored (the spread this reaches is measured by benchmarks/latency.py:
docs/benchmarks.md). Each timed sample
groups enough calls to last about 5 ms, so the timer's own cost and scheduler jitter on
sub-millisecond models do not dominate the spread.

``runtime="onnxruntime"`` times the network where it will be deployed: exported to ONNX
(the TorchScript-based exporter, much faster per small network than the dynamo one) and
run in an onnxruntime session on the CPU with the same thread count, under the
same protocol and lock. onnxruntime is an optional dependency (``cnnsearch[onnx]``).

``reference=True`` (CPU only, onnxruntime needed) makes the figure robust to a host whose
speed drifts: a fixed reference network (``latency_reference.py``) runs in onnxruntime right
after each group of the candidate's calls, and the figure is the median of their ratios times
the reference's quiet calibration (taken once per process and thread count, under the lock:
the lowest of five round medians). The raw figure stays as ``raw_median_ms``.
"""

from __future__ import annotations

import io
import os
import platform
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .interrupt import check as check_interrupt
from .latency_server import calibrate, cpu_name, device_fingerprint, run_protocol, session_options, summary
from .quiet import device_key, quiet_machine


@dataclass
class Latency:
    median_ms: float
    iqr_ms: float
    runs: int  # timed samples over all rounds (each of `calls_per_run` forward passes)
    calls_per_run: int
    settled: bool  # in every round, IQR/median reached the target before the round's time cap
    batch_size: int
    fingerprint: dict  # device name, torch version, threads: what makes the numbers comparable
    runtime: str = "torch"  # "torch" (eager PyTorch) or "onnxruntime"
    rounds: int = 1  # median_ms is the lowest of the rounds' medians; iqr_ms is that same round's
    round_medians_ms: list = field(default_factory=list)
    server: str = ""  # the latency server that timed it (latency_remote.py); "" for this process
    raw_median_ms: float | None = None  # with a reference: the lowest round median, unscaled
    reference_ms: float | None = None  # with a reference: its median in the same window
    reference_calibration_ms: float | None = None  # ... and its quiet figure, which scales the ratio

    def to_dict(self) -> dict:
        return asdict(self)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)  # pragma: no mutate (which GPU: only a machine with several can tell)
    return cpu_name()


RUNTIMES = ("torch", "onnxruntime")
ONNX_HINT = "onnxruntime is not installed: pip install 'cnnsearch[onnx]'"


def fingerprint(device: torch.device, threads: int, runtime: str = "torch") -> dict:
    found = {
        "device": str(device),
        "name": device_name(device),
        "torch": torch.__version__,
        "threads": threads,
        "cpus": os.cpu_count(),
        "runtime": runtime,
        "os": platform.system(),
        "arch": platform.machine(),
    }
    if runtime == "onnxruntime":  # what a latency server on this machine would report
        found.update(device_fingerprint(threads))
    return found


def onnx_session(model: nn.Module, x: torch.Tensor, threads: int):
    """``model`` exported to ONNX (in memory) and opened in a CPU onnxruntime session with
    ``threads`` intra-op threads, sequential execution, all graph optimisations."""
    return onnx_export(model, x, threads)[1]


def onnx_export(model: nn.Module, x: torch.Tensor, threads: int = 1):
    """(the ONNX model's bytes, a session of it that ran ``x`` once)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError(ONNX_HINT) from None
    import warnings

    options = session_options(ort, threads)
    options.log_severity_level = 2  # onnxruntime's warnings shown here, as before
    for dynamo in (False, True):  # the TorchScript-based exporter first: fast, needs no onnxscript
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x,), buffer, dynamo=dynamo, input_names=["x"],
                                  **({"verbose": False} if dynamo else {}))
            session = ort.InferenceSession(
                buffer.getvalue(), options,
                providers=["CPUExecutionProvider"],  # pragma: no mutate (a CPU build's one provider: any name falls back to it)
            )
            session.run(None, {session.get_inputs()[0].name: x.cpu().numpy()})  # e.g. a dilated padding="same" conv, which the first cannot run
            return buffer.getvalue(), session
        except Exception:
            if dynamo:
                raise
    raise AssertionError("unreachable")  # pragma: no mutate (never reached: the loop returns or raises)


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def _machine_lock(device: str | None):
    """Hold the lock every cnnsearch process on this machine takes to time ``device``."""
    if device is None:
        yield
        return
    import fcntl
    import tempfile

    path = os.path.join(tempfile.gettempdir(), f"cnnsearch-latency-{device.replace(':', '_')}.lock")
    fd = None
    for flags in (os.O_RDONLY, os.O_RDONLY | os.O_CREAT):  # flock needs no write access
        try:
            fd = os.open(path, flags, 0o666)
            break
        except OSError:
            continue
    if fd is None:  # another user's /tmp rules, a read-only /tmp: time without the lock
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def measure(model: nn.Module, input_shape: tuple[int, ...], *, device: str | torch.device = "cpu",
            batch_size: int = 1, threads: int = 1, warmup_s: float = 0.1, min_runs: int = 30,
            max_runs: int = 2000, time_cap_s: float = 3.0, rel_iqr: float = 0.10, lock: bool = True,
            runtime: str = "torch", rounds: int = 3, pause_s: float = 0.02, reference: bool = False) -> Latency:
    """Median latency in ms of ``model`` on one batch of ``input_shape`` images. With
    ``lock``, a machine-wide file lock keeps two local workers from timing at once.
    ``runtime``: eager ``torch``, or ``onnxruntime`` (CPU only). ``reference``: scaled by the
    reference network timed beside it (CPU only; see the module's docstring)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    if rounds < 1:
        raise ValueError(f"rounds {rounds!r} must be >= 1")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if (runtime == "onnxruntime" or reference) and cuda:
        raise ValueError(f"{'reference' if reference else 'runtime onnxruntime'}: times on the cpu only")
    was_training = model.training
    model.eval().to(device)
    x = torch.randn(batch_size, *input_shape, device=device)
    if cuda:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    threads = torch.get_num_threads() if cuda else threads
    try:
        if runtime == "onnxruntime":
            session = onnx_session(model, x, threads)
            feed = {session.get_inputs()[0].name: x.numpy()}

            def call():
                session.run(None, feed)
        else:
            def call():
                model(x)
        # the lock keeps local timers apart; quiet_machine pauses local trainers meanwhile
        with _machine_lock(str(device) if lock else None), \
                quiet_machine(device_key(device)) if lock else nullcontext(), \
                _threads(threads), torch.inference_mode():
            protocol = dict(warmup_s=warmup_s, min_runs=min_runs, max_runs=max_runs, time_cap_s=time_cap_s,
                            rel_iqr=rel_iqr, rounds=rounds, pause_s=pause_s)
            ref, calibration = _reference(threads, protocol) if reference else (None, None)
            per_round, group, settled, refs = _time(call, device if cuda else None, protocol, ref)
    finally:
        model.train(was_training)
        if cuda:
            model.to(memory_format=torch.contiguous_format)
    # the lowest round median: noise from elsewhere on the machine only ever adds time
    # (timeit's advice), and a median per round already ignores a single slow group
    s = summary(per_round, group, settled, refs, calibration)
    return Latency(s["median_ms"], s["iqr_ms"], s["runs"], group, settled, batch_size,
                   fingerprint(device, threads, runtime), runtime, rounds=rounds,
                   round_medians_ms=s["round_medians_ms"], raw_median_ms=s.get("raw_median_ms"),
                   reference_ms=s.get("reference_ms"), reference_calibration_ms=calibration)


_REFERENCES: dict[int, tuple] = {}  # threads -> (one run of the reference network, its calibration in ms)


def _reference(threads: int, protocol: dict):
    """The reference network's session on ``threads`` threads and its quiet calibration,
    made once per process (under the caller's lock: no local sibling times or trains)."""
    if threads not in _REFERENCES:
        try:
            import numpy as np
            import onnxruntime as ort
        except ImportError:
            raise ImportError(ONNX_HINT) from None
        from .latency_reference import REFERENCE_SHAPE, reference_model

        session = ort.InferenceSession(reference_model(), session_options(ort, threads),
                                       providers=["CPUExecutionProvider"])
        feed = {"x": np.random.default_rng(0).standard_normal(REFERENCE_SHAPE, dtype=np.float32)}

        def call():
            session.run(None, feed)

        _REFERENCES[threads] = (call, calibrate(call, **protocol, tick=check_interrupt))
    return _REFERENCES[threads]


def _time(call, cuda: torch.device | None, protocol: dict, reference) -> tuple:
    """The protocol (``latency_server.run_protocol``, which a latency server runs too): on a
    GPU, CUDA events around each group, a synchronisation after each warm-up call."""
    # a GPU needs a longer warm-up: on an H200 the first 0.1 s of batch-1 calls ran 35% slow
    # (clocks and host launch path still ramping up), so it gets >= 0.5 s, synchronised per
    # call so that the time is the GPU's and not how fast the host can queue work
    if cuda is None:
        return run_protocol(call, **protocol, tick=check_interrupt, reference=reference)

    def timed_group(group: int) -> float:  # pragma: no mutate (GPU only)
        t0, t1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0.record()
        for _ in range(group):
            call()
        t1.record()
        t1.synchronize()
        return t0.elapsed_time(t1) / group

    return run_protocol(call, **{**protocol, "warmup_s": max(protocol["warmup_s"], 0.5)},
                        sync=lambda: torch.cuda.synchronize(cuda), timed_group=timed_group, tick=check_interrupt)
