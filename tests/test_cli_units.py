"""The command line's small parts called in process (argument types, the shape table as text
and JSON, `show`, the second Ctrl-C, the searchable defaults): the CLI tests run in
subprocesses, where mutation testing cannot credit them, so each rule is pinned here too."""

import json

import pytest

from cnnsearch import interrupt
from cnnsearch.cli import main
from cnnsearch.cli_args import UsageError, checked_seed, input_shape, workers_count
from cnnsearch.cli_format import format_table, imbalance, table_json
from cnnsearch.cli_show import class_lines
from cnnsearch.hparams import SEARCHABLE, TrainConfig, searchable_defaults
from cnnsearch.shapes import check
from cnnsearch.spec import ArchSpec
from tests.study_helpers import TINY_SPACE, recorded_studies

SPEC = {"input": [1, 8, 8], "num_classes": 3,
        "blocks": [{"out_channels": 4, "kernel_size": 3, "padding": 1, "pool": "max"}]}


def test_workers_count_takes_a_number_or_auto(monkeypatch):
    from cnnsearch import runner

    monkeypatch.setattr(runner, "auto_workers", lambda: 7)
    assert workers_count("auto") == 7
    assert workers_count("3") == 3
    for text in ("AUTO", "two"):
        with pytest.raises(UsageError, match=f"--workers: expected a number or auto, got '{text}'"):
            workers_count(text)


@pytest.mark.parametrize("text", ["0,8,8", "1,0,8", "1,8,0", "-1,8,8"])
def test_input_shape_refuses_any_size_below_one(text):
    with pytest.raises(UsageError, match="sizes must be positive"):
        input_shape(text)


def test_input_shape_takes_sizes_of_one():
    assert input_shape("1,1,1") == (1, 1, 1)
    assert input_shape("3,32,16") == (3, 32, 16)


def test_a_seed_is_within_zero_and_two_to_the_bits():
    assert checked_seed(0, bits=32) == 0
    assert checked_seed(2**32 - 1, bits=32) == 2**32 - 1
    assert checked_seed(2**40, bits=64) == 2**40
    for bad in (-1, 2**32):
        with pytest.raises(UsageError, match=rf"--seed: {bad} is not in \[0, 2\*\*32\)"):
            checked_seed(bad, bits=32)


def test_searchable_defaults_are_the_train_config_defaults():
    fields = TrainConfig.__dataclass_fields__
    assert searchable_defaults() == {k: fields[k].default for k in SEARCHABLE}


def test_a_second_ctrl_c_writes_one_line_and_exits_130(monkeypatch):
    done = []
    monkeypatch.setattr(interrupt.os, "write", lambda fd, data: done.append(("write", fd, data)))
    monkeypatch.setattr(interrupt.os, "_exit", lambda code: done.append(("exit", code)))
    monkeypatch.setattr(interrupt, "_requested", True)
    with pytest.raises(KeyboardInterrupt):  # the stand-in _exit returns; the real one never does
        interrupt._on_sigint(2, None)
    assert done == [("write", 2, b"error: interrupted twice: stopping at once\n"), ("exit", 130)]


def test_the_first_ctrl_c_is_remembered_and_raised(monkeypatch):
    monkeypatch.setattr(interrupt, "_requested", False)
    with pytest.raises(KeyboardInterrupt):
        interrupt._on_sigint(2, None)
    assert interrupt._requested


def test_imbalance_is_the_ratio_from_twice_on():
    assert imbalance([10, 19]) is None
    assert imbalance([10, 20]) == 2.0
    assert imbalance([10, 29]) == 2.9
    assert imbalance([0, 20]) is None and imbalance([]) is None


def test_the_shape_table_as_text_aligns_names_left_and_numbers_right():
    lines = format_table(check(ArchSpec.from_dict(SPEC))).splitlines()
    header, rule, first = lines[0], lines[1], lines[2]
    assert header.split() == ["layer", "op", "output", "shape", "params", "FLOPs"]
    widths = [len(cell) for cell in rule.split("  ")]
    assert set(rule.replace("  ", "")) == {"-"} and len(widths) == 5
    assert first.split() == ["input", "1x8x8"] and first.startswith("input ")
    conv = lines[3]
    assert conv.split() == ["conv1", "conv", "4x8x8", "40", "4.61k"]
    # each cell padded to its column: text on the left, numbers on the right
    cells, at = [], 0
    for w in widths:
        cells.append(conv[at:at + w])
        at += w + 2
    assert cells == ["conv1".ljust(widths[0]), "conv".ljust(widths[1]), "4x8x8".ljust(widths[2]),
                     "40".rjust(widths[3]), "4.61k".rjust(widths[4])]
    assert lines[-2] == ""
    assert lines[-1] == ("spatial: 8->4   params: 235   FLOPs: 4.99k (4,992)   peak activations: "
                         f"{lines[-1].split('peak activations: ')[1]}")
    assert lines[-1].endswith("B per image") and len(lines) == 2 + 1 + 5 + 2


