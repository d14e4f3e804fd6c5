"""Run named mutants the way `mutmut run` does, without its fork server: for each mutant, a
fresh pytest process in mutants/, given the tests mutmut's stats say reach the function,
-x, with MUTANT_UNDER_TEST set once they are imported (mutmut's trampolines then switch the
mutated function on; a test module that calls it at import gets the original, as under the
fork server, which imports the tests before any mutant). The
verdict is written into mutmut's own results (mutants/cnnsearch/*.py.meta), where
`mutmut results`, `mutmut show` and benchmarks/mutation_scores.py read it.

Why: under the fork server, the mutants of functions that most tests reach ran at 1-2 a
minute here (each child pays for its tests' collection and ran long after the first
failure could have come); a fresh process, with tests/conftest.py putting the mutated
module's own tests first, kills a typical one in 10-20 s. Needs a finished `mutmut run`
(the mutants and the stats); the tests are the fast suite's, as mutmut's are.

    python benchmarks/mutation_direct.py [--jobs 2] NAME...
    python benchmarks/mutation_direct.py $(python benchmarks/mutation_scores.py --unchecked --names benchmarks/mutation_sample.txt)
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

MUTANTS = Path("mutants")
TIMEOUT_S = 900  # a mutant whose tests hang: mutmut's "timeout", counted as detected
EXIT_TIMEOUT, EXIT_NO_TESTS = 36, 33  # mutmut's codes (mutmut.stats.status_by_exit_code)
VERDICTS = (0, 1, EXIT_TIMEOUT, EXIT_NO_TESTS)  # pytest's 2-5 (interrupted, usage, ...) are no verdict
PLUGIN = "mutation_direct_plugin"  # written into mutants/, the tests' working directory
# the mutant is switched on once the tests are imported, as under mutmut, whose fork server
# imports them before any mutant: a test module that calls the function at import gets the
# original. Before conftest's hook, which orders the tests by the mutant.
PLUGIN_SOURCE = """import os
import pytest
from mutmut.mutation.trampoline import set_mutant_under_test


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    set_mutant_under_test(os.environ["MUTATION_DIRECT_MUTANT"])
"""


def meta_path(name: str) -> Path:
    return MUTANTS / "cnnsearch" / (name.split(".")[1] + ".py.meta")


def run_one(name: str, tests: list[str]) -> tuple[int, float]:
    """(mutmut's exit code for the mutant, seconds)."""
    if not tests:
        return EXIT_NO_TESTS, 0.0
    env = {**os.environ, "MUTANT_UNDER_TEST": "", "MUTATION_DIRECT_MUTANT": name, "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    start = time.monotonic()
    # a session of its own: on a timeout, whatever the tests started goes with them
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", PLUGIN,
                             "-p", "no:randomly", "--rootdir=.", "--tb=no", *tests], cwd=MUTANTS, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        code = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = EXIT_TIMEOUT
    return code, time.monotonic() - start


def record(name: str, code: int, seconds: float) -> None:
    path = meta_path(name)
    meta = json.loads(path.read_text())
    meta["exit_code_by_key"][name] = code
    meta.setdefault("durations_by_key", {})[name] = seconds
    path.write_text(json.dumps(meta, indent=4))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants at once (default: cores)")
    args = parser.parse_args()
    from mutmut.utils.format_utils import mangled_name_from_mutant_name  # mutmut's own key for the stats

    stats = json.loads((MUTANTS / "mutmut-stats.json").read_text())
    reaching = stats["tests_by_mangled_function_name"]
    known = {path: set(json.loads(path.read_text())["exit_code_by_key"])  # each module's meta read once
             for path in {meta_path(n) for n in args.names} if path.exists()}
    unknown = [n for n in args.names if n not in known.get(meta_path(n), ())]
    if unknown:
        raise SystemExit(f"error: no such mutant in mutants/: {unknown[0]} (run `mutmut run` first)")
    todo = [(n, sorted(reaching.get(mangled_name_from_mutant_name(n), ()))) for n in args.names]
    (MUTANTS / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    with ThreadPoolExecutor(args.jobs) as pool:
        running = {pool.submit(run_one, name, tests): name for name, tests in todo}
        for i, done in enumerate(as_completed(running), 1):
            code, seconds = done.result()
            if code in VERDICTS:
                record(running[done], code, seconds)  # this thread alone writes the results
            note = "" if code in VERDICTS else " (no verdict: not recorded; see `mutmut show`, run it again)"
            print(f"{i}/{len(todo)} {running[done]}: exit {code} in {seconds:.0f} s{note}", flush=True)


if __name__ == "__main__":
    main()
