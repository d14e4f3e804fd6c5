"""Tabular benchmarks made with cnnsearch's own code: every architecture of a finite space,
trained on a task with fixed training hyperparameters, so that whole searches can be
replayed in seconds (``search_quality.py --table FILE``), as NAS-Bench-101/201 do.

Per architecture (one JSON line): ``params`` (the Optuna parameters that sample it),
``spec`` (its ArchSpec), ``digest``; ``n_params``, ``flops``; ``latency_ms`` and
``latency_iqr_ms`` (``latency.measure``, a short protocol: one thread, batch 1);
``brief``: the search's brief run (``epochs``, per-epoch ``val`` accuracy, ``train_loss_sum``
(the summed training loss of each epoch), ``steps_per_epoch``, ``train_s`` per epoch, and
the brief weights' ``test`` accuracy); ``long``: the same architecture trained from scratch
for ``LONG_FACTOR`` x the epochs (``epochs``, ``val``, ``test``, ``train_s``). Training uses
``cnnsearch.train.train`` with the space's fixed hyperparameters and seed 0 (one seed per
architecture: the table holds no seed-to-seed noise).

The table is ``OUT`` (gzip, JSON lines): a header line (``{"header": ...}``: the command
that built it, commit, task, the space's text, data options, epochs, what each row holds),
then one row per architecture. Resumable: rows land in ``OUT.part`` as they finish (one
line each, flushed); a rerun skips every architecture already in ``OUT`` or ``OUT.part``,
and writes ``OUT`` anew (rows in enumeration order) when it stops. Architectures run in a
seeded shuffle of the space's enumeration, so ``--limit N`` tables a random sample that a
later run extends.

    python benchmarks/tabulate.py --task shapes --space mini --out benchmarks/tables/shapes-mini.jsonl.gz
    python benchmarks/tabulate.py --task shapes --out benchmarks/tables/shapes.jsonl.gz   # the full table
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

# run as a script, this folder comes first on sys.path, where this file would shadow the
# `tabulate` package torch imports: take it off before torch is imported
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from cnnsearch.build import build  # noqa: E402
from cnnsearch.data import load_data  # noqa: E402
from cnnsearch.hparams import TrainConfig  # noqa: E402
from cnnsearch.latency import measure  # noqa: E402
from cnnsearch.shapes import check  # noqa: E402
from cnnsearch.space import SearchSpace, parse_space  # noqa: E402
from cnnsearch.train import evaluate, train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SPACES = {"full": ROOT / "benchmarks" / "tables" / "space.toml",
          "mini": ROOT / "benchmarks" / "tables" / "space-mini.toml"}
LONG_FACTOR = 3
# Tasks: small tensors, so one architecture (brief + long run + latency) costs seconds on one core.
TASKS = {
    "shapes": {"dataset": "shapes", "data": {"n": 1600, "size": 16, "classes": 8, "noise": 0.35}, "epochs": 4},
    "shapes-hard": {"dataset": "shapes", "data": {"n": 1600, "size": 16, "classes": 8, "noise": 0.5}, "epochs": 4},
}
# a short latency protocol: the full one (three rounds of >= 30 samples) would dominate the cost
LATENCY = {"threads": 1, "batch_size": 1, "warmup_s": 0.02, "min_runs": 10, "max_runs": 200, "time_cap_s": 0.3,
           "rounds": 1, "lock": False}


class _Walk:
    """A trial-like object that takes the choices ``path`` gives (first choice past it) and
    records what it offered, so that ``enumerate_space`` can walk every branch."""

    def __init__(self, path: list[int]):
        self.path, self.taken, self.params = path, [], {}

    def _choose(self, name: str, values: list):
        k = len(self.taken)
        index = self.path[k] if k < len(self.path) else 0
        self.taken.append((index, len(values)))
        self.params[name] = values[index]
        return values[index]

    def suggest_categorical(self, name, choices):
        return self._choose(name, list(choices))

    def suggest_int(self, name, low, high, step=1, log=False):
        return self._choose(name, list(range(low, high + 1, step)))

    def suggest_float(self, name, *args, **kwargs):
        raise SystemExit(f"error: the space suggests a float ({name}): a tabular space must be finite")


def enumerate_space(space: SearchSpace, *, input: tuple[int, int, int], num_classes: int) -> list[tuple[dict, object]]:
    """Every (params, spec) the space can sample for this input, in a fixed order."""
    found, path = [], []
    while True:
        walk = _Walk(path)
        spec = space.sample(walk, input=input, num_classes=num_classes)
        space.sample_train(walk)
        found.append((walk.params, spec))
        taken = list(walk.taken)
        while taken and taken[-1][0] + 1 >= taken[-1][1]:
            taken.pop()
        if not taken:
            return found
        path = [i for i, _ in taken[:-1]] + [taken[-1][0] + 1]


def train_config(space: SearchSpace, epochs: int) -> TrainConfig:
    hp = space.sample_train(_Walk([]))  # fixed: nothing is suggested
    return TrainConfig.from_params(hp, epochs=epochs, seed=0, device="cpu")


def tabulate_one(params: dict, spec, data, space: SearchSpace, epochs: int) -> dict:
    """One architecture: sizes, latency, the brief run and the long run, with cnnsearch's code."""
    table = check(spec)
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = build(spec)
    lat = measure(model, spec.input, **LATENCY)
    brief = train(model, data, train_config(space, epochs))
    steps = brief.epochs[-1].steps // len(brief.epochs) if brief.epochs else 0
    brief_test = evaluate(model, data.x_test, data.y_test)[1] if brief.epochs else 0.0
    torch.manual_seed(0)
    model = build(spec)
    long = train(model, data, train_config(space, LONG_FACTOR * epochs))
    long_test = evaluate(model, data.x_test, data.y_test)[1] if long.epochs else 0.0
    r4 = lambda v: round(float(v), 4)  # noqa: E731
    return {
        "digest": spec.digest, "summary": spec.summary, "params": params, "spec": spec.to_dict(),
        "n_params": table.params, "flops": table.flops,
        "latency_ms": round(lat.median_ms, 5), "latency_iqr_ms": round(lat.iqr_ms, 5),
        "brief": {"status": str(brief.status), "epochs": epochs, "steps_per_epoch": steps,
                  "val": [r4(e.val_accuracy) for e in brief.epochs],
                  "train_loss_sum": [r4(e.train_loss * steps) for e in brief.epochs],
                  "train_s": [round(e.train_seconds, 3) for e in brief.epochs], "test": r4(brief_test)},
        "long": {"status": str(long.status), "epochs": LONG_FACTOR * epochs, "val": r4(long.accuracy),
                 "test": r4(long_test), "train_s": round(long.train_seconds, 3)},
        "seconds": round(time.perf_counter() - t0, 3),
    }


