"""The latency server on loopback: real HTTP, real onnxruntime, real studies on SQLite."""

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import replace

import optuna
import pytest
import torch

from cnnsearch import ArchSpec, RecipeError, build
from cnnsearch import latency_server as ls
from cnnsearch.errors import FailingTrials
from cnnsearch.latency import fingerprint, onnx_export
from cnnsearch.latency_remote import LatencyServerError, check_server_url, device_identity, measure_remote
from cnnsearch.latency_server import TOKEN_ENV, BadModel, LatencyServer, check_model
from cnnsearch.objective import Objective
from cnnsearch.recipe import changed_meaning, load_recipe
from cnnsearch.storage import open_storage
from cnnsearch.study import open_study, record_data, run_worker
from tests.conftest import ROOT
from tests.study_helpers import load, run_recipe, write_recipe

pytest.importorskip("onnxruntime")
TOKEN = "test-token-0123456789abcdef"
FAST = {"warmup_s": 0.02, "min_runs": 10, "time_cap_s": 0.3}  # a quick protocol for the tests
SPEC = {"input": [1, 8, 8], "num_classes": 10, "blocks": [{"out_channels": 4, "kernel_size": 3}]}
SERVER_FILE = ROOT / "cnnsearch" / "latency_server.py"


def model_bytes(spec=SPEC) -> bytes:
    spec = ArchSpec.from_dict(spec)
    return onnx_export(build(spec).eval(), torch.randn(1, *spec.input))[0]


