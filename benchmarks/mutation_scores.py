"""Mutation score per module, from the results `mutmut run` left in mutants/ (run it with
`bash dev.sh mutate [MODULE...]`, which calls this at the end).

Score = killed / (killed + survived + no tests + suspicious), mutmut's own score for a
module: a mutant whose tests time out counts as killed (the tests noticed: they hung), and
equivalent mutants are not generated at all (`# pragma: no mutate`, each with its reason).
Mutants not yet checked are listed apart and left out of the score.

Prints a Markdown table, then one JSON line.

    python benchmarks/mutation_scores.py [MODULE...]     # default: every module mutmut ran

A full run of the core modules (~5,800 mutants) takes hours on 2 cores. A seeded,
stratified sample (the same N mutants of each module, drawn uniformly) estimates each
module's score in minutes; --draw prints the names for `mutmut run`, --sample scores only them:

    mutmut run $(python benchmarks/mutation_scores.py --draw 30)
    python benchmarks/mutation_scores.py --sample 30

The figures in docs/development.md: the 30 of each module drawn with seed 15, listed in
benchmarks/mutation_sample.txt (`mutmut run $(cat benchmarks/mutation_sample.txt)`, then
`--names benchmarks/mutation_sample.txt`). A source change renumbers a module's mutants:
draw again after one. To go on with a sample run that stopped (mutmut runs every mutant it
is named again): `mutmut run $(python benchmarks/mutation_scores.py --unchecked --names
benchmarks/mutation_sample.txt)`.
"""

import argparse
import json
import random
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

TARGET = 0.90
DETECTED = ("killed", "timeout")
UNDETECTED = ("survived", "no tests", "suspicious", "segfault")


def exit_codes(meta_path: Path) -> dict:
    return json.loads(meta_path.read_text())["exit_code_by_key"]


def drawn(names, n: int, seed: int) -> list[str]:
    """The module's sample: n names drawn uniformly, the same for the same names and seed."""
    names = sorted(names)
    return random.Random(seed).sample(names, min(n, len(names)))


def score(counts: Counter) -> float | None:
    detected = sum(counts[s] for s in DETECTED)
    judged = detected + sum(counts[s] for s in UNDETECTED)
    return detected / judged if judged else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module names (spec, shapes, ...); default all")
    parser.add_argument("--root", type=Path, default=Path("mutants/cnnsearch"))
    parser.add_argument("--draw", type=int, metavar="N", help="print N names per module for `mutmut run`")
    parser.add_argument("--sample", type=int, metavar="N", help="score only the N drawn per module")
    parser.add_argument("--seed", type=int, default=15, help="the sample's seed (default 15)")
    parser.add_argument("--names", type=Path, help="score only the mutants named in this file (whitespace-separated)")
    parser.add_argument("--unchecked", action="store_true",
                        help="print the names (of --names, or all) not yet checked, for `mutmut run` to resume")
    args = parser.parse_args()
    metas = sorted(args.root.glob("*.py.meta"))
    if args.modules:
        metas = [m for m in metas if m.name.removesuffix(".py.meta") in args.modules]
    if not metas:
        raise SystemExit("error: no mutants under mutants/: run `bash dev.sh mutate` (or `mutmut run`) first")
    if args.unchecked:  # mutmut runs a named mutant again even when it has a result: name only the rest
        wanted = set(args.names.read_text().split()) if args.names else None
        names = [name for meta in metas for name, code in exit_codes(meta).items()
                 if code is None and (wanted is None or name in wanted)]
        if not names:  # printed empty, `mutmut run $(...)` would run every mutant
            raise SystemExit("error: every mutant named is checked already")
        print(" ".join(names))
        return
    if args.draw:
        print(" ".join(name for meta in metas for name in drawn(exit_codes(meta), args.draw, args.seed)))
        return
    rows, total = {}, Counter()
    print("| module | mutants | killed | survived | no tests | timeout | not checked | score |")
    print("|---|---|---|---|---|---|---|---|")
    for meta in metas:
        codes = exit_codes(meta)
        if args.sample:
            codes = {name: codes[name] for name in drawn(codes, args.sample, args.seed)}
        if args.names:
            wanted = set(args.names.read_text().split())
            codes = {name: code for name, code in codes.items() if name in wanted}
        counts = Counter(status_by_exit_code[code] for code in codes.values())
        if not sum(counts.values()):
            continue
        name = meta.name.removesuffix(".py.meta")
        total.update(counts)
        s = score(counts)
        rows[name] = {**counts, "score": None if s is None else round(s, 3)}
        print(f"| {name} | {sum(counts.values())} | {counts['killed']} | {counts['survived']} | "
              f"{counts['no tests']} | {counts['timeout']} | {counts['not checked']} | "
              f"{'-' if s is None else f'{s:.1%}'} |")
    s = score(total)
    print(f"| **all** | {sum(total.values())} | {total['killed']} | {total['survived']} | "
          f"{total['no tests']} | {total['timeout']} | {total['not checked']} | "
          f"{'-' if s is None else f'{s:.1%}'} |")
    below = sorted(m for m, r in rows.items() if r["score"] is not None and r["score"] < TARGET)
    print(json.dumps({"benchmark": "mutation_scores", "target": TARGET, "sample_per_module": args.sample,
                      "names": str(args.names) if args.names else None,
                      "seed": args.seed if args.sample else None, "modules": rows,
                      "score": None if s is None else round(s, 3), "below_target": below}))


if __name__ == "__main__":
    main()
