"""A latency server for the deployment target: it times ONNX models for studies run elsewhere.

One file, importable without torch or the rest of cnnsearch: a board with only Python 3.11+,
numpy and onnxruntime runs it as it is (``python3 latency_server.py --token-file TOKEN``);
with cnnsearch installed, ``cnnsearch latency-server`` is the same. ``GET /device``: the
target's fingerprint (CPU model, cores, OS/arch, onnxruntime version and providers, threads);
``POST /measure?shape=1,3,32,32`` with an ONNX model as the body: ``latency.measure``'s
figures under the same protocol (``run_protocol``) and the fingerprint; with ``&reference=N``
the body's first N bytes are a reference model, timed interleaved with it (``summary``).

Every request needs ``Authorization: Bearer <token>`` (401 otherwise; constant-time compare).
It binds 127.0.0.1 unless told otherwise; at most 32 connections; a request must arrive within
30 s; a body over ``--max-mb`` is 413, one without a length 411; a body that is not an ONNX
model, refers to external data files or runs over 10 s is 400, and the server goes on. Models
are loaded from the request's bytes, never written anywhere. Measurements run one at a time
(8 more may wait, 503 beyond): the target is never timed twice at once.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOKEN_ENV = "CNNSEARCH_LATENCY_TOKEN"
MAX_MB = 64  # the largest model accepted, in MiB (a small CNN is well under 10)
READ_TIMEOUT_S = 30.0  # a client's whole request (headers and body) must arrive within this
MAX_CONNECTIONS = 32  # beyond: closed at once (a flood of slow clients holds no more threads)
RUN_LIMIT_S = 10.0  # one inference longer than this is refused (a model that never ends: a Loop)


def quartiles(samples: list[float]) -> tuple[float, float, float]:
    return tuple(statistics.quantiles(samples, n=4, method="inclusive"))


def run_protocol(call: Callable[[], object], *, warmup_s: float = 0.1, min_runs: int = 30, max_runs: int = 2000,
                 time_cap_s: float = 3.0, rel_iqr: float = 0.10, rounds: int = 3, pause_s: float = 0.02,
                 sync: Callable[[], None] | None = None, timed_group: Callable[[int], float] | None = None,
                 tick: Callable[[], None] | None = None, reference: Callable[[], object] | None = None,
                 ) -> tuple[list[list[float]], int, bool, list[list[float]]]:
    """Warm-up (which also sizes groups of calls to ~5 ms), then ``rounds`` rounds a pause apart,
    each of groups until IQR/median <= rel_iqr or its share of the time cap. ``max_runs`` and
    ``time_cap_s`` are shared evenly among the rounds, ``min_runs`` too but with at least 10 per
    round (settling is checked every 10 samples). ``sync`` waits for queued work (a GPU),
    ``timed_group(n)`` times n calls itself (CUDA events), ``tick`` runs before each sample (a
    Ctrl-C check). With ``reference`` (CPU only), a group of it follows each group of ``call``
    and rounds settle on the pairs' ratios. Returns (per-call ms of each group, per round; calls
    per group; every round settled; the reference's paired groups likewise, [] without one)."""
    group = _warm(call, warmup_s, sync)
    ref_group = _warm(reference, warmup_s, None) if reference is not None else 0
    per_round_min = max(10, -(-min_runs // rounds)) if rounds > 1 else min_runs
    per_round_max = max(per_round_min, max_runs // rounds)
    result: list[list[float]] = []
    refs: list[list[float]] = []
    all_settled = True  # every round
    for r in range(rounds):
        if r:
            # another moment of the machine: a burst of load elsewhere that slowed one
            # round is over by the next, and the lowest round median ignores it
            time.sleep(pause_s)
            for f, n in ((call, group), (reference, ref_group)):  # ref_group: 0 without a reference
                for _ in range(n):  # caches after the pause: one untimed group
                    f()
            if sync is not None:
                sync()
        samples, ref, settled = _round(call, group, per_round_min, per_round_max, time_cap_s / rounds, rel_iqr,
                                       timed_group, tick, reference, ref_group)
        result.append(samples)
        refs += [ref] if reference is not None else []
        all_settled = all_settled and settled
    return result, group, all_settled, refs


def _warm(call, warmup_s: float, sync) -> int:  # how many calls last ~5 ms
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < warmup_s or calls < 3:
        call()
        if sync is not None:
            sync()
        calls += 1
    one = (time.perf_counter() - start) / calls
    return max(1, min(1000, round(5e-3 / max(one, 1e-7))))


def _group_ms(call, group: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(group):
        call()
    return (time.perf_counter_ns() - t0) / 1e6 / group


def _round(call, group: int, min_runs: int, max_runs: int, time_cap_s: float, rel_iqr: float,
           timed_group, tick, reference, ref_group: int) -> tuple[list[float], list[float], bool]:
    samples: list[float] = []
    refs: list[float] = []  # the reference's group right after each of call's: the same moment
    begin, settled = time.perf_counter(), False
    while len(samples) < max_runs:
        if tick is not None:
            tick()
        samples.append(timed_group(group) if timed_group is not None else _group_ms(call, group))
        if reference is not None:
            refs.append(_group_ms(reference, ref_group))
        if len(samples) >= min_runs and len(samples) % 10 == 0:
            q1, med, q3 = quartiles([a / b for a, b in zip(samples, refs)] if refs else samples)
            if (q3 - q1) <= rel_iqr * med:
                settled = True
                break
            if time.perf_counter() - begin > time_cap_s:
                break
    return samples, refs, settled


def summary(per_round: list[list[float]], group: int, settled: bool, references: list[list[float]] | None = None,
            calibration_ms: float | None = None) -> dict:
    """The figure: the lowest round median (load elsewhere only ever adds time) and that round's
    IQR, with every round's median. With ``references`` (the reference's groups paired with the
    candidate's) and the reference's quiet ``calibration_ms``: the median (and IQR) of the pairs'
    ratios over every round times the calibration (a host that slows for a while slows both
    alike); the lowest round median stays as ``raw_median_ms``."""
    stats = [quartiles(samples) for samples in per_round]
    q1, med, q3 = min(stats, key=lambda q: q[1])
    found = {"median_ms": med, "iqr_ms": q3 - q1, "runs": sum(map(len, per_round)), "calls_per_run": group,
             "settled": settled, "rounds": len(per_round), "round_medians_ms": [q[1] for q in stats]}
    if references:
        ratios = [a / b for samples, refs in zip(per_round, references) for a, b in zip(samples, refs)]
        r1, ratio, r3 = quartiles(ratios)
        found.update(median_ms=ratio * calibration_ms, iqr_ms=(r3 - r1) * calibration_ms, raw_median_ms=med,
                     reference_ms=statistics.median(v for refs in references for v in refs),
                     reference_calibration_ms=calibration_ms)
    return found


def cpu_name() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):  # x86; a Raspberry Pi's board
                    name = line.split(":", 1)[1].strip()
                    if line.startswith("model name"):
                        break
    except OSError:
        pass
    return name


def device_fingerprint(threads: int) -> dict:
    """What makes onnxruntime figures comparable: the same CPU, cores, OS, architecture,
    onnxruntime build and thread count."""
    import onnxruntime as ort

    return {"device": "cpu", "name": cpu_name(), "cpus": os.cpu_count(), "os": platform.system(),
            "arch": platform.machine(), "runtime": "onnxruntime", "onnxruntime": ort.__version__,
            "providers": list(ort.get_available_providers()), "threads": threads}


class BadModel(ValueError):
    """A request body that is not a self-contained ONNX model (-> 400)."""


def _fields(buf: memoryview, depth: int):
    """(field number, wire type, value) of one protobuf message; values of wire type 2 as
    zero-copy views (nested messages cost no memory)."""
    if depth > 32:
        raise BadModel("not an ONNX model (nested too deep)")
    i, n = 0, len(buf)

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while i < n and shift <= 63:
            b, i, shift, value = buf[i], i + 1, shift + 7, value | (buf[i] & 0x7F) << shift
            if not b & 0x80:
                return value
        raise BadModel("not an ONNX model (a truncated or malformed protobuf)")

    while i < n:
        key = varint()
        number, wire = key >> 3, key & 7
        size = varint() if wire == 2 else {1: 8, 5: 4}.get(wire, 0)
        if number == 0 or wire not in (0, 1, 2, 5) or i + size > n:
            raise BadModel("not an ONNX model (a truncated or malformed protobuf)")
        if wire == 0:
            yield number, wire, varint()
        elif wire == 2:
            yield number, wire, buf[i:i + size]
        i += size


# where TensorProtos sit in onnx.proto: message -> {field: the message it holds}
_SCHEMA = {"model": {7: "graph", 25: "function"}, "graph": {1: "node", 5: "tensor", 15: "sparse"},
           "function": {7: "node"}, "node": {5: "attribute"}, "sparse": {1: "tensor", 2: "tensor"},
           "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"}}


def _external(buf: memoryview, kind: str, depth: int = 0) -> bool:
    """Whether any tensor in this message refers to data outside the model (TensorProto's
    ``external_data`` (13) or ``data_location`` (14) = EXTERNAL): conservative, every tensor
    in graphs, subgraphs, attributes, sparse tensors and functions is looked at."""
    for number, wire, value in _fields(buf, depth):
        if kind == "tensor":
            if number == 13 or (number == 14 and wire == 0 and value != 0):
                return True
        elif wire == 2 and number in _SCHEMA[kind] and _external(value, _SCHEMA[kind][number], depth + 1):
            return True
    return False


def check_model(body: bytes) -> None:
    """BadModel unless ``body`` parses as an ONNX ModelProto with a graph and no external data."""
    view = memoryview(body)
    if not any(number == 7 and wire == 2 for number, wire, _ in _fields(view, 0)):
        raise BadModel("not an ONNX model (no graph)" if body else "empty body: send the ONNX model's bytes")
    if _external(view, "model"):
        raise BadModel("the model refers to external data files: send a self-contained model")


def parse_shape(text: str | None) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in (text or "").split(","))
    except ValueError:
        raise BadModel(f"shape: expected sizes such as 1,3,32,32, got {text!r}") from None
    if not 1 <= len(shape) <= 6 or min(shape) < 1 or max(shape) > 65536 or math.prod(shape) > 2**26:
        raise BadModel(f"shape: {text!r} must be 1 to 6 positive sizes of at most 2**26 elements in all")
    return shape


class Timer:
    """Times models one at a time on ``threads`` onnxruntime threads."""

    def __init__(self, threads: int = 1, queue: int = 8, **protocol):
        self.threads, self.protocol = threads, protocol
        self.lock = threading.Lock()
        self.places = threading.BoundedSemaphore(queue + 1)  # the one timing and those waiting
        self.fingerprint = device_fingerprint(threads)
        self.calibrations: dict[str, float] = {}  # sha256 of a reference model -> its calibration (ms)

    def measure(self, body: bytes, shape: tuple[int, ...], reference: bytes = b"") -> dict:
        """``summary`` of ``body`` on ``shape``, with a ``reference`` model interleaved (calibrated once)."""
        with self.lock:
            call = self._open(body, shape)
            ref, key = (self._open(reference, None), hashlib.sha256(reference).hexdigest()) if reference else (None, "")
            if ref is not None and key not in self.calibrations:
                self.calibrations = {**self.calibrations, key: calibrate(ref, **self.protocol)}
            t0 = time.perf_counter()
            per_round, group, settled, refs = run_protocol(call, reference=ref, **self.protocol)
            timing_s = time.perf_counter() - t0
        return {**summary(per_round, group, settled, refs, self.calibrations.get(key)), "batch_size": shape[0],
                "runtime": "onnxruntime", "fingerprint": self.fingerprint, "timing_s": timing_s}

    def _open(self, body: bytes, shape: tuple[int, ...] | None) -> Callable[[], object]:
        """One run of ``body`` on random inputs of ``shape`` (None: its own), run once; else BadModel."""
        import numpy as np  # here, not at the top: the module imports without them (and says so)
        import onnxruntime as ort

        check_model(body)
        try:
            session = ort.InferenceSession(body, session_options(ort, self.threads), providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BadModel(f"onnxruntime cannot load the model: {_line(exc)}") from None
        inputs = session.get_inputs()
        if len(inputs) != 1 or inputs[0].type != "tensor(float)":
            raise BadModel("the model must take one float tensor")
        if shape is None and not all(isinstance(d, int) and d > 0 for d in inputs[0].shape):
            raise BadModel("the reference model must fix its input's shape")
        shape = shape or parse_shape(",".join(map(str, inputs[0].shape)))  # a reference's own: the same caps
        feed = {inputs[0].name: np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
        limit = ort.RunOptions()
        stop = threading.Timer(RUN_LIMIT_S, setattr, (limit, "terminate", True))
        stop.start()
        try:
            session.run(None, feed, limit)
        except Exception as exc:
            over = f"one run takes over {RUN_LIMIT_S:g} s" if limit.terminate else _line(exc)
            raise BadModel(f"the model does not run on shape {','.join(map(str, shape))}: {over}") from None
        finally:
            stop.cancel()
        return lambda: session.run(None, feed)


def session_options(ort, threads: int):
    """onnxruntime's options for timing: ``threads`` threads, sequential, all optimisations."""
    options = ort.SessionOptions()
    for name, value in (("intra_op_num_threads", threads), ("inter_op_num_threads", 1),
                        ("execution_mode", ort.ExecutionMode.ORT_SEQUENTIAL), ("log_severity_level", 4),
                        ("graph_optimization_level", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)):
        setattr(options, name, value)  # log level 4: onnxruntime's own warnings are not the client's answer
    return options


def calibrate(reference: Callable[[], object], **protocol) -> float:
    """The reference network's quiet figure: the lowest of five round medians."""
    per_round = run_protocol(reference, **{**protocol, "rounds": 5})[0]
    return min(quartiles(samples)[1] for samples in per_round)


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


class Handler(BaseHTTPRequestHandler):
    server_version = "cnnsearch-latency/1"
    timeout = READ_TIMEOUT_S  # per socket read: a stalled client does not hold a thread forever

    def setup(self) -> None:
        super().setup()  # the whole request within READ_TIMEOUT_S: a slow client cannot hold a thread
        self.deadline = threading.Timer(READ_TIMEOUT_S, self._drop)
        self.deadline.start()

    def _drop(self) -> None:
        try:
            self.connection.shutdown(2)  # SHUT_RDWR: the handler's read ends, and with it the request
        except OSError:
            pass  # closed meanwhile

    def finish(self) -> None:
        self.deadline.cancel()
        super().finish()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def _send(self, code: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if code == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="cnnsearch-latency"')
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> bool:
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        ok = hmac.compare_digest(token.strip().encode(), self.server.token.encode()) and scheme == "Bearer"
        if not ok:
            self._send(401, {"error": "a valid 'Authorization: Bearer <token>' header is needed"})
        return ok

    def _at(self, path: str) -> bool:
        if urlsplit(self.path).path != path:
            self._send(404, {"error": "GET /device or POST /measure?shape=..."})
        return urlsplit(self.path).path == path

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if self._authorised() and self._at("/device"):
            self._send(200, {**self.server.timer.fingerprint, "features": ["reference"]})  # what it can do

    def do_POST(self) -> None:  # noqa: N802
        if not (self._authorised() and self._at("/measure")):
            return
        length = self.headers.get("Content-Length", "")
        number = length.isascii() and length.isdigit() and len(length) <= 12
        too_big = number and int(length) > self.server.max_bytes
        if not number or too_big:
            self.close_connection = True  # the body is never read
            self._send(413 if too_big else 411, {"error": f"the model is over {self.server.max_bytes // 2**20} MiB"
                                                 if too_big else "a Content-Length is needed (no chunked bodies)"})
            return
        timer: Timer = self.server.timer
        if not timer.places.acquire(blocking=False):  # before the body: a full queue holds no bodies
            self.close_connection = True
            self._send(503, {"error": "the queue of measurements is full; try again"})
            return
        try:
            try:
                body = self.rfile.read(int(length))
            except OSError:  # the client stalled past the read timeout or went away: nobody to answer
                self.close_connection = True
                return
            if len(body) != int(length):
                raise BadModel("the body ended before its Content-Length")
            self.deadline.cancel()  # the request is in: the measurement may take its time
            query = parse_qs(urlsplit(self.path).query)
            shape, split = parse_shape(query.get("shape", [None])[0]), query.get("reference", ["0"])[0]
            if not (split.isascii() and split.isdigit() and (int(split) < len(body) or split == "0")):
                raise BadModel(f"reference: {split!r} must be the length of the reference model the body starts with")
            self._send(200, timer.measure(body[int(split):], shape, body[:int(split)]))
        except BadModel as exc:
            self._send(400, {"error": str(exc)})
        except Exception as exc:  # the server keeps serving whatever one model did
            self._send(500, {"error": f"{type(exc).__name__}: {_line(exc)}"})
        finally:
            timer.places.release()


class LatencyServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], token: str, *, threads: int = 1, max_bytes: int = MAX_MB * 2**20,
                 queue: int = 8, quiet: bool = False, **protocol):
        self.token, self.max_bytes, self.quiet = token, max_bytes, quiet
        self.timer = Timer(threads, queue, **protocol)
        self.connections = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, Handler)

    def process_request(self, request, client_address) -> None:
        if not self.connections.acquire(blocking=False):
            self.shutdown_request(request)  # at the cap: closed at once, no thread
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()


def read_token(path: str | None) -> str:
    """The token from ``path`` (its first line), else from $CNNSEARCH_LATENCY_TOKEN."""
    try:
        if path:
            with open(path, encoding="utf-8") as f:
                token = f.readline().strip()
        else:
            token = os.environ.get(TOKEN_ENV, "").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"--token-file: cannot read {path} ({getattr(exc, 'strerror', None) or exc})") from None
    if len(token) < 16:
        raise ValueError(f"{f'--token-file: {path}' if path else TOKEN_ENV}: "
                         + ("the token must be at least 16 characters" if token else "no token")
                         + "; give --token-file FILE (e.g. made by `python3 -c 'import secrets; "
                         f"print(secrets.token_urlsafe(32))' > FILE`) or set {TOKEN_ENV}")
    return token


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--token-file", help=f"file whose first line is the token (default: ${TOKEN_ENV})")
    parser.add_argument("--max-mb", type=int, default=MAX_MB, help=f"largest model accepted, MiB (default {MAX_MB})")
    parser.add_argument("--quiet", action="store_true", help="no line per request")


def serve(args: argparse.Namespace) -> int:
    """Run until interrupted; bad arguments are one ``error:`` line and exit 2."""
    try:
        if args.threads < 1 or args.max_mb < 1 or not 0 <= args.port < 65536:
            raise ValueError("--threads and --max-mb must be >= 1, --port in 0..65535")
        token = read_token(args.token_file)
        try:
            server = LatencyServer((args.host, args.port), token, threads=args.threads,
                                   max_bytes=args.max_mb * 2**20, quiet=args.quiet)
        except ImportError:
            raise ValueError("onnxruntime and numpy are needed: pip install onnxruntime numpy") from None
        except OSError as exc:
            raise ValueError(f"--host/--port: cannot listen on {args.host}:{args.port} ({exc.strerror or exc})") from None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    fp = server.timer.fingerprint
    print(f"latency server on http://{host}:{port} ({fp['name']}, {fp['cpus']} cores, {fp['os']}/{fp['arch']}, "
          f"onnxruntime {fp['onnxruntime']}, {fp['threads']} thread(s))", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="latency_server.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