@pytest.fixture
def server(monkeypatch):
    """A latency server in a thread on a free loopback port; its URL."""
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    srv = LatencyServer(("127.0.0.1", 0), TOKEN, max_bytes=2**20, quiet=True, **FAST)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def ask(url, path, body=None, token=TOKEN, headers=None):
    """(status, JSON answer) of one request."""
    h = {"Authorization": f"Bearer {token}"} if token is not None else {}
    request = urllib.request.Request(url + path, data=body, headers={**h, **(headers or {})},
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_device_and_measure_give_measure_s_figures_and_the_same_device_as_in_process(server):
    status, device = ask(server, "/device")
    assert status == 200
    assert {"name", "cpus", "os", "arch", "onnxruntime", "providers", "threads"} <= set(device)
    status, got = ask(server, "/measure?shape=1,1,8,8", model_bytes())
    assert status == 200, got
    assert got["median_ms"] > 0 and got["runs"] >= 10 and got["rounds"] == 3 and len(got["round_medians_ms"]) == 3
    assert device.pop("features") == ["reference"]  # what the server can do, beside the fingerprint
    assert {"iqr_ms", "calls_per_run", "settled"} <= set(got) and got["fingerprint"] == device
    # one machine, one device: in-process onnxruntime figures may share a front with these
    assert device_identity(device) == device_identity(fingerprint(torch.device("cpu"), 1, "onnxruntime"))


@pytest.mark.parametrize("token, scheme", [(None, None), ("wrong-token-0123456789", "Bearer"), (TOKEN, "Basic")])
def test_a_request_without_the_token_is_401(server, token, scheme):
    headers = {"Authorization": f"{scheme} {token}"} if token else {}
    for path, body in (("/device", None), ("/measure?shape=1,1,8,8", model_bytes())):
        status, got = ask(server, path, body, token=None, headers=headers)
        assert status == 401 and "Bearer" in got["error"]


def test_an_oversize_body_is_413_and_a_missing_length_411(server):
    host, port = server.rsplit(":", 1)
    # the length alone says it: 413 before a byte of the body is read (a client still sending a
    # body the server will never read may see its connection reset instead: a race, not tested)
    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as s:
        s.sendall(f"POST /measure?shape=1,1,8,8 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Length: {2**20 + 1}\r\n\r\n".encode())
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"413" and "1 MiB" in json.loads(payload)["error"]
    with socket.create_connection(("127.0.0.1", int(port)), timeout=10) as s:  # chunked: no length
        s.sendall(f"POST /measure?shape=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n".encode())
        assert s.recv(100).split()[1] == b"411"


def test_malformed_models_are_400_and_the_server_keeps_serving(server):
    good = model_bytes()
    for body, why in [(b"not a model at all", "not an ONNX model"), (b"", "empty body"),
                      (b"\x08\x07", "no graph"), (good[: len(good) // 2], "not an ONNX model")]:
        status, got = ask(server, "/measure?shape=1,1,8,8", body)
        assert status == 400 and why in got["error"], (body[:20], got)
    for query in ("", "?shape=a,b", "?shape=0,1", "?shape=1,2,3,4,5,6,7"):
        status, got = ask(server, f"/measure{query}", good)
        assert status == 400 and "shape" in got["error"]
    status, got = ask(server, "/measure?shape=1,3,8,8", good)  # the wrong input shape: onnxruntime says so
    assert status == 400 and "does not run on shape 1,3,8,8" in got["error"]
    assert ask(server, "/nowhere")[0] == 404
    status, got = ask(server, "/measure?shape=1,1,8,8", good)
    assert status == 200 and got["median_ms"] > 0


def test_a_model_with_external_data_is_refused(server, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load_model_from_string(model_bytes())
    assert check_model(model.SerializeToString()) is None
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="no-such-weights.bin",
                                   size_threshold=0)
    status, got = ask(server, "/measure?shape=1,1,8,8", model.SerializeToString())
    assert status == 400 and "external data" in got["error"]
    # a tensor in a node's attribute (a Constant), not an initializer, is looked at too
    const = onnx.helper.make_tensor("c", onnx.TensorProto.FLOAT, [1], [1.0])
    const.data_location = onnx.TensorProto.EXTERNAL
    node = onnx.helper.make_node("Constant", [], ["y"], value=const)
    graph = onnx.helper.make_graph([node], "g", [], [onnx.helper.make_tensor_value_info("y", 1, [1])])
    with pytest.raises(BadModel, match="external data"):
        check_model(onnx.helper.make_model(graph).SerializeToString())
    assert ask(server, "/measure?shape=1,1,8,8", model_bytes())[0] == 200


def test_the_server_module_imports_and_serves_without_torch(tmp_path):
    (tmp_path / "model.onnx").write_bytes(model_bytes())
    code = f"""
import sys, threading, urllib.request, json, importlib.util
sys.modules["torch"] = None  # import torch now fails
spec = importlib.util.spec_from_file_location("latency_server", {str(SERVER_FILE)!r})
ls = importlib.util.module_from_spec(spec); spec.loader.exec_module(ls)
srv = ls.LatencyServer(("127.0.0.1", 0), {TOKEN!r}, quiet=True, warmup_s=0.02, min_runs=10, time_cap_s=0.3)
threading.Thread(target=srv.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{{srv.server_address[1]}}/measure?shape=1,1,8,8"
req = urllib.request.Request(url, data=open({str(tmp_path / 'model.onnx')!r}, "rb").read(),
                             headers={{"Authorization": "Bearer {TOKEN}"}})
print(json.loads(urllib.request.urlopen(req, timeout=60).read())["median_ms"])
assert not any(m == "cnnsearch" or m.startswith(("cnnsearch.", "torch.")) for m in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) > 0


def server_recipe(tmp_path, url, *, trials=3, extra=""):
    return write_recipe(tmp_path, trials=trials, epochs=1,
                        extra=f'[latency]\nruntime = "onnxruntime"\nserver = "{url}"\n{extra}')


@pytest.mark.slow
def test_a_study_timed_through_the_server_records_server_and_device(server, tmp_path):
    path = server_recipe(tmp_path, server)
    run_recipe(load_recipe(path), until=3)
    study = load(path)
    assert len(study.trials) == 3
    _, device = ask(server, "/device")
    for t in study.trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        lat = t.user_attrs["latency"]
        assert lat["server"] == server and lat["device"] == device_identity(device) and lat["runtime"] == "onnxruntime"
        assert t.user_attrs["latency_ms"] > 0
    assert study.user_attrs["latency_device"] == {"device": device_identity(device), "server": server, "trial": 0}


def start_server(port: int, token_file) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(SERVER_FILE), "--port", str(port), "--token-file", str(token_file),
                             "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("latency server on"), proc.stderr.read()
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_a_server_killed_mid_study_fails_the_trial_which_is_retried_and_nothing_is_lost(tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    procs = [start_server(port, tmp_path / "token")]
    recipe = load_recipe(server_recipe(tmp_path, f"http://127.0.0.1:{port}", trials=3))
    study = open_study(recipe, open_storage(recipe.storage))
    objective = Objective.create(recipe)
    record_data(study, objective.data.description())
    notes = []

    def on_trial(study, trial):
        if trial.number == 0:  # the server dies after the first trial
            procs[0].kill()
            procs[0].wait()
        elif trial.state == optuna.trial.TrialState.FAIL:  # and is back after the failure
            procs.append(start_server(port, tmp_path / "token"))

    try:
        run_worker(study, objective, until=3, on_trial=on_trial, on_note=notes.append, max_consecutive_failures=3)
    finally:
        for p in procs:
            p.kill()
    trials = study.get_trials()
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"], states
    failed, retry = trials[1], trials[2]
    assert "latency server" in failed.user_attrs["fail_reason"] and "unreachable" in failed.user_attrs["fail_reason"]
    assert retry.params == failed.params and retry.system_attrs["failed_trial"] == 1
    assert "fail_reason" not in retry.user_attrs and retry.user_attrs["status"] == "ok"
    assert trials[0].values is not None and notes == ["trial    1: re-queued (latency server failed)"]


@pytest.mark.slow
def test_a_dead_server_stops_the_worker_after_max_consecutive_failures(tmp_path, monkeypatch):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    (tmp_path / "token").write_text(TOKEN)
    port = free_port()
    proc = start_server(port, tmp_path / "token")
    recipe = replace(load_recipe(server_recipe(tmp_path, f"http://127.0.0.1:{port}", trials=5)),
                     max_consecutive_failures=2)
    study = open_study(recipe, open_storage(recipe.storage))
    objective = Objective.create(recipe)
    record_data(study, objective.data.description())

    def on_trial(study, trial):
        proc.kill()
        proc.wait()

    with pytest.raises(FailingTrials, match=r"2 trials in a row failed; the last: LatencyServerError: latency "
                                            r"server http://127.0.0.1:\d+ unreachable"):
        run_worker(study, objective, until=5, on_trial=on_trial, max_consecutive_failures=2)
    assert [t.state.name for t in study.get_trials()][:3] == ["COMPLETE", "FAIL", "FAIL"]


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """``cnnsearch ARGS`` in this process, with ``env`` set: (exit code, stderr)."""
    from cnnsearch.cli import main

    def run(*args, env=None):
        capsys.readouterr()
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        code = main(list(args))
        return code, capsys.readouterr().err
    return run


def test_bad_server_settings_are_one_line_before_anything_is_created(tmp_path, server, run_cli):
    closed = f"http://127.0.0.1:{free_port()}"
    cases = [(closed, {TOKEN_ENV: TOKEN}, f"latency.server: latency server {closed} unreachable"),
             (server, {TOKEN_ENV: ""}, f"latency.server: set {TOKEN_ENV}"),
             (server, {TOKEN_ENV: "wrong-token-0123456789"}, "HTTP 401"),
             ("ftp://host:1", {TOKEN_ENV: TOKEN}, "latency.server: 'ftp://host:1' must be http://HOST:PORT"),
             ("http://host", {TOKEN_ENV: TOKEN}, "must be http://HOST:PORT"),
             (server + "/x", {TOKEN_ENV: TOKEN}, "with no path")]
    for url, env, message in cases:
        path = server_recipe(tmp_path, url)
        code, err = run_cli("search", str(path), env=env)
        assert code == 2, (url, err)
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert message in err, err
        assert not list(tmp_path.glob("*.db"))
    path = write_recipe(tmp_path, extra=f'[latency]\nserver = "{server}"\n')
    with pytest.raises(RecipeError, match='add runtime = "onnxruntime"'):
        load_recipe(path)
    path = server_recipe(tmp_path, server, extra="threads = 2\n")
    code, err = run_cli("search", str(path), env={TOKEN_ENV: TOKEN})
    assert code == 2 and "latency.threads: 2, but the server" in err


def test_the_server_s_address_is_where_not_what(tmp_path, server):
    a = load_recipe(server_recipe(tmp_path, server))
    b = load_recipe(server_recipe(tmp_path, "http://10.0.0.7:8765"))
    c = load_recipe(write_recipe(tmp_path, trials=3, epochs=1, extra='[latency]\nruntime = "onnxruntime"\n'))
    assert changed_meaning(a, b) == [] and changed_meaning(a, c) == [] and a.fingerprint() == c.fingerprint()


def test_a_worker_on_another_device_is_refused_before_training(tmp_path, server, run_cli):
    path = server_recipe(tmp_path, server, trials=1)
    run_recipe(load_recipe(path), until=1)
    study = load(path)
    stored = study.user_attrs["latency_device"]
    other = {**stored, "device": {**stored["device"], "name": "Cortex-A76 (simulated)", "arch": "aarch64"}}
    study.set_user_attr("latency_device", other)
    # an in-process worker (no server) and a worker through a server: both time elsewhere
    for recipe in (write_recipe(tmp_path, trials=1, epochs=1, extra='[latency]\nruntime = "onnxruntime"\n'), path):
        code, err = run_cli("search", str(recipe), "--trials", "1", env={TOKEN_ENV: TOKEN})
        assert code == 2, err
        line = err.strip()
        assert len(line.splitlines()) == 1 and "Cortex-A76 (simulated)" in line
        assert stored["device"]["name"] in line.split("but this worker's figures would come from")[1]
        assert f'[latency] server = "{server}"' in line
    assert len(load(path).trials) == 1  # nothing trained


def test_a_figure_from_another_device_fails_its_trial(tmp_path, server, monkeypatch):
    from cnnsearch import latency_remote

    path = server_recipe(tmp_path, server, trials=2)
    run_recipe(load_recipe(path), until=1)
    real = latency_remote.measure_remote

    def elsewhere(*args, **kwargs):  # the server was swapped for another board mid-run
        lat = real(*args, **kwargs)
        lat.fingerprint = {**lat.fingerprint, "name": "Cortex-A76 (simulated)"}
        return lat

    monkeypatch.setattr(latency_remote, "measure_remote", elsewhere)
    with pytest.raises(FailingTrials):
        run_recipe(replace(load_recipe(path), max_consecutive_failures=1), until=2)
    failed = load(path).trials[1]
    assert failed.state.name == "FAIL" and "Cortex-A76 (simulated)" in failed.user_attrs["fail_reason"]
    assert "retry" not in failed.user_attrs  # not the server's fault: not re-queued


def test_latency_server_command_needs_a_token(tmp_path, run_cli):
    code, err = run_cli("latency-server", "--port", "0", env={TOKEN_ENV: ""})
    assert code == 2 and err.startswith(f"error: {TOKEN_ENV}: no token")
    (tmp_path / "short").write_text("abc")
    code, err = run_cli("latency-server", "--port", "0", "--token-file", str(tmp_path / "short"))
    assert code == 2 and "at least 16 characters" in err and len(err.strip().splitlines()) == 1
    code, err = run_cli("latency-server", "--port", "0", "--token-file", str(tmp_path / "none"))
    assert code == 2 and err.startswith(f"error: --token-file: cannot read {tmp_path / 'none'}")


def test_measure_remote_restores_training_mode(server):
    spec = ArchSpec.from_dict(SPEC)
    model = build(spec).train()
    lat = measure_remote(model, spec.input, server=server)
    assert model.training and lat.server == server and lat.runtime == "onnxruntime" and lat.median_ms > 0


def test_a_server_on_this_machine_times_while_local_trainers_stand_aside(server, monkeypatch):
    from contextlib import contextmanager

    from cnnsearch import latency_remote

    held = []

    @contextmanager
    def spy(key="cpu"):
        held.append(key)
        yield

    monkeypatch.setattr(latency_remote, "quiet_machine", spy)
    spec = ArchSpec.from_dict(SPEC)
    measure_remote(build(spec), spec.input, server=server)
    assert held == ["cpu"]
    assert latency_remote._loopback("http://localhost:1") and latency_remote._loopback("http://[::1]:1")
    assert not latency_remote._loopback("http://10.0.0.7:8765") and not latency_remote._loopback("http://board:1")


def test_what_makes_two_figures_one_device():
    cpu = fingerprint(torch.device("cpu"), 1, "onnxruntime")
    assert "torch" not in device_identity(cpu) and device_identity(cpu)["threads"] == 1
    assert device_identity(fingerprint(torch.device("cpu"), 2, "onnxruntime")) != device_identity(cpu)
    eager = device_identity(fingerprint(torch.device("cpu"), 1))
    assert eager["torch"] == torch.__version__ and eager != device_identity(cpu)  # another runtime
    gpu = {"device": "cuda:0", "name": "NVIDIA H200", "torch": "2.9", "threads": 4, "cpus": 16, "runtime": "torch"}
    assert device_identity(gpu) == device_identity({**gpu, "threads": 2})  # --workers 2 trains on fewer threads


def test_a_model_the_server_refuses_fails_its_trial_without_a_retry(server, tmp_path, monkeypatch):
    from cnnsearch import latency_remote

    monkeypatch.setattr(latency_remote, "onnx_export", lambda model, x: (b"not onnx", None))
    recipe = replace(load_recipe(server_recipe(tmp_path, server, trials=2)), max_consecutive_failures=1)
    with pytest.raises(FailingTrials, match="HTTP 400"):
        run_recipe(recipe, until=2)
    (trial,) = load(server_recipe(tmp_path, server)).trials  # failed, and nothing re-queued
    assert trial.state.name == "FAIL" and "not an ONNX model" in trial.user_attrs["fail_reason"]


def test_a_client_that_stops_sending_is_dropped_and_the_server_goes_on(server, monkeypatch):
    from cnnsearch.latency_server import Handler

    monkeypatch.setattr(Handler, "timeout", 0.5)
    port = int(server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST /measure?shape=1,1,8,8 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  "Content-Length: 1000\r\n\r\nonly part".encode())
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed, not answered
        assert time.monotonic() - t0 < 5
    assert ask(server, "/device")[0] == 200


def test_a_slow_client_is_dropped_at_the_request_deadline_and_connections_are_capped(monkeypatch):
    """A client that trickles its request in (each read within the socket timeout) is dropped
    once the whole request's deadline passes; connections beyond the cap are closed at once,
    and the server serves again when they go."""
    from cnnsearch import latency_server

    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setattr(latency_server, "READ_TIMEOUT_S", 1.0)
    monkeypatch.setattr(latency_server, "MAX_CONNECTIONS", 2)
    srv = LatencyServer(("127.0.0.1", 0), TOKEN, quiet=True, **FAST)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port, url = srv.server_address[1], f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            t0, answer = time.monotonic(), None
            for byte in b"GET /device HTTP/1.1\r\nHost: x\r\n":
                try:
                    s.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.1)
                if time.monotonic() - t0 > 5:
                    break
            try:
                answer = s.recv(100)
            except OSError:
                answer = b""
            assert answer == b"" and time.monotonic() - t0 < 5  # dropped, not answered
        held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as third:
            assert third.recv(100) == b""  # over the cap: closed at once
        for s in held:
            s.close()
        time.sleep(1.5)  # their deadlines free the two places
        assert ask(url, "/device")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_401_names_the_scheme_it_wants(server):
    request = urllib.request.Request(server + "/device")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 401
    assert err.value.headers["WWW-Authenticate"] == 'Bearer realm="cnnsearch-latency"'


def test_serve_listens_where_asked_and_says_on_what(tmp_path, monkeypatch, capsys):
    import argparse

    from cnnsearch import latency_server

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(LatencyServer, "serve_forever", interrupted)
    (tmp_path / "token").write_text(TOKEN + "\n")
    args = argparse.Namespace(host="127.0.0.1", port=0, threads=1, max_mb=1, quiet=True,
                              token_file=str(tmp_path / "token"))
    assert latency_server.serve(args) == 0
    line = capsys.readouterr().out.strip()
    fp = latency_server.device_fingerprint(1)
    assert line.startswith("latency server on http://127.0.0.1:")
    assert line.endswith(f"({fp['name']}, {fp['cpus']} cores, {fp['os']}/{fp['arch']}, "
                         f"onnxruntime {fp['onnxruntime']}, 1 thread(s))")


def test_a_reference_too_large_to_feed_is_refused(server):
    """The reference's own input is held to a candidate's caps (it is allocated before the run limit)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 60000, 60000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 60000, 60000])])
    big = onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    status, got = ask(server, f"/measure?shape=1,1,8,8&reference={len(big)}", big + model_bytes())
    assert status == 400 and "2**26 elements" in got["error"]
    assert ask(server, "/device")[0] == 200  # and it keeps serving