def test_the_shape_table_as_json_names_every_figure():
    table = check(ArchSpec.from_dict(SPEC))
    data = table_json(table)
    assert data["input"] == [1, 8, 8] and data["output_shape"] == [3]
    assert data["peak_activation_bytes"] == table.peak_activation_bytes > 0
    assert data["rows"][0] == {"name": "conv1", "op": "conv", "shape": [4, 8, 8], "params": 40, "flops": 4608}
    assert sum(r["flops"] for r in data["rows"]) == data["flops"] == table.flops


def test_show_a_spec_as_text_or_json(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(SPEC))
    assert main(["show", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[:2] == ["layer", "op"]
    assert main(["show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"][0]["name"] == "conv1"


def test_show_something_else_names_what_it_takes(tmp_path, capsys):
    assert main(["show", str(tmp_path / "notes.txt")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {tmp_path / 'notes.txt'}: expected a spec (.json), a space (.toml) or a dataset "
        "(digits, shapes, folder:PATH, a torchvision name)")


def test_show_a_space_counts_where_samples_are_invalid(tmp_path, capsys):
    space = tmp_path / "space.toml"
    space.write_text(TINY_SPACE.replace("depth = {low = 1, high = 2}", "depth = {low = 4, high = 4}")
                     .replace("padding = 1", "padding = 0"))
    assert main(["show", str(space), "--input", "1,8,8", "--sample", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("(seed 1): 0 valid, 3 invalid")
    last = out[-1]
    assert last.startswith("invalid at blocks[") and last.endswith(": 3")
    assert main(["show", str(space), "--input", "1,8,8", "--sample", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["input"] == [1, 8, 8] and data["sampled"] == 2 and data["valid"] == 0


def test_class_lines_put_each_split_beside_the_class():
    counts = {"train": {"a": 10, "bb": 1000}, "val": {"a": 2, "bb": 200}}
    lines = class_lines(counts)
    assert lines[0] == "  a   train     10  val      2"
    assert lines[1] == "  bb  train  1,000  val    200"
    assert lines[2].startswith("  imbalanced: the largest class has 100.0x the images of the smallest")


def test_human_counts_from_a_thousand_as_k():
    from cnnsearch.cli_format import human

    assert (human(999), human(1000), human(1001), human(12498500), human(2.5e9)) == ("999", "1k", "1k", "12.5M", "2.5G")


def test_an_empty_output_path_is_one_line(tmp_path, capsys):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(SPEC))
    assert main(["export", "--spec", str(path), "-o", ""]) == 2
    assert capsys.readouterr().err == "error: an output path is empty; give a file name\n"


def test_status_marks_the_front_under_its_header(tmp_path, capsys):
    path = recorded_studies(tmp_path, ["tiny"])  # the recipe's own study
    assert main(["status", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("rank"))
    assert header.endswith("   FLOPs  pareto  architecture")
    rows = [line for line in lines if line.endswith("c4k3")]
    assert rows[0].endswith("    *     c4k3") and rows[1].endswith("          c4k3")


def test_the_demo_runs_search_finalize_status_and_export_on_the_checkout_s_digits_recipe(tmp_path, monkeypatch):
    """The demo's steps in order, on studies/digits.toml beside the package, exporting into
    studies/exports/; without the recipe (an installed wheel), one line that says so."""
    import shutil

    from cnnsearch import cli, runner
    from tests.conftest import ROOT

    monkeypatch.setattr(cli, "__file__", str(tmp_path / "cnnsearch" / "cli.py"))
    with pytest.raises(UsageError, match=r"digits.toml is missing: run the demo from a cnnsearch checkout"):
        cli.cmd_demo(None)
    (tmp_path / "studies").mkdir()
    shutil.copy(ROOT / "studies" / "digits.toml", tmp_path / "studies" / "digits.toml")
    shutil.copytree(ROOT / "spaces", tmp_path / "spaces")
    recipe = str(tmp_path / "studies" / "digits.toml")
    calls = []
    monkeypatch.setattr(runner, "search", lambda path, *a, **k: calls.append(("search", path)) or 0)
    for step in ("finalize", "status", "export"):
        monkeypatch.setattr(cli, f"cmd_{step}", lambda args, step=step: calls.append((step, args)) or 0)
    assert cli.cmd_demo(None) == 0
    assert [c[0] for c in calls] == ["search", "finalize", "status", "export"] and calls[0][1] == recipe
    export = calls[3][1]
    assert (export.recipe, export.trial) == (recipe, "best")
    assert export.output == str(tmp_path / "studies" / "exports" / "digits_best.py")
    assert (tmp_path / "studies" / "exports").is_dir()


@pytest.mark.parametrize("storage, recorded, create", [
    ("sqlite:///x.db", True, True),  # one machine: the folder is made wherever it is missing
    ("postgresql://db/test", False, True),  # the study's first run makes its store
    ("postgresql://db/test", True, False),  # a joining worker: the recorded store must already be there
])
def test_finalize_makes_the_artifact_store_only_where_the_study_has_none_recorded_or_is_local(
        tmp_path, monkeypatch, storage, recorded, create):
    import dataclasses
    from types import SimpleNamespace

    import optuna

    from cnnsearch import artifacts, cli, recipe
    from cnnsearch.recipe import load_recipe
    from tests.study_helpers import write_recipe

    class Stop(Exception):
        pass

    made = dataclasses.replace(load_recipe(write_recipe(tmp_path)), storage=storage)
    study = optuna.create_study()
    if recorded:
        study.set_user_attr("artifacts", str(made.artifacts))
    asked = []

    def check_writable(location, create):
        asked.append((location, create))
        raise Stop  # what follows trains: not this test's business

    monkeypatch.setattr(cli, "_study_of", lambda args, weights: (made, study))
    monkeypatch.setattr(recipe, "check_runnable", lambda r, timing: None)
    monkeypatch.setattr(artifacts, "check_writable", check_writable)
    with pytest.raises(Stop):
        cli.cmd_finalize(SimpleNamespace())
    assert asked == [(made.artifacts, create)]


def test_export_from_a_study_checks_its_output_path_too(tmp_path, capsys):
    path = recorded_studies(tmp_path, ["tiny"])
    (tmp_path / "folder").mkdir()
    capsys.readouterr()
    assert main(["export", str(path), "--study", "tiny", "-o", str(tmp_path / "folder")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'folder'}: is a folder; give a file name\n"


def test_report_of_a_recipe_s_storage_shows_each_study_named(tmp_path, capsys):
    path = recorded_studies(tmp_path, ["first", "second"])
    out = tmp_path / "r.html"
    assert main(["report", str(path), "--study", "first", "--study", "second", "-o", str(out)]) == 0
    assert f"wrote {out} (2 studies)" in capsys.readouterr().out
    assert "<h2>first</h2>" in out.read_text() and "<h2>second</h2>" in out.read_text()


@pytest.mark.parametrize("timeout", ["0", "-1", "inf", "nan"])
def test_search_refuses_a_timeout_that_is_not_a_positive_number_of_seconds(tmp_path, capsys, timeout):
    from tests.study_helpers import write_recipe

    path = write_recipe(tmp_path, trials=2, epochs=1)
    assert main(["search", str(path), "--timeout", timeout]) == 2
    assert capsys.readouterr().err == f"error: --timeout: {float(timeout)} is not a positive number of seconds\n"
    assert not list(tmp_path.glob("*.db"))


def test_search_hands_the_runner_what_the_command_line_says(tmp_path, monkeypatch):
    from cnnsearch import runner
    from tests.study_helpers import write_recipe

    path = write_recipe(tmp_path, trials=2, epochs=1)
    seen = {}
    monkeypatch.setattr(runner, "search", lambda path, recipe, **kwargs: seen.update(kwargs) or 0)
    assert main(["search", str(path), "--worker-id", "w7@lab", "--timeout", "0.5", "--trials", "3", "--quiet"]) == 0
    assert {k: seen[k] for k in ("worker_id", "timeout", "trials", "quiet", "workers")} == {
        "worker_id": "w7@lab", "timeout": 0.5, "trials": 3, "quiet": True, "workers": 1}
