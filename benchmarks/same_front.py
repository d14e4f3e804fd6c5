"""The digits demo's study with latency fixed (a function of the network's parameter count,
so timing noise is out): its trials and front as JSON. The same seed must give the same
trials before and after a refactor. Run it in a fresh clone of each commit (the study's
database is made beside the recipe there):

    cd /tmp/old && PYTHONPATH=. /work/main/.venv/bin/python /work/main/benchmarks/same_front.py old.json
    cd /tmp/new && PYTHONPATH=. /work/main/.venv/bin/python /work/main/benchmarks/same_front.py new.json
"""
import json
import sys

import torch

import cnnsearch.latency as L
import cnnsearch.objective as O
from cnnsearch.latency import Latency


def fixed(model, input_shape, **kw):
    n = sum(p.numel() for p in model.parameters())
    fp = L.fingerprint(torch.device(kw.get("device", "cpu")), kw.get("threads", 1))
    return Latency(median_ms=n / 10_000, iqr_ms=0.0, runs=1, calls_per_run=1, settled=True, batch_size=1,
                   fingerprint=fp)


L.measure = fixed
if hasattr(O, "measure"):
    O.measure = fixed
try:
    import cnnsearch.latency_remote as R
    R.measure = fixed
except ImportError:
    pass
import cnnsearch.runner as RN  # noqa: E402

RN._retime_front = lambda *a, **k: None  # the end-of-run re-timing: real timings, not part of the comparison
import optuna  # noqa: E402

from cnnsearch.cli import main  # noqa: E402

code = main(["search", "studies/digits.toml", "--quiet"])
study = optuna.load_study(study_name="digits", storage="sqlite:///studies/digits.db")
rows = [{"n": t.number, "params": t.params, "values": t.values, "status": t.user_attrs.get("status"),
         "summary": t.user_attrs.get("summary")} for t in study.trials]
front = sorted(t.number for t in study.best_trials)
json.dump({"code": code, "trials": rows, "front": front}, open(sys.argv[1], "w"), indent=1, default=str)
print("exit", code, "trials", len(rows), "front", front)
