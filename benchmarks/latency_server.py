"""Latency through a latency server (``cnnsearch latency-server``) on this machine, against
onnxruntime in-process: do they rank networks alike, and what does the round trip cost?

Starts a server on loopback (a fresh token, a free port, one thread), then for the ten
networks of ``latency_rank.py`` times each in-process (``measure(runtime="onnxruntime")``)
and through the server, interleaved. Prints one JSON line with
- ``kendall_tau``: server against in-process figures (target >= 0.9);
- ``overhead_ms``: per candidate, the client's wall time for one measurement less the
  server's own timing (HTTP, the model check, the session, the first run; target <= 50 ms),
  median and max; ``export_ms``: the ONNX export, which the in-process runtime pays too.

With ``--study-workers K``: also a study of ``--trials N`` on the digits demo's recipe, timed
through the server with ``cnnsearch search --workers K``, then every trained network re-timed
quietly through the server (interleaved, best of two passes): ``study_tau_vs_quiet``
(target >= 0.9 with K = 2 on a 2-core machine).

``--reference``: everything timed as ``[latency] reference = true`` does (the reference
network sent with each model, the figure scaled by its calibration), and the in-study raw
figures' tau too (``study_raw_tau_vs_quiet``). ``--runs N``: N runs in fresh processes, one
JSON line with every run's taus and how many meet 0.9.

    python benchmarks/latency_server.py [--networks 10] [--study-workers 2 --trials 16] [--reference]
    python benchmarks/latency_server.py --networks 3 --study-workers 2 --trials 4 --epochs 1   # quick
"""

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import optuna
import torch
from latency_rank import SIZES, spec  # this folder
from repeat import repeat
from scipy.stats import kendalltau

from cnnsearch import ArchSpec, build
from cnnsearch.latency import measure, onnx_export
from cnnsearch.latency_reference import reference_model
from cnnsearch.latency_remote import call, measure_remote
from cnnsearch.latency_server import TOKEN_ENV

ROOT = Path(__file__).resolve().parent.parent


def start_server(token_file: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(ROOT / "cnnsearch" / "latency_server.py"), "--port", str(port),
                             "--token-file", str(token_file), "--quiet"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("latency server on"):
        raise SystemExit(f"the server did not start: {line}")
    return proc, f"http://127.0.0.1:{port}"


def compare(server: str, networks: int, reference: bool) -> dict:
    sizes = SIZES[:networks]
    models = [(s, build(spec(*s)).eval()) for s in sizes]
    here, there, overhead, export = {}, {}, [], []
    for s, model in models:  # interleaved: a slow moment touches both alike
        here[s] = measure(model, (3, 32, 32), runtime="onnxruntime", reference=reference).median_ms
        t0 = time.perf_counter()
        body, _ = onnx_export(model, torch.randn(1, 3, 32, 32))
        ref = reference_model() if reference else b""
        t1 = time.perf_counter()
        got = call(server, "/measure?shape=1,3,32,32" + (f"&reference={len(ref)}" if ref else ""), body=ref + body)
        t2 = time.perf_counter()
        there[s] = got["median_ms"]
        export.append((t1 - t0) * 1e3)
        overhead.append((t2 - t1 - got["timing_s"]) * 1e3)
    a, b = [here[s] for s in sizes], [there[s] for s in sizes]
    return {"networks": len(sizes), "kendall_tau": round(float(kendalltau(a, b).statistic), 4), "target_tau": 0.9,
            "in_process_ms": [round(v, 4) for v in a], "server_ms": [round(v, 4) for v in b],
            "max_rel_diff": round(max(abs(x / y - 1) for x, y in zip(a, b)), 4),
            "overhead_ms_median": round(median(overhead), 1), "overhead_ms_max": round(max(overhead), 1),
            "target_overhead_ms": 50, "export_ms_median": round(median(export), 1)}


def study(server: str, workers: int, trials: int, epochs: int, reference: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "served.toml"
        recipe.write_text(f"""name = "served"
space = "{ROOT / 'spaces' / 'small-images.toml'}"
dataset = "digits"
trials = {trials}
seed = 0
sampler = "tpe"
[train]
epochs = {epochs}
device = "cpu"
[latency]
runtime = "onnxruntime"
server = "{server}"
reference = {'true' if reference else 'false'}
[early_stopping]
enabled = false
""")
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "cnnsearch", "search", str(recipe), "--workers", str(workers)],
                             capture_output=True, text=True, cwd=ROOT)
        if run.returncode != 0:
            raise SystemExit(f"the study failed: {run.stderr[-2000:]}")
        seconds = time.perf_counter() - t0
        s = optuna.load_study(study_name="served", storage=f"sqlite:///{tmp}/served.db")
        done = [t for t in s.trials if "latency_ms" in t.user_attrs and "arch" in t.user_attrs
                and t.user_attrs.get("latency", {}).get("server") == server]
        models = [(t, build(ArchSpec.from_dict(t.user_attrs["arch"]))) for t in done]
        quiet: dict[int, float] = {}
        for _ in range(2):  # interleaved, best of two: the machine's quiet figure
            for t, model in models:
                lat = measure_remote(model, tuple(t.user_attrs["arch"]["input"]), server=server, reference=reference)
                quiet[t.number] = min(quiet.get(t.number, float("inf")), lat.median_ms)
        in_study = [t.user_attrs["latency_ms"] for t, _ in models]
        again = [quiet[t.number] for t, _ in models]
        tau = kendalltau(in_study, again).statistic if len(models) > 1 else None
        raw = {}
        if reference and len(models) > 1:  # the same in-study measurements, unscaled
            unscaled = [t.user_attrs["latency"]["raw_median_ms"] for t, _ in models]
            raw = {"study_raw_tau_vs_quiet": round(float(kendalltau(unscaled, again).statistic), 4)}
        return {**raw, "study_reference": reference,"study_workers": workers, "study_trials": len(s.trials), "study_networks": len(models),
                "study_seconds": round(seconds, 1),
                "study_tau_vs_quiet": round(float(tau), 4) if tau is not None else None,
                "study_max_rel_diff": round(max(abs(x / y - 1) for x, y in zip(in_study, again)), 4)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--networks", type=int, default=len(SIZES), help="how many of latency_rank's ten")
    parser.add_argument("--study-workers", type=int, default=0, help="also a study with this many workers")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--reference", action="store_true", help="[latency] reference = true throughout")
    parser.add_argument("--runs", type=int, default=0, help="run it this many times, each in a fresh process")
    args = parser.parse_args()
    if args.runs:
        results = repeat(__file__, sys.argv[1:], args.runs)
        pick = {k: [r.get(k) for r in results] for k in ("kendall_tau", "overhead_ms_median", "study_tau_vs_quiet",
                                                         "study_raw_tau_vs_quiet")}
        print(json.dumps({"benchmark": "latency_server", "runs": len(results), "reference": args.reference,
                          "study_workers": args.study_workers, **pick,
                          "study_met": sum((t or 0) >= 0.9 for t in pick["study_tau_vs_quiet"])}))
        return
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        token = secrets.token_urlsafe(32)
        (Path(tmp) / "token").write_text(token)
        os.environ[TOKEN_ENV] = token
        proc, server = start_server(Path(tmp) / "token")
        try:
            result = {"benchmark": "latency_server", "device": call(server, "/device")["name"],
                      **compare(server, args.networks, args.reference)}
            if args.study_workers:
                result.update(study(server, args.study_workers, args.trials, args.epochs, args.reference))
        finally:
            proc.kill()
            proc.wait()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
