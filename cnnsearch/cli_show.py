"""``cnnsearch show``: a spec's shape table, samples of a space, or a dataset's classes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .cli_args import UsageError, checked_seed, input_shape
from .cli_format import BALANCED_HINT, format_table, human, imbalance, table_json
from .errors import ShapeError
from .shapes import check
from .spec import ArchSpec


def cmd_show(args) -> int:
    target = Path(args.target)
    if target.suffix not in (".json", ".toml"):
        from .data import TORCHVISION

        if args.target in ("digits", "shapes", *TORCHVISION) or args.target.startswith("folder:"):
            return show_dataset(args.target, as_json=args.json)
        raise UsageError(f"{target}: expected a spec (.json), a space (.toml) or a dataset (digits, shapes, "
                         "folder:PATH, a torchvision name)")
    if target.suffix == ".json":
        table = check(ArchSpec.from_json(target))
        print(json.dumps(table_json(table), indent=2) if args.json else format_table(table))
        return 0
    return show_space(target, args)


def class_lines(counts: dict[str, dict[str, int]]) -> list[str]:
    """'  circle     train 640  val 160  test 160' per class, with the smallest and largest
    class's ratio when they differ by 2x or more (balanced_accuracy then says more)."""
    splits = list(counts)
    classes = list(counts[splits[0]])
    width = max(len(c) for c in classes)
    lines = [f"  {c:<{width}}  " + "  ".join(f"{s} {counts[s][c]:>6,}" for s in splits) for c in classes]
    ratio = imbalance(sum(counts[s][c] for s in splits) for c in classes)
    if ratio:
        lines.append(f"  imbalanced: the largest class has {ratio:.1f}x the images of the smallest ({BALANCED_HINT})")
    return lines


def show_dataset(name: str, *, as_json: bool) -> int:
    from .data import load_data

    data = load_data(name)
    counts = data.class_counts()
    if as_json:
        print(json.dumps({**data.description(), "class_counts": counts}, indent=2))
        return 0
    c, h, w = data.input_shape
    print(f"{data.name}: {c}x{h}x{w}, {data.num_classes} classes, "
          + ", ".join(f"{sum(v.values()):,} {split}" for split, v in counts.items()))
    print("\n".join(class_lines(counts)))
    return 0


def show_space(target: Path, args) -> int:
    import optuna

    from .space import load_space

    space = load_space(target)
    shape = input_shape(args.input)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=checked_seed(args.seed, bits=32)))
    samples, reasons = [], Counter()
    for _ in range(args.sample):
        trial = study.ask()
        spec = space.sample(trial, input=shape, num_classes=args.classes)
        study.tell(trial, 0.0)
        try:
            table = check(spec)
        except ShapeError as exc:
            reasons[str(exc).split(":")[0]] += 1
            samples.append({"summary": spec.summary, "valid": False, "error": str(exc)})
            continue
        samples.append({**table_json(table), "valid": True})
    valid = sum(s["valid"] for s in samples)
    if args.json:
        print(json.dumps({"space": str(target), "input": list(shape), "classes": args.classes,
                          "sampled": len(samples), "valid": valid,
                          "invalid_by_layer": dict(reasons), "samples": samples}, indent=2))
        return 0
    print(f"{target}: {len(samples)} samples at input {args.input}, {args.classes} classes "
          f"(seed {args.seed}): {valid} valid, {len(samples) - valid} invalid")
    for i, s in enumerate(samples):
        if s["valid"]:
            print(f"  {i:3d}  {s['summary']:<40} {s['spatial_chain']:<16} "
                  f"params {s['params']:>10,}  FLOPs {human(s['flops']):>7}")
        else:
            print(f"  {i:3d}  {s['summary']:<40} invalid: {s['error']}")
    for where, n in reasons.most_common():
        print(f"invalid at {where}: {n}")
    return 0