def test_a_server_without_reference_timing_is_refused_before_a_study(monkeypatch):
    from types import SimpleNamespace

    from cnnsearch import latency_remote
    from cnnsearch.errors import RecipeError

    monkeypatch.setattr(latency_remote, "call", lambda server, path, timeout: {"threads": 1})  # an older server
    latency = SimpleNamespace(server="http://127.0.0.1:9", threads=1, reference=True)
    with pytest.raises(RecipeError, match="predates timing with a reference network"):
        latency_remote.check_server(latency)
    latency_remote.check_server(SimpleNamespace(server="http://127.0.0.1:9", threads=1, reference=False))


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765?x=1", "http://127.0.0.1:8765#here", "http://a:b@127.0.0.1:8765",
                                 "http://u@127.0.0.1:8765", "http://127.0.0.1:8765/path", "http://:8765"])
def test_an_address_with_anything_but_scheme_host_and_port_is_refused(url):
    with pytest.raises(RecipeError, match="must be http://HOST:PORT"):
        check_server_url(url)
    assert check_server_url("https://127.0.0.1:8765/") == "https://127.0.0.1:8765"


def test_a_model_that_takes_anything_but_one_float_tensor_is_refused_in_words():
    onnx = pytest.importorskip("onnx")
    T = onnx.TensorProto
    ints = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                  [onnx.helper.make_tensor_value_info("x", T.INT64, [1, 4])],
                                  [onnx.helper.make_tensor_value_info("y", T.INT64, [1, 4])])
    two = onnx.helper.make_graph([onnx.helper.make_node("Add", ["x", "z"], ["y"])], "g",
                                 [onnx.helper.make_tensor_value_info(n, T.FLOAT, [1, 4]) for n in ("x", "z")],
                                 [onnx.helper.make_tensor_value_info("y", T.FLOAT, [1, 4])])
    timer = ls.Timer()
    for graph in (ints, two):
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        model.ir_version = 8
        with pytest.raises(BadModel, match="^the model must take one float tensor$"):
            timer.measure(model.SerializeToString(), (1, 4))


