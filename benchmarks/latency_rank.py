"""Can latency rank networks? Ten networks of distinct sizes, each timed twice in different
orders (ascending, then a shuffled order), by the same protocol a search uses.

Prints one JSON line: both rankings' agreement as Kendall's tau (target >= 0.9), and how
far each network's two figures differ.

    python benchmarks/latency_rank.py [--busy]     # --busy: one core kept busy meanwhile
"""

import argparse
import json
import multiprocessing
import random
import time

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
    args = parser.parse_args()
    stop = multiprocessing.Event()
    hog = multiprocessing.Process(target=_spin, args=(stop,), daemon=True) if args.busy else None
    if hog:
        hog.start()
    t0 = time.perf_counter()
    try:
        models = [(s, build(spec(*s))) for s in SIZES]
        first = {s: measure(m, (3, 32, 32)).median_ms for s, m in models}
        order = models[:]
        random.Random(1).shuffle(order)
        second = {s: measure(m, (3, 32, 32)).median_ms for s, m in order}
    finally:
        if hog:
            stop.set()
            hog.join()
    a = [first[s] for s in SIZES]
    b = [second[s] for s in SIZES]
    tau = kendalltau(a, b).statistic
    print(json.dumps({
        "benchmark": "latency_rank",
        "busy_core": args.busy,
        "networks": len(SIZES),
        "kendall_tau": round(float(tau), 4),
        "target_tau": 0.9,
        "max_rel_diff": round(max(abs(x / y - 1) for x, y in zip(a, b)), 4),
        "first_ms": [round(v, 4) for v in a],
        "second_ms": [round(v, 4) for v in b],
        "seconds": round(time.perf_counter() - t0, 1),
    }))


if __name__ == "__main__":
    main()
