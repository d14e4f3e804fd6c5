"""The package's shape: one-way imports, no cycle, modules of one idea each."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cnnsearch"
# What each module does. The writing side makes and stores results (a study's trials, their
# weights): runner and finalize are writers. The reading side reads a study and presents it (it
# never writes one: test_the_reading_side_writes_no_study). The command line sits on top.
CLI = {"cli", "cli_args", "cli_show", "__main__"}
READING = {"report", "results", "report_page", "plots", "exporting"}
WRITING = {"objective", "study", "storage", "train", "latency", "data", "build", "shapes", "blocks", "stages", "spec",
           "space", "recipe", "hparams", "trials", "ops", "errors", "interrupt", "export", "early_stopping",
           "recovery", "quiet", "version", "baselines", "objectives", "artifacts", "latency_server", "recipe_sections",
           "latency_reference",
           "latency_remote", "runner", "finalize", "cli_format", "samplers", "evolution"}
# the one crossing: a writer reads its study as data (report.trials_frame, pick_trial, ...):
# runner re-times the front and sums up, finalize picks the trial it retrains
STUDY_AS_DATA = {"report"}


def imports_of(path: Path) -> set[str]:
    """cnnsearch modules ``path`` imports, at the top or inside functions alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:  # from . import x: a module, or a name of the package itself
                found |= {a.name if (PACKAGE / f"{a.name}.py").exists() else "__init__" for a in node.names}
            elif node.module and node.module.split(".")[0] == "cnnsearch":
                parts = node.module.split(".")
                found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "cnnsearch":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def graph() -> dict[str, set[str]]:
    return {p.stem: imports_of(p) - {p.stem} for p in PACKAGE.glob("*.py")}


def test_the_import_graph_has_no_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path, node, nxt][path.index(nxt)
                                     if nxt in path else 0:]))
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [])


def reach(g: dict[str, set[str]], module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for nxt in g[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_writing_side_imports_nothing_from_reporting_or_the_cli():
    g = graph()
    assert WRITING | READING | CLI | {"__init__"} == set(g), "classify every module as writing, reading or the CLI"
    for module in WRITING:
        found = reach(g, module) & (READING | CLI)
        assert found <= STUDY_AS_DATA, f"{module} reaches {sorted(found)}"
    for module in STUDY_AS_DATA:  # the study as data stands on the writing side's vocabulary alone
        assert not reach(g, module) & ((READING - {module}) | CLI), module
    for module in READING:
        assert not reach(g, module) & CLI, module


# calls that write a study or its artifacts (an in-memory study a reader builds is not one)
WRITE_CALLS = {"set_user_attr", "set_user_attrs", "set_finished_trial_user_attrs", "tell", "enqueue_trial",
               "set_metric_names", "set_constraint", "delete_study", "upload", "upload_artifact",
               "set_system_attr", "record_data", "enqueue_baselines", "optimize", "run_worker"}


def writes(path: Path) -> set[str]:
    """The study-writing calls in ``path``'s code: ``create_study`` only with a storage, and
    nothing done to a study made in memory (``copy = optuna.create_study(...)`` without one)."""
    tree = ast.parse(path.read_text())

    def stored(call: ast.Call) -> bool:
        return any(k.arg == "storage" for k in call.keywords)

    in_memory = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)
                 and getattr(node.value.func, "attr", "") == "create_study" and not stored(node.value)
                 for t in node.targets if isinstance(t, ast.Name)}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            receiver = getattr(getattr(node.func, "value", None), "id", None)
            if (name in WRITE_CALLS and receiver not in in_memory) or (name == "create_study" and stored(node)):
                found.add(name)
    return found