def test_the_token_s_absence_and_an_unreachable_server_are_said_plainly(monkeypatch):
    from cnnsearch.latency_remote import call, token

    monkeypatch.setenv(TOKEN_ENV, "  ")
    with pytest.raises(RecipeError, match=rf"^latency.server: set {TOKEN_ENV} to the server's token \(the first "
                                          r"line of its --token-file\)$"):
        token()
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LatencyServerError) as caught:
        call(closed, "/device", timeout=5)
    assert str(caught.value).startswith(f"latency server {closed} unreachable: ")
    assert "urlopen" not in str(caught.value)  # the reason, not urlopen's repr of it


def test_a_timer_s_places_are_the_one_timing_and_its_queue():
    timer = ls.Timer(queue=0)  # no waiting room: one model at a time, the next refused
    assert timer.places.acquire(blocking=False) and not timer.places.acquire(blocking=False)
    timer = ls.Timer(queue=2)
    assert [timer.places.acquire(blocking=False) for _ in range(4)] == [True, True, True, False]


def test_every_option_of_the_server_says_its_default_in_its_help():
    import argparse

    parser = argparse.ArgumentParser()
    ls.add_arguments(parser)
    defaults = {a.dest: a for a in parser._actions if a.default not in (None, False, argparse.SUPPRESS)}
    assert set(defaults) == {"host", "port", "threads", "max_mb"}
    for dest, action in defaults.items():
        assert f"(default {action.default}" in action.help, dest
    assert f"largest model accepted, MiB (default {ls.MAX_MB})" in parser.format_help()
    assert [a.help for a in parser._actions if a.dest == "token_file"] == [
        f"file whose first line is the token (default: ${TOKEN_ENV})"]


