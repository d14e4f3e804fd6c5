"""benchmarks/mutation_scores.py's recorded verdicts: mutants/ is rebuilt on each machine,
so a verdict carries over in benchmarks/mutation_results.json only while the mutated
function's source (its hash) is unchanged. Pure functions: no mutmut needed."""

import importlib.util
import json
import sys

from tests.conftest import ROOT

A = "cnnsearch.spec.xǁArchSpecǁfrom_dict__mutmut_7"
B = "cnnsearch.spec.x_parse__mutmut_2"
OTHER = "cnnsearch.shapes.x_out__mutmut_1"
HASHES = {"xǁArchSpecǁfrom_dict": "aaa", "x_parse": "bbb"}


def scores():
    spec = importlib.util.spec_from_file_location("benchmarks_mutation_scores", ROOT / "benchmarks" / "mutation_scores.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_function_of_a_mutant_is_mutmuts_key_for_its_hash():
    assert scores().function_of(A) == "xǁArchSpecǁfrom_dict"
    assert scores().function_of("cnnsearch.cli.x_main__mutmut_12") == "x_main"


def test_a_recorded_verdict_counts_while_its_function_is_unchanged():
    m = scores()
    recorded = {A: {"status": "killed", "function_hash": "aaa"}, B: {"status": "killed", "function_hash": "old"}}
    here = {A: "not checked", B: "not checked"}
    assert m.verdicts(here, hashes=HASHES, recorded=recorded) == {A: "killed", B: "not checked"}  # B's changed
    # a verdict of this run wins over the recorded one
    assert m.verdicts({A: "survived", B: "killed"}, hashes=HASHES, recorded=recorded) == {A: "survived", B: "killed"}
    # a recorded survivor is run again: a test added since may kill it
    recorded[A]["status"] = "survived"
    assert m.verdicts(here, hashes=HASHES, recorded=recorded)[A] == "not checked"


def test_recording_adds_this_runs_verdicts_and_drops_stale_ones():
    m = scores()
    gone = "cnnsearch.spec.x_parse__mutmut_99"
    recorded = {
        A: {"status": "survived", "function_hash": "aaa"},
        gone: {"status": "killed", "function_hash": "bbb"},  # no such mutant any more
        "cnnsearch.spec.x_parse__mutmut_1": {"status": "killed", "function_hash": "old"},  # function changed
        OTHER: {"status": "killed", "function_hash": "zzz"},  # another module: left alone
    }
    statuses = {A: "killed", B: "not checked", "cnnsearch.spec.x_parse__mutmut_1": "not checked"}
    m.record_module(recorded, statuses=statuses, hashes=HASHES, module="spec")
    assert recorded == {A: {"status": "killed", "function_hash": "aaa"}, OTHER: {"status": "killed", "function_hash": "zzz"}}


def test_the_results_file_is_one_mutant_a_line_and_reads_back(tmp_path, monkeypatch):
    m = scores()
    meta = tmp_path / "spec.py.meta"
    meta.write_text(json.dumps({"exit_code_by_key": {A: 1, B: None}, "hash_by_function_name": HASHES}))
    monkeypatch.setattr(m, "run_here", lambda meta: {A: "killed", B: "not checked"})
    out = tmp_path / "results.json"
    assert m.record([meta], {}, out) == 1
    assert out.read_text(encoding="utf-8").splitlines() == ["{", f'"{A}": {{"status": "killed", "function_hash": "aaa/1"}}', "}"]
    # on another machine, where mutmut has run nothing yet
    monkeypatch.setattr(m, "run_here", lambda meta: {A: "not checked", B: "not checked"})
    assert m.current(meta, json.loads(out.read_text(encoding="utf-8"))) == {A: "killed", B: "not checked"}


def test_a_pragma_added_to_a_function_voids_its_recorded_verdicts():
    """mutmut hashes a function's syntax tree, which has no comments: a pragma leaves the hash
    and renumbers the mutants; the recorded identity counts them too."""
    m = scores()
    before = {"exit_code_by_key": {A: 1, "cnnsearch.spec.xǁArchSpecǁfrom_dict__mutmut_8": 0}, "hash_by_function_name": HASHES}
    after = {"exit_code_by_key": {A: None}, "hash_by_function_name": HASHES}  # one mutant silenced
    assert m.function_hashes(before)["xǁArchSpecǁfrom_dict"] == "aaa/2"
    recorded = {A: {"status": "killed", "function_hash": m.function_hashes(before)["xǁArchSpecǁfrom_dict"]}}
    assert m.verdicts({A: "not checked"}, hashes=m.function_hashes(after), recorded=recorded) == {A: "not checked"}
    # and mutmut kept its own verdict for the renumbered mutant (same hash): not recorded
    m.record_module(recorded, statuses={A: "killed"}, hashes=m.function_hashes(after), module="spec")
    assert recorded == {}
