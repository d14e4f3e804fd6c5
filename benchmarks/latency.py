"""Five repeated latency measurements of one model: are they the same number?

Prints one JSON line with the five figures, their median and ``spread`` = max/min - 1
(targets on a CPU: <= 0.05 on a quiet machine, <= 0.10 with one core busy elsewhere:
``--busy`` keeps one core busy while it measures).

    python benchmarks/latency.py [--device cpu|cuda] [--batch-size 1] [--busy]
"""

import argparse
import json
import multiprocessing

from cnnsearch import ArchSpec, build, check
from cnnsearch.latency import measure

SPEC = {
    "input": [3, 32, 32],
    "num_classes": 10,
    "blocks": [
        {"out_channels": 32, "kernel_size": 3, "padding": 1, "norm": "batch"},
        {"out_channels": 64, "kernel_size": 3, "stride": 2, "padding": 1, "norm": "batch", "residual": True},
        {"out_channels": 64, "kernel_size": 3, "padding": 1, "norm": "batch", "pool": "max"},
    ],
    "head": {"pool": "avg"},
}


def _spin(stop):
    while not stop.is_set():
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=None, help="the protocol's rounds (default: measure's)")
    parser.add_argument("--busy", action="store_true", help="keep one core busy while measuring")
    args = parser.parse_args()
    spec = ArchSpec.from_dict(SPEC)
    model = build(spec)
    stop = multiprocessing.Event()
    hog = multiprocessing.Process(target=_spin, args=(stop,), daemon=True) if args.busy else None
    if hog:
        hog.start()
    try:
        rounds = {"rounds": args.rounds} if args.rounds is not None else {}
        runs = [measure(model, spec.input, device=args.device, batch_size=args.batch_size, **rounds)
                for _ in range(args.repeats)]
    finally:
        if hog:
            stop.set()
            hog.join()
    medians = [r.median_ms for r in runs]
    print(json.dumps({
        "benchmark": "latency",
        "model_flops": check(spec).flops,
        "device": args.device,
        "fingerprint": runs[0].fingerprint,
        "rounds": runs[0].rounds,
        "medians_ms": [round(m, 4) for m in medians],
        "median_ms": round(sorted(medians)[len(medians) // 2], 4),
        "spread": round(max(medians) / min(medians) - 1, 4),
        "all_settled": all(r.settled for r in runs),
        "busy_core": args.busy,
    }))


if __name__ == "__main__":
    main()