def test_a_timer_times_by_its_own_protocol_and_names_its_runtime():
    got = ls.Timer(**{**FAST, "rounds": 2}).measure(model_bytes(), (1, 1, 8, 8))
    assert got["rounds"] == 2 and len(got["round_medians_ms"]) == 2  # not the default protocol's 3
    assert (got["runtime"], got["batch_size"]) == ("onnxruntime", 1)


@pytest.mark.parametrize("body", [b"\x12\x01a", b"\x38\x01"])  # field 2 as bytes; field 7 as a varint
def test_a_body_without_field_7_as_bytes_is_no_model(body):
    """A ModelProto's graph is field 7, length-delimited: another field as bytes, or field 7
    with another wire type, is no graph."""
    with pytest.raises(BadModel, match="not an ONNX model"):
        check_model(body)


def test_an_answer_says_its_length_and_a_short_body_is_400_in_words(server):
    with urllib.request.urlopen(urllib.request.Request(server + "/device",
                                                       headers={"Authorization": f"Bearer {TOKEN}"}), timeout=30) as r:
        raw = r.read()
        assert r.headers["Content-Length"] == str(len(raw)) and json.loads(raw)["threads"] == 1
    host, port = server.rsplit(":", 1)
    with socket.create_connection(("127.0.0.1", int(port)), timeout=30) as s:
        s.sendall(f"POST /measure?shape=1,1,8,8 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  "Content-Length: 100\r\n\r\n".encode() + b"x" * 10)
        s.shutdown(socket.SHUT_WR)  # 10 bytes of the 100 promised, then nothing
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.split()[1] == b"400"
    assert json.loads(payload) == {"error": "the body ended before its Content-Length"}


@pytest.mark.parametrize("length, code", [("9" * 12, b"413"), ("9" * 13, b"411")])
def test_a_length_of_twelve_digits_is_read_and_one_of_more_is_not(server, length, code):
    """Past 12 digits a Content-Length is not read as a number (no int() of a huge string):
    the client is told one is needed. Twelve digits are read, and are over the cap."""
    host, port = server.rsplit(":", 1)
    with socket.create_connection(("127.0.0.1", int(port)), timeout=30) as s:
        s.sendall(f"POST /measure?shape=1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                  f"Content-Length: {length}\r\n\r\n".encode())
        assert s.recv(100).split()[1] == code


@pytest.mark.parametrize("threads, max_mb, port", [(0, 1, 0), (1, 0, 0), (1, 1, 65536), (1, 1, -1)])
def test_each_bad_server_setting_alone_is_one_line_and_exit_2(tmp_path, capsys, threads, max_mb, port):
    import argparse

    (tmp_path / "token").write_text(TOKEN + "\n")
    args = argparse.Namespace(host="127.0.0.1", port=port, threads=threads, max_mb=max_mb, quiet=True,
                              token_file=str(tmp_path / "token"))
    assert ls.serve(args) == 2
    assert capsys.readouterr().err == "error: --threads and --max-mb must be >= 1, --port in 0..65535\n"
