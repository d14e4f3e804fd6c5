"""Five repeated latency measurements of one model: are they the same number?

Prints one JSON line with the five figures, their median and ``spread`` = max/min - 1
(targets on a CPU: <= 0.05 on a quiet machine, <= 0.10 with one core busy elsewhere:
``--busy`` keeps one core busy while it measures). ``--reference`` times it as
``[latency] reference = true`` does (scaled by the reference network timed beside it) and
also prints the raw figures' spread (``raw_spread``) of the same measurements. ``--runs N``
runs it N times, each in a fresh process, and prints one JSON line with every run's spreads
and how many meet the target.

    python benchmarks/latency.py [--device cpu|cuda] [--runtime torch|onnxruntime] [--reference] [--busy]
    python benchmarks/latency.py --reference --runs 10 [--busy]     # the issue's 10 of 10
"""

import argparse
import json
import multiprocessing
import sys

from repeat import repeat  # this folder

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


def spread(values: list[float]) -> float:
    return round(max(values) / min(values) - 1, 4)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnxruntime"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=None, help="the protocol's rounds (default: measure's)")
    parser.add_argument("--reference", action="store_true", help="scaled by the reference network, as a study does")
    parser.add_argument("--busy", action="store_true", help="keep one core busy while measuring")
    parser.add_argument("--runs", type=int, default=0, help="run it this many times, each in a fresh process")
    args = parser.parse_args()
    if args.runs:
        return summarise(args, repeat(__file__, sys.argv[1:], args.runs))
    spec = ArchSpec.from_dict(SPEC)
    model = build(spec)
    stop = multiprocessing.Event()
    hog = multiprocessing.Process(target=_spin, args=(stop,), daemon=True) if args.busy else None
    if hog:
        hog.start()
    try:
        options = {"rounds": args.rounds} if args.rounds is not None else {}
        runs = [measure(model, spec.input, device=args.device, batch_size=args.batch_size, runtime=args.runtime,
                        reference=args.reference, **options) for _ in range(args.repeats)]
    finally:
        if hog:
            stop.set()
            hog.join()
    medians = [r.median_ms for r in runs]
    result = {"benchmark": "latency", "model_flops": check(spec).flops, "device": args.device,
              "runtime": args.runtime, "reference": args.reference, "fingerprint": runs[0].fingerprint,
              "rounds": runs[0].rounds, "medians_ms": [round(m, 4) for m in medians],
              "median_ms": round(sorted(medians)[len(medians) // 2], 4), "spread": spread(medians),
              "all_settled": all(r.settled for r in runs), "busy_core": args.busy}
    if args.reference:
        raw = [r.raw_median_ms for r in runs]
        result.update(raw_medians_ms=[round(m, 4) for m in raw], raw_spread=spread(raw),
                      reference_ms=[round(r.reference_ms, 4) for r in runs],
                      reference_calibration_ms=round(runs[0].reference_calibration_ms, 4))
    print(json.dumps(result))


def summarise(args, results: list[dict]) -> None:
    target = 0.10 if args.busy else 0.05
    spreads = [r["spread"] for r in results]
    raw = [r["raw_spread"] for r in results if "raw_spread" in r]
    print(json.dumps({"benchmark": "latency", "runs": len(results), "runtime": args.runtime,
                      "reference": args.reference, "busy_core": args.busy, "target_spread": target,
                      "spreads": spreads, "met": sum(s <= target for s in spreads),
                      **({"raw_spreads": raw, "raw_met": sum(s <= target for s in raw)} if raw else {}),
                      "medians_ms": [r["median_ms"] for r in results]}))


if __name__ == "__main__":
    main()
