"""``--runs N`` for a benchmark: run it N times, each in a fresh process (so that nothing, such
as the reference network's calibration, carries over from one run to the next), and collect
each run's JSON line."""

import json
import subprocess
import sys


def without_runs(argv: list[str]) -> list[str]:
    """``argv`` less ``--runs N`` / ``--runs=N``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--runs":
            skip = True
        elif not a.startswith("--runs="):
            out.append(a)
    return out


def repeat(script: str, argv: list[str], runs: int) -> list[dict]:
    """The JSON line of ``script`` run ``runs`` times with ``argv`` (less --runs), in order."""
    found = []
    for i in range(runs):
        run = subprocess.run([sys.executable, script, *without_runs(argv)], capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"run {i + 1} of {runs} failed: {run.stderr[-2000:]}")
        found.append(json.loads(run.stdout.strip().splitlines()[-1]))
        print(f"run {i + 1}/{runs}: {run.stdout.strip().splitlines()[-1][:160]}", file=sys.stderr, flush=True)
    return found
