"""Can latency rank networks? Ten networks of distinct sizes, each timed twice in different
orders (ascending, then a shuffled order), by the same protocol a search uses.

Prints one JSON line: both rankings' agreement as Kendall's tau (target >= 0.95 with the
reference network), and how far each network's two figures differ. ``--reference`` times as
``[latency] reference = true`` does and also gives the raw figures' tau (``raw_kendall_tau``)
of the same measurements; ``--runs N`` runs it N times in fresh processes and prints one JSON
line with every run's tau.

    python benchmarks/latency_rank.py [--busy] [--reference] [--runtime onnxruntime] [--runs N]
    python benchmarks/latency_rank.py --networks 4          # a quick check that it runs
"""

import argparse
import json
import multiprocessing
import random
import sys
import time

from repeat import repeat  # this folder
from scipy.stats import kendalltau

from cnnsearch import ArchSpec, build
from cnnsearch.latency import measure


def spec(width: int, depth: int) -> ArchSpec:
    blocks = [{"out_channels": width, "kernel_size": 3, "padding": 1, "norm": "batch",
               "pool": "max" if i % 2 else "none"} for i in range(depth)]
    return ArchSpec.from_dict({"input": [3, 32, 32], "num_classes": 10, "blocks": blocks, "head": {"pool": "avg"}})


SIZES = [(8, 1), (12, 2), (16, 2), (16, 3), (24, 3), (32, 3), (32, 4), (48, 4), (64, 4), (96, 4)]


def _spin(stop):
    while not stop.is_set():
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--busy", action="store_true", help="keep one core busy while timing")
    parser.add_argument("--reference", action="store_true", help="scaled by the reference network, as a study does")
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--networks", type=int, default=len(SIZES), help="the first N of the ten")
    parser.add_argument("--runs", type=int, default=0, help="run it this many times, each in a fresh process")
    args = parser.parse_args()
    if args.runs:
        results = repeat(__file__, sys.argv[1:], args.runs)
        taus = [r["kendall_tau"] for r in results]
        raw = [r["raw_kendall_tau"] for r in results if "raw_kendall_tau" in r]
        print(json.dumps({"benchmark": "latency_rank", "runs": len(results), "busy_core": args.busy,
                          "reference": args.reference, "runtime": args.runtime, "target_tau": 0.95, "taus": taus,
                          "met": sum(t >= 0.95 for t in taus), **({"raw_taus": raw} if raw else {}),
                          "max_rel_diffs": [r["max_rel_diff"] for r in results]}))
        return
    sizes = SIZES[:args.networks]
    stop = multiprocessing.Event()
    hog = multiprocessing.Process(target=_spin, args=(stop,), daemon=True) if args.busy else None
    if hog:
        hog.start()
    t0 = time.perf_counter()
    try:
        models = [(s, build(spec(*s))) for s in sizes]
        first = {s: measure(m, (3, 32, 32), runtime=args.runtime, reference=args.reference) for s, m in models}
        order = models[:]
        random.Random(1).shuffle(order)
        second = {s: measure(m, (3, 32, 32), runtime=args.runtime, reference=args.reference) for s, m in order}
    finally:
        if hog:
            stop.set()
            hog.join()
    a = [first[s].median_ms for s in sizes]
    b = [second[s].median_ms for s in sizes]
    tau = kendalltau(a, b).statistic
    raw = {}
    if args.reference:
        ra, rb = [first[s].raw_median_ms for s in sizes], [second[s].raw_median_ms for s in sizes]
        raw = {"raw_kendall_tau": round(float(kendalltau(ra, rb).statistic), 4),
               "raw_max_rel_diff": round(max(abs(x / y - 1) for x, y in zip(ra, rb)), 4)}
    print(json.dumps({
        "benchmark": "latency_rank",
        "busy_core": args.busy,
        "reference": args.reference,
        "runtime": args.runtime,
        "networks": len(sizes),
        "kendall_tau": round(float(tau), 4),
        "target_tau": 0.95,
        **raw,
        "max_rel_diff": round(max(abs(x / y - 1) for x, y in zip(a, b)), 4),
        "first_ms": [round(v, 4) for v in a],
        "second_ms": [round(v, 4) for v in b],
        "seconds": round(time.perf_counter() - t0, 1),
    }))


if __name__ == "__main__":
    main()
