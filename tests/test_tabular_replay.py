"""benchmarks/tabulate.py's enumeration and table files, and the replay of whole studies
on a shipped table (benchmarks/replay.py): fast, no training."""

import importlib.util
import math
import sys

from tests.conftest import ROOT

BENCH = ROOT / "benchmarks"


def sibling(name):
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_spaces_enumerate_every_architecture_once():
    tab = sibling("tabulate")
    for name, count in (("mini", 42), ("full", 584)):
        space = tab.parse_space(tab.SPACES[name].read_text(), name)
        archs = tab.enumerate_space(space, input=(3, 16, 16), num_classes=8)
        assert len(archs) == len({spec.digest for _, spec in archs}) == count
        # the params resample the spec: what a replayed trial looks up
        import optuna
        params, spec = archs[-1]
        assert space.sample(optuna.trial.FixedTrial(params), input=(3, 16, 16), num_classes=8) == spec


def test_a_shipped_table_is_complete_and_holds_what_the_replay_reads():
    tab = sibling("tabulate")
    paths = sorted((BENCH / "tables").glob("*.jsonl.gz"))
    assert [p.name for p in paths] == ["shapes-hard.jsonl.gz", "shapes-mini.jsonl.gz", "shapes.jsonl.gz"]
    for path in paths:
        header, rows = tab.read_table(path)
        assert header["command"].startswith("python benchmarks/tabulate.py")
        assert len(rows) == len({r["digest"] for r in rows}) == header["architectures_in_space"] in (42, 584)
        if header["space_name"] == "full":  # the task the replay names is the one that made it
            assert header["data"] == tab.TASKS[header["task"]]["data"]
        assert header["long_epochs"] == 3 * header["brief_epochs"]
        for row in rows:
            assert len(row["brief"]["val"]) == len(row["brief"]["train_loss_sum"]) == header["brief_epochs"]
            assert row["n_params"] > 0 and row["flops"] > 0 and row["latency_ms"] > 0 and 0 <= row["long"]["test"] <= 1


def test_a_replay_counts_epochs_and_early_stopping_saves_some():
    tab, replay = sibling("tabulate"), sibling("replay")
    table = replay.Table(*tab.read_table(BENCH / "tables" / "shapes-mini.jsonl.gz"))
    out = replay.run_table("shapes", table, strategies=["random", "evolution"], seeds=2, budgets=[25, 50])
    assert out["architectures"] == 42 and out["default"] == replay.DEFAULT == "evolution+es" and out["seeds"] == 2
    for key in ("default_epochs_to_random_final", "hv50_default_vs_random", "kendall_tau_brief_long",
                "kendall_tau_ci90"):
        assert key in out
    lo, hi = out["kendall_tau_ci90"]
    assert lo <= out["kendall_tau_brief_long"] <= hi
    random, stopped = out["strategies"]["random"], out["strategies"]["random+es"]
    assert random["epochs"][50] == 50 * table.epochs  # no early stopping: every trial trains every epoch
    assert stopped["epochs"][50] < random["epochs"][50]
    assert 0 < random["hv_fraction_of_best"][50] <= 1 and not math.isnan(out["hv50_default_vs_random"])