def read_table(path: Path) -> tuple[dict | None, list[dict]]:
    """A table's header and rows (gzip JSON lines; a ``.part`` file is plain JSON lines)."""
    if not path.exists():
        return None, []
    opener = gzip.open if path.suffix == ".gz" else open
    header, rows = None, []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:  # a row cut short when a run was killed: it runs again
                continue
            if "header" in item:
                header = item["header"]
            else:
                rows.append(item)
    return header, rows


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def header_for(args, space_text: str, total: int) -> dict:
    task = TASKS[args.task]
    return {"command": "python benchmarks/tabulate.py " + shlex.join(sys.argv[1:]), "commit": _commit(),
            "task": args.task, "dataset": task["dataset"], "data": task["data"], "space": space_text,
            "space_name": args.space, "architectures_in_space": total, "brief_epochs": task["epochs"],
            "long_epochs": LONG_FACTOR * task["epochs"], "latency": LATENCY, "train_seed": 0,
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--space", choices=sorted(SPACES), default="full")
    parser.add_argument("--out", required=True, help="the table (.jsonl.gz)")
    parser.add_argument("--limit", type=int, help="table at most this many more architectures")
    parser.add_argument("--order-seed", type=int, default=0, help="the shuffle architectures run in")
    parser.add_argument("--shard", default="0/1", help="I/K: run every K-th architecture from the I-th (one "
                        "process per core); rows go to OUT.partI, and a run without --shard merges them")
    args = parser.parse_args()
    shard, shards = (int(x) for x in args.shard.split("/"))
    torch.set_num_threads(1)
    out = Path(args.out)
    part = Path(args.out + (f".part{shard}" if shards > 1 else ".part"))
    space_text = SPACES[args.space].read_text(encoding="utf-8")
    space = parse_space(space_text, str(SPACES[args.space]))
    task = TASKS[args.task]
    data = load_data(task["dataset"], **task["data"])
    archs = enumerate_space(space, input=data.input_shape, num_classes=data.num_classes)
    old_header, rows = read_table(out)
    for p in sorted(out.parent.glob(out.name + ".part*")):  # every shard's rows so far
        rows += read_table(p)[1]
    if old_header is not None and old_header["space"] != space_text:
        raise SystemExit(f"error: {out} was made from another space; give another --out")
    done = {r["digest"] for r in rows}
    order = torch.randperm(len(archs), generator=torch.Generator().manual_seed(args.order_seed)).tolist()
    todo = [i for i in order[shard::shards] if archs[i][1].digest not in done][:args.limit]
    print(f"{args.task}: {len(archs)} architectures in the space, {len(done)} tabled, {len(todo)} to run",
          file=sys.stderr, flush=True)
    started = time.perf_counter()
    with open(part, "a", encoding="utf-8") as f:
        for n, i in enumerate(todo, 1):
            params, spec = archs[i]
            row = {"index": i, **tabulate_one(params, spec, data, space, task["epochs"])}
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
            f.flush()
            rows.append(row)
            spent = time.perf_counter() - started
            print(f"[{n}/{len(todo)}] {row['summary']:<28} brief val {row['brief']['val'][-1]:.3f} long test "
                  f"{row['long']['test']:.3f} {row['latency_ms']:.3f} ms {row['seconds']:.1f} s; "
                  f"{spent / n:.2f} s/arch, ~{spent / n * (len(todo) - n) / 60:.1f} min to go", file=sys.stderr,
                  flush=True)
    if shards > 1:  # the merge is the plain run's
        return
    header = header_for(args, space_text, len(archs))
    header["commits"] = sorted({*(old_header or {}).get("commits", []), header["commit"]})  # whose code made rows
    partial = out.with_name(out.name + ".writing")  # a kill mid-write leaves the old table whole
    with gzip.open(partial, "wt", encoding="utf-8", compresslevel=9) as f:
        f.write(json.dumps({"header": header}, separators=(",", ":")) + "\n")
        for row in sorted({r["digest"]: r for r in rows}.values(), key=lambda r: r["index"]):
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    os.replace(partial, out)
    for p in out.parent.glob(out.name + ".part*"):
        p.unlink()
    print(json.dumps({"benchmark": "tabulate", "task": args.task, "table": str(out), "rows": len(rows),
                      "architectures_in_space": len(archs), "ran": len(todo),
                      "seconds_per_architecture": round((time.perf_counter() - started) / max(1, len(todo)), 3),
                      "bytes": out.stat().st_size}), flush=True)


if __name__ == "__main__":
    main()