def test_modules_are_classed_by_what_they_do():
    """Runner and finalize write the study; the reading side never does."""
    assert writes(PACKAGE / "runner.py") and writes(PACKAGE / "finalize.py")
    wrong = {m: sorted(w) for m in READING if (w := writes(PACKAGE / f"{m}.py"))}
    assert not wrong, f"reading modules that write a study: {wrong}"
    writers = {p.stem for p in PACKAGE.glob("*.py") if writes(p)}
    assert writers <= WRITING | CLI, f"writers classed elsewhere: {sorted(writers - WRITING - CLI)}"


def test_the_checker_sees_imports_in_all_their_forms(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from .report import x\nfrom . import spec\nimport cnnsearch.plots\n"
                      "def f():\n    from cnnsearch.cli import main\n")
    assert imports_of(source) == {"report", "spec", "plots", "cli"}


# latency_server.py is one file by design: it is copied alone onto a board without torch
# (issue 23), so the protocol it shares with latency.py and its HTTP server cannot be split;
# 490 since the reference network interleaved in that protocol (item 4) and its calibration
LONGER = {"latency_server.py": 490}


def test_no_module_is_over_400_lines():
    long = {p.name: n for p in PACKAGE.glob("*.py")
            if (n := len(p.read_text().splitlines())) > LONGER.get(p.name, 400)}
    assert not long, f"split these: {long}"


# --- Optuna's private names: storage.py only ---------------------------------------------------
# private-looking names of other libraries that are not Optuna's: the standard library's
# documented ones, and torch's nn.Module._modules (the children a generated network's forward
# indexes, as torch's own containers do)
DOCUMENTED_PRIVATE = {"_exit", "_asdict", "_replace", "_fields", "_missing_", "_value_", "_name_", "_modules"}


def ours(tree: ast.AST) -> set[str]:
    """Private names cnnsearch defines itself: functions, classes, module names, self._x."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {n for n in names if n.startswith("_")}


def private_uses(path: Path, defined: set[str]) -> list[str]:
    """What ``path`` uses of another library's private names, and attributes it sets on a study."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        where = f"{path.name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            parts = node.module.split(".")
            if any(p.startswith("_") for p in parts[1:]) or any(a.name.startswith("_") for a in node.names):
                found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if node.attr not in defined and node.attr not in DOCUMENTED_PRIVATE:
                found.append(f"{where}: .{node.attr}")
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                for t in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if (isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                            and t.value.id == "study" and t.attr != "sampler"):  # Study.sampler is public
                        found.append(f"{where}: study.{t.attr} set")
    return found


def test_private_optuna_names_are_used_in_storage_py_only():
    trees = {p: ast.parse(p.read_text()) for p in PACKAGE.glob("*.py")}
    defined = set().union(*(ours(t) for t in trees.values()))
    found = [use for p in sorted(trees) if p.name != "storage.py" for use in private_uses(p, defined)]
    assert not found, f"private Optuna names belong in storage.py, each with its reason: {found}"


def test_the_private_name_check_sees_what_it_must(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from optuna.study._multi_objective import x\nfrom optuna import _imports\n"
                      "def f(study, t):\n    study.seed, n[study.x] = 1, 0\n    study.sampler = 2\n    return t._trial_id, os._exit\n")
    assert [u.split(": ", 1)[1] for u in private_uses(source, set())] == [
        "from optuna.study._multi_objective import ...", "from optuna import ...", "study.seed set", "._trial_id"]


def test_no_function_is_over_60_lines():
    """A function past 60 lines does more than one job: split it (docs/development.md)."""
    long = {}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60:
                long[f"{path.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert not long, f"split these: {long}"


def test_the_write_detector_sees_writes_and_leaves_in_memory_copies(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f(study, s):\n    copy = optuna.create_study()\n    copy.set_metric_names(['a'])\n"
                      "    copy.tell(1, 2)\n    optuna.create_study(storage=s)\n    study.tell(0, 1.0)\n")
    assert writes(source) == {"create_study", "tell"}
    source.write_text("def f(copy):\n    copy = optuna.create_study()\n    copy.set_metric_names(['a'])\n")
    assert writes(source) == set()
