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

mutants/ is not kept (it is rebuilt on each machine), so each verdict is also recorded in
benchmarks/mutation_results.json with the mutated function's identity (``function_hashes``):
a later run, on another machine, takes a recorded kill as its own while that function is
unchanged, and --unchecked leaves it out (a recorded survivor is run again: a test added
since may kill it). Tests are only added, so a kill holds while the function holds (unless
it hung on another function's code: a full run settles that); a changed function's
verdicts are dropped and its mutants run again. --record writes this run's verdicts there
(`bash dev.sh mutate` does, at the end).
"""

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path

TARGET = 0.90
DETECTED = ("killed", "timeout")
UNDETECTED = ("survived", "no tests", "suspicious", "segfault")
RESULTS = Path(__file__).with_name("mutation_results.json")


def exit_codes(meta_path: Path) -> dict:
    return json.loads(meta_path.read_text())["exit_code_by_key"]


def function_of(name: str) -> str:
    """'cnnsearch.spec.xǁArchSpecǁfrom_dict__mutmut_7' -> 'xǁArchSpecǁfrom_dict', the key of
    mutmut's hash_by_function_name."""
    return name.split(".", 2)[2].rpartition("__mutmut_")[0]


def run_here(meta: dict) -> dict[str, str]:
    """Each mutant's status from this machine's run ('not checked' where it did not run)."""
    from mutmut.stats import status_by_exit_code  # the tool's own names for its exit codes

    return {name: status_by_exit_code[code] for name, code in meta["exit_code_by_key"].items()}


def verdicts(statuses: dict[str, str], *, hashes: dict[str, str], recorded: dict) -> dict[str, str]:
    """The status of each mutant of one module: this run's where it ran the mutant, else a
    recorded kill (or timeout) while the function's identity is still the recorded one. A
    recorded survivor is not carried over: a test added since may kill it, and the hash
    does not see tests, so it is run again."""
    out = {}
    for name, status in statuses.items():
        earlier = recorded.get(name)
        if (status == "not checked" and earlier and earlier["status"] in DETECTED
                and earlier["function_hash"] == hashes.get(function_of(name))):
            status = earlier["status"]
        out[name] = status
    return out


def record_module(recorded: dict, *, statuses: dict[str, str], hashes: dict[str, str], module: str) -> None:
    """Into recorded: this run's verdicts on one module (a re-run's wins), less the recorded
    ones of its mutants that are gone or whose function changed. A function recorded with
    the same tree but another number of mutants got a pragma since: mutmut kept its
    verdicts (same hash) for renumbered mutants, so this run's are not recorded either."""
    renumbered = set()
    for name in [name for name in recorded if name.startswith(f"cnnsearch.{module}.")]:
        was, now = recorded[name]["function_hash"], hashes.get(function_of(name), "")
        if was.split("/")[0] == now.split("/")[0] and was != now:
            renumbered.add(function_of(name))
        if name not in statuses or was != now:
            del recorded[name]
    for name, status in statuses.items():
        if status in DETECTED + UNDETECTED and function_of(name) not in renumbered:
            recorded[name] = {"status": status, "function_hash": hashes[function_of(name)]}


def record(metas: list[Path], recorded: dict, path: Path) -> int:
    """Record this run's verdicts on each module and write them all, a mutant a line;
    returns how many are recorded."""
    for meta_path in metas:
        meta = json.loads(meta_path.read_text())
        record_module(recorded, statuses=run_here(meta), hashes=function_hashes(meta), module=module_of(meta_path))
    lines = [f"{json.dumps(name, ensure_ascii=False)}: {json.dumps(verdict)}" for name, verdict in sorted(recorded.items())]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    return len(recorded)


def module_of(meta_path: Path) -> str:
    return meta_path.name.removesuffix(".py.meta")


def function_hashes(meta: dict) -> dict[str, str]:
    """Each function's identity for recorded verdicts: mutmut's hash of its syntax tree, and
    how many mutants it has. The tree has no comments, so a `# pragma: no mutate` added to a
    function leaves mutmut's hash as it was while renumbering the function's mutants; the
    count changes with it."""
    counts = Counter(function_of(name) for name in meta["exit_code_by_key"])
    return {f: f"{h}/{counts[f]}" for f, h in meta["hash_by_function_name"].items()}


def current(meta_path: Path, recorded: dict) -> dict[str, str]:
    meta = json.loads(meta_path.read_text())
    return verdicts(run_here(meta), hashes=function_hashes(meta), recorded=recorded)


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
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="verdicts recorded by earlier runs (default benchmarks/mutation_results.json)")
    parser.add_argument("--record", action="store_true", help="add this run's verdicts to --results")
    args = parser.parse_args()
    recorded = json.loads(args.results.read_text(encoding="utf-8")) if args.results.exists() else {}
    metas = sorted(args.root.glob("*.py.meta"))
    if args.modules:
        metas = [m for m in metas if module_of(m) in args.modules]
    if not metas:
        raise SystemExit("error: no mutants under mutants/: run `bash dev.sh mutate` (or `mutmut run`) first")
    if args.record:
        print(f"{record(metas, recorded, args.results)} verdicts recorded in {args.results}", file=sys.stderr)
    if args.unchecked:  # mutmut runs a named mutant again even when it has a result: name only the rest
        wanted = set(args.names.read_text().split()) if args.names else None
        names = [name for meta in metas for name, status in current(meta, recorded).items()
                 if status == "not checked" and (wanted is None or name in wanted)]
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
        statuses = current(meta, recorded)
        if args.sample:
            statuses = {name: statuses[name] for name in drawn(statuses, args.sample, args.seed)}
        if args.names:
            wanted = set(args.names.read_text().split())
            statuses = {name: status for name, status in statuses.items() if name in wanted}
        counts = Counter(statuses.values())
        if not sum(counts.values()):
            continue
        name = module_of(meta)
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
