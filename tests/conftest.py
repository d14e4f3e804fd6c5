import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnnsearch import ArchSpec

ROOT = Path(__file__).resolve().parent.parent
SPECS = Path(__file__).resolve().parent / "specs"
SPACES = sorted((ROOT / "spaces").glob("*.toml"))

torch.set_num_threads(1)  # small models: threads cost more than they give, and keep runs stable


def load_spec(name: str) -> ArchSpec:
    return ArchSpec.from_dict(json.loads((SPECS / name).read_text()))


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``cnnsearch ARGS`` in a subprocess, as a user runs it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "cnnsearch", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def tutorial_cnn64() -> ArchSpec:
    return load_spec("tutorial_cnn64.json")


def pytest_collection_modifyitems(config, items):
    """Under mutmut (`bash dev.sh mutate`): the fastest tests first, by the durations its
    stats run recorded. Its forkserver workers hand a mutant its tests as a set, in no
    order, and stop at the first failure (-x): a mutant that a 1 ms test kills would
    otherwise wait on a 30 s study first. Only the order changes, never which tests run;
    the clean run mutmut makes before the mutants runs in this order too, so an order the
    suite cannot take shows there. Two groups: first the tests of the files that import the
    mutated module by name (``from cnnsearch.spec import ...`` for a mutant of spec), the
    likeliest to kill it at once (else a mutant of a function that most tests reach waits
    on hundreds of quick tests that pass through it), then the rest. Within each, tests
    that use a fixture of ours wider than a test go last, a file at a time: mutmut times
    only a test's call, not its set-up, so one whose module-wide fixture runs a study looks
    instant, and a mutant the quick tests kill should never pay for that study."""
    if "MUTANT_UNDER_TEST" not in os.environ:
        return
    try:  # mutmut runs the suite in mutants/, beside its stats
        durations = json.loads((ROOT / "mutmut-stats.json").read_text())["duration_by_test"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    mutant = os.environ["MUTANT_UNDER_TEST"].split(".")  # cnnsearch.spec.x_parse__mutmut_3; '' on a clean run
    module = mutant[1] if len(mutant) > 2 else None
    if isinstance(durations, dict):
        items.sort(key=lambda item: (not (module and _imports(item.nodeid.split("::")[0], module)),
                                     _shared_setup(item), float(durations.get(item.nodeid) or 0.0)))


@functools.cache
def _imports(test_file: str, module: str) -> bool:
    """Whether the test file imports cnnsearch's ``module`` by name (its own tests)."""
    text = (ROOT / test_file).read_text()
    return f"cnnsearch.{module} import" in text or re.search(rf"from cnnsearch import .*\b{module}\b", text) is not None


def _shared_setup(item) -> str:
    """The test's file when it uses a fixture of ours shared wider than the test (set up
    once for many tests, so its cost is in no test's duration), else ''. pytest's own
    (tmp_path_factory is session-wide) cost nothing to speak of."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = [d for defs in (info.name2fixturedefs.values() if info else ()) for d in defs]
    shared = any(d.scope != "function" and Path(d.func.__code__.co_filename).is_relative_to(ROOT / "tests")
                 for d in definitions)
    return item.nodeid.split("::")[0] if shared else ""
