"""Bad input, anywhere: one `error:` line and exit 2, nothing created; never a traceback."""

import math
from pathlib import Path

import optuna
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnsearch.cli import main
from cnnsearch.errors import CnnSearchError
from cnnsearch.recipe import check_runnable, from_dict
from cnnsearch.shapes import check
from cnnsearch.space import _parse
from tests.broken_images import broken_images, png_bytes
from tests.conftest import run_cli
from tests.study_helpers import TINY_SPACE, run_recipe, write_recipe

scalars = st.one_of(st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True, allow_infinity=True),
                    st.text(max_size=12),
                    st.sampled_from(["cuda", "cuda:7", "cpu", "auto", "folder:/missing", "digits", "shapes",
                                     "../../etc/passwd", "__import__('os')", "cuda:x", "cuda:", "cpu:3", "max", "none", "same", "half", "sgd",
                                     "accuracy", "latency_ms", "tpe", "random"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
RECIPE_KEYS = ["name", "space", "dataset", "data", "objectives", "trials", "seed", "sampler", "storage",
               "artifacts", "train", "latency", "limits", "early_stopping", "max_consecutive_failures",
               "epochs", "device", "batch_size", "threads", "n", "size", "val_fraction", "max_params",
               "max_latency_ms", "enabled", "margin", "min_epoch", "bogus"]
SPACE_KEYS = ["depth", "min_side", "block", "blocks", "head", "train", "description", "out_channels", "kernel_size",
              "stride", "padding", "activation", "norm", "pool", "pool_size", "dropout", "residual", "lr",
              "batch_size", "optimizer", "momentum", "hidden", "hidden_layers", "low", "high", "step", "log", "0",
              "bogus"]


def _tree(keys):
    leaf = st.one_of(values, st.dictionaries(st.sampled_from(keys), values, max_size=4))
    return st.dictionaries(st.sampled_from(keys), st.one_of(leaf, st.dictionaries(st.sampled_from(keys), leaf,
                                                                                 max_size=3)), max_size=6)


@settings(max_examples=400, deadline=None, derandomize=True,  # the same examples in every CI run
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_tree(RECIPE_KEYS))
def test_any_recipe_is_accepted_or_refused_in_one_line(tmp_path, data):
    (tmp_path / "space.toml").write_text(TINY_SPACE)
    try:
        recipe = from_dict({"name": "fuzz", "space": "space.toml", **data}, tmp_path)
        check_runnable(recipe)
    except CnnSearchError as exc:
        assert str(exc) and "\n" not in str(exc)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(data=_tree(SPACE_KEYS), shape=st.sampled_from([(1, 8, 8), (3, 32, 32), (3, 5, 7)]))
def test_any_space_is_accepted_or_refused_and_its_samples_check(data, shape):
    try:
        space = _parse(data, "fuzz.toml")
    except CnnSearchError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):  # a space that parses samples specs that check() accepts or refuses
        trial = study.ask()
        try:
            check(space.sample(trial, input=shape, num_classes=3))
        except CnnSearchError as exc:
            assert "\n" not in str(exc)
        hp = space.sample_train(trial)
        assert all(not isinstance(v, float) or math.isfinite(v) for v in hp.values())
        study.tell(trial, 0.0)


@pytest.mark.slow
def test_machine_and_output_errors_are_one_line_and_create_nothing(tmp_path):
    for old, new, expected in (
            ('device = "cpu"', 'device = "cuda:64"', "train.device: 'cuda:64', but this machine has "),
            ('device = "cpu"', 'device = "cpu"\n[latency]\ndevice = "cuda:65"', "latency.device: 'cuda:65', but"),
            ('device = "cpu"', 'device = "cuda:x"', "train.device: 'cuda:x' is not one of"),
            ('dataset = "digits"', f'dataset = "folder:{tmp_path}/none"', "dataset: ")):
        recipe = write_recipe(tmp_path)
        recipe.write_text(recipe.read_text().replace(old, new))
        result = run_cli("search", str(recipe))
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
        assert not (tmp_path / "tiny.db").exists()
    spec = tmp_path / "spec.json"
    spec.write_text('{"input": [1, 8, 8], "num_classes": 2, "blocks": [{"out_channels": 4, "kernel_size": 3}]}')
    out = tmp_path / "new" / "deeper" / "m.py"
    result = run_cli("export", "--spec", str(spec), "-o", str(out), "--weights", str(tmp_path / "w" / "m.safetensors"))
    assert result.returncode == 0, result.stderr  # missing output folders are made
    assert out.exists() and (tmp_path / "w" / "m.safetensors").exists()
    (tmp_path / "file").write_text("")
    result = run_cli("export", "--spec", str(spec), "-o", str(tmp_path / "file" / "m.py"))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1


# ---------------------------------------------------------------- every bad input, through the CLI

SPEC = '{"input": [1, 8, 8], "num_classes": 2, "blocks": [{"out_channels": 4, "kernel_size": 3}]}'
RECIPE = ('name = "r"\nspace = "space.toml"\ndataset = "digits"\ntrials = 2\n'
          '[train]\nepochs = 1\ndevice = "cpu"\n')
NOT_UTF8 = b"\xff\xfe\x00n\x00a\x00m\x00e"  # UTF-16 with its byte-order mark
LATIN1 = 'name = "café"\n'.encode("latin-1")
NOT_A_DATABASE = "# notes\nnot a database\n"
GOOD = {"space.toml": TINY_SPACE, "r.toml": RECIPE, "spec.json": SPEC}


def _recipe(*, top: str = "", train: str = "", dataset: str = "digits") -> dict:
    """The files of a recipe r.toml (with its space) changed at the top or in [train]."""
    text = top + RECIPE.replace('"digits"', f'"{dataset}"') + train
    return {**GOOD, "r.toml": text}


def _photo_folder(bad: bytes) -> dict:
    """img/ with two classes of readable photos, and ``bad`` as the last photo of the second."""
    return {**{f"img/{c}/{i}.png": png_bytes(10) for c in "ab" for i in range(4)}, "img/b/9.png": bad}


# label, argv, the files written first (path in the row's folder: text or bytes), what the one error line
# says. In argv and in text files {tmp} is the row's folder, {study} a finished one-trial study's URL and
# {study_recipe} its recipe (a module fixture, made only for the rows that use it).
R, SPEC_AT, SPACE_AT = "{tmp}/r.toml", "{tmp}/spec.json", "{tmp}/space.toml"  # GOOD's files
NO_FILE = "cannot read (No such file or directory)"
BAD_INPUTS = [
    ("unknown subcommand", ["nope"], {}, "argument command: invalid choice: 'nope'"),
    ("search: no recipe", ["search"], {}, "give a recipe (.toml), or --storage URL and --study NAME"),
    ("search: missing recipe", ["search", "{tmp}/none.toml"], {}, f"none.toml: {NO_FILE}"),
    ("recipe: unknown key", ["search", R], _recipe(top="bogus = 1\n"), "r.toml: bogus: unknown key"),
    ("recipe: unknown [train] key", ["search", R], _recipe(train="epoch = 3\n"),
     "r.toml: train.epoch: unknown key"),
    ("recipe: unknown data option", ["search", R], _recipe(train="[data]\nbogus = 1\n"),
     "data.bogus: not an option of digits"),
    ("recipe: bad TOML", ["search", R], {**GOOD, "r.toml": "name = \n"}, "r.toml: not valid TOML"),
    ("recipe: not UTF-8", ["search", R], {**GOOD, "r.toml": NOT_UTF8},
     "r.toml: not UTF-8 text (byte 0xff at offset 0)"),
    ("recipe: latin-1", ["status", R], {**GOOD, "r.toml": LATIN1},
     "r.toml: not UTF-8 text (byte 0xe9 at offset 11)"),
    ("recipe: its space not UTF-8", ["search", R], {**GOOD, "space.toml": NOT_UTF8},
     "r.toml: space: {tmp}/space.toml: not UTF-8 text"),
    ("recipe: its space missing", ["search", R], {"r.toml": RECIPE}, "r.toml: space: cannot read"),
    ("recipe: a device this machine lacks", ["search", R],
     {**GOOD, "r.toml": RECIPE.replace('"cpu"', '"cuda:64"')},
     "train.device: 'cuda:64', but this machine has"),
    ("recipe: missing folder dataset", ["search", R], _recipe(dataset="folder:{tmp}/none"),
     "dataset: {tmp}/none must be a folder with one sub-folder of images per class"),
    ("recipe: storage not a database", ["search", R],
     {**_recipe(top='storage = "sqlite:///notes.txt"\n'), "notes.txt": NOT_A_DATABASE},
     "storage: {tmp}/notes.txt is not an SQLite database file"),
    ("recipe: storage in a missing folder", ["search", R],
     _recipe(top='storage = "sqlite:///no/such/r.db"\n'), "storage: folder {tmp}/no/such does not exist"),
    ("search: --trials 0", ["search", R, "--trials", "0"], GOOD, "--workers and --trials must be at least 1"),
    ("search: --workers 0", ["search", R, "--workers", "0"], GOOD, "--workers and --trials must be at least"),
    ("search: --timeout nan", ["search", R, "--timeout", "nan"], GOOD, "--timeout: nan is not a positive number"),
    ("search: --timeout -1", ["search", R, "--timeout", "-1"], GOOD, "--timeout: -1.0 is not a positive number"),
    ("search: --study with a space", ["search", R, "--study", "a b"], GOOD, "--study: 'a b' must be letters"),
    ("search: --trials x", ["search", R, "--trials", "x"], GOOD, "argument --trials: invalid int value: 'x'"),
    ("search: empty 0-byte photo", ["search", R],
     {**_recipe(dataset="folder:{tmp}/img"), **_photo_folder(b"")},
     "folder:{tmp}/img: cannot read {tmp}/img/b/9.png ("),
    ("search: broken PNG photo", ["search", R],
     {**_recipe(dataset="folder:{tmp}/img"), **_photo_folder(broken_images()["broken-chunk"])},
     "cannot read {tmp}/img/b/9.png (broken PNG file"),
    ("status: unknown study", ["status", "--storage", "{study}", "--study", "ghost"], {},
     "study 'ghost' not found in sqlite:///"),
    ("status: missing database file", ["status", "--storage", "sqlite:///{tmp}/none.db", "--study", "ghost"],
     {}, "study 'ghost' not found: {tmp}/none.db does not exist"),
    ("status: storage not a database", ["status", "--storage", "sqlite:///{tmp}/notes.txt", "--study", "x"],
     {"notes.txt": NOT_A_DATABASE}, "storage: {tmp}/notes.txt is not an SQLite database file"),
    ("status: storage a folder", ["status", "--storage", "sqlite:///{tmp}", "--study", "x"], {},
     "storage: {tmp} is a folder, not a database file"),
    ("status: storage not a URL", ["status", "--storage", "tiny.db", "--study", "x"], {},
     "storage: 'tiny.db' is not a database URL"),
    ("finalize: missing database file", ["finalize", "--storage", "sqlite:///{tmp}/none.db", "--study", "x"],
     {}, "study 'x' not found: {tmp}/none.db does not exist"),
    ("report: nothing to report", ["report"], {}, "give one or more recipes, or --storage URL --study NAME"),
    ("report: output is a folder", ["report", "--storage", "{study}", "--study", "tiny", "-o", "{tmp}"], {},
     "{tmp}: is a folder; give a file name"),
    ("export: --trial nope", ["export", "{study_recipe}", "--trial", "nope", "-o", "{tmp}/m.py"], {},
     "--trial: expected best, fastest or a trial number, got 'nope'"),
    ("export: --trial past the last", ["export", "{study_recipe}", "--trial", "7", "-o", "{tmp}/m.py"], {},
     "--trial: study 'tiny' has no trial 7"),
    ("export: output is a folder", ["export", "--spec", SPEC_AT, "-o", "{tmp}"], GOOD,
     "{tmp}: is a folder; give a file name"),
    ("export: output under a file", ["export", "--spec", SPEC_AT, "-o", "{tmp}/spec.json/m.py"], GOOD,
     "{tmp}/spec.json/m.py: cannot create its folder (File exists)"),
    ("export: weights into a folder", ["export", "--spec", SPEC_AT, "-o", "{tmp}/m.py", "--weights", "{tmp}"],
     GOOD, "{tmp}: is a folder; give a file name"),
    ("export: empty --weights", ["export", "--spec", SPEC_AT, "-o", "{tmp}/m.py", "--weights", ""], GOOD,
     "an output path is empty; give a file name"),
    ("export: empty -o", ["export", "--spec", SPEC_AT, "-o", ""], GOOD, "an output path is empty"),
    ("export: huge --seed", ["export", "--spec", SPEC_AT, "-o", "{tmp}/m.py", "--weights", "{tmp}/m.st",
                             "--seed", "99999999999999999999"], GOOD,
     "--seed: 99999999999999999999 is not in [0, 2**64)"),
    ("export: --spec and a recipe", ["export", R, "--spec", SPEC_AT, "-o", "{tmp}/m.py"], GOOD,
     "give a recipe (with --trial) or --spec, not both"),
    ("export: nothing to export", ["export", "-o", "{tmp}/m.py"], {},
     "give --spec SPEC.json, a recipe (.toml)"),
    ("export: no -o", ["export", "--spec", SPEC_AT], GOOD,
     "the following arguments are required: -o/--output"),
    ("export: spec not UTF-8", ["export", "--spec", "{tmp}/s.json", "-o", "{tmp}/m.py"], {"s.json": NOT_UTF8},
     "s.json: not UTF-8 text (byte 0xff at offset 0)"),
    ("show: a .txt file", ["show", "{tmp}/notes.txt"], {"notes.txt": NOT_A_DATABASE},
     "notes.txt: expected a spec (.json), a space (.toml) or a dataset (digits, shapes"),
    ("show: a folder dataset that is not there", ["show", "folder:{tmp}/photos"], {},
     "folder:{tmp}/photos: no such directory"),
    ("show: missing space", ["show", "{tmp}/none.toml"], {}, f"none.toml: {NO_FILE}"),
    ("show: missing spec", ["show", "{tmp}/none.json"], {}, f"none.json: {NO_FILE}"),
    ("show: bad spec JSON", ["show", "{tmp}/s.json"], {"s.json": "{"}, "s.json: not valid JSON"),
    ("show: spec with a bad field", ["show", "{tmp}/s.json"],
     {"s.json": SPEC.replace('"kernel_size": 3', '"kernel_size": 0')}, "blocks[0].kernel_size: "),
    ("show: spec that cannot run on its input", ["show", "{tmp}/s.json"],
     {"s.json": SPEC.replace("3}", "9}")}, "kernel 9"),
    ("show: spec not UTF-8", ["show", "{tmp}/s.json"], {"s.json": NOT_UTF8},
     "s.json: not UTF-8 text (byte 0xff"),
    ("show: spec latin-1", ["show", "{tmp}/s.json"], {"s.json": b'{"input": "\xe9"}'},
     "s.json: not UTF-8 text (byte 0xe9 at offset 11)"),
    ("show: space not UTF-8", ["show", SPACE_AT], {"space.toml": NOT_UTF8}, "space.toml: not UTF-8 text"),
    ("show: space with an unknown key", ["show", SPACE_AT], {"space.toml": "bogus = 1\n" + TINY_SPACE},
     "space.toml: space.bogus: unknown key"),
    ("show: negative --seed", ["show", SPACE_AT, "--seed", "-1"], GOOD, "--seed: -1 is not in [0, 2**32)"),
    ("show: --input 1,2", ["show", SPACE_AT, "--input", "1,2"], GOOD,
     "--input: expected C,H,W such as 3,32,32, got '1,2'"),
    ("show: --input 0,8,8", ["show", SPACE_AT, "--input", "0,8,8"], GOOD,
     "--input: sizes must be positive, got '0,8,8'"),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A study with one finished trial and a met budget (trials = 1): its URL and recipe."""
    from cnnsearch.recipe import load_recipe

    folder = tmp_path_factory.mktemp("finished")
    recipe = write_recipe(folder, trials=1, epochs=1)
    run_recipe(load_recipe(recipe), until=1)
    return {"{study}": f"sqlite:///{folder / 'tiny.db'}", "{study_recipe}": str(recipe)}


def _fill(text, names: dict):
    if isinstance(text, bytes):
        return text
    for key, value in names.items():
        text = text.replace(key, value)
    return text


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("label, argv, files, expected", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_is_one_error_line_exit_2_and_creates_nothing(label, argv, files, expected, tmp_path,
                                                                request, capsys):
    names = {"{tmp}": str(tmp_path)}
    if any("{study" in a for a in argv):
        names.update(request.getfixturevalue("finished"))
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(_fill(content, names))
    before = _listing(tmp_path)
    capsys.readouterr()
    code = main([_fill(a, names) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (code, err)
    assert err.startswith("error: ") and err.count("\n") == 1 and err.endswith("\n"), err
    assert _fill(expected, names) in err, err
    assert out == ""
    assert _listing(tmp_path) == before  # no database, study, report or export appeared


def test_search_on_photos_with_an_unreadable_one_in_any_class_is_one_line_and_no_study(tmp_path, capsys):
    """0 bytes, truncated, a broken PNG chunk, too many pixels: in the first class, or in the
    second, past the first 200 photos, where a probe of the first 200 never looked."""
    recipe = write_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace('"digits"', f'"folder:{tmp_path / "img"}"'))
    for where, count in (("a", 201), ("b", 4)):
        (tmp_path / "img" / where).mkdir(parents=True)
        for i in range(count):
            (tmp_path / "img" / where / f"{i:03d}.png").write_bytes(png_bytes(10, seed=i))
    for kind, content in broken_images().items():
        for where in ("a", "b"):
            bad = tmp_path / "img" / where / "bad.png"
            bad.write_bytes(content)
            code = main(["search", str(recipe)])
            out, err = capsys.readouterr()
            assert code == 2 and err.count("\n") == 1, (kind, where, err)
            expected = f"error: folder:{tmp_path / 'img'}: cannot read {bad} ("
            assert err.startswith(expected), (kind, where, err)
            assert not (tmp_path / "tiny.db").exists(), (kind, where)
            bad.unlink()


def test_report_of_a_study_by_storage_without_output_writes_into_the_working_directory(finished, tmp_path,
                                                                                        monkeypatch, capsys):
    """No recipe to sit beside: STUDY_report.html (and its CSV) where the command runs."""
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--storage", finished["{study}"], "--study", "tiny"]) == 0
    assert f"wrote {tmp_path / 'tiny_report.html'} (1 studies)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny_report.html", "tiny_report_tiny.csv"]
    assert "<html" in (tmp_path / "tiny_report.html").read_text()


# ---------------------------------------------------------------- fuzzing the command line

# {w}: a folder of bad (and a few good) inputs; {study} and {study_recipe}: the finished study (budget met)
BAD_TARGETS = ["{w}/missing.toml", "{w}/missing.json", "{w}/dir", "{w}/binary.toml", "{w}/binary.json",
               "{w}/latin1.toml", "{w}/notes.txt", "{w}/bad.json", "", "{w}/unknown.toml", "{w}/nodb.toml",
               "{w}/cuda.toml", "{w}/latin_space.toml", "-"]
BAD_STORAGES = ["", "nope", "sqlite:///", "sqlite:///{w}/notes.txt", "sqlite:///{w}/dir",
                "sqlite:///{w}/missing.db", "sqlite:///{w}/no/such/x.db", "sqlite:///{w}/binary.json", "mysql://nobody@127.0.0.1:1/x",
                "postgresql+psycopg://nobody@127.0.0.1:1/x?connect_timeout=1"]
STUDIES = ["", "ghost", "tiny", "a b", "x\ny", "../../etc"]
INTS = ["-1", "0", "1", "-99999999999999999999", "99999999999999999999", "", "x", "1.5", "nan"]
FLOATS = ["-1", "0", "nan", "inf", "-inf", "1e308", "", "x"]
OUTPUTS = ["{w}/out/o.py", "{w}/dir", "{w}/notes.txt/o.py", "", "{w}/out/o.html", "{w}/out/w.safetensors"]
TRIALS = ["best", "fastest", "0", "-1", "7", "nope", "", "99999999999999999999"]


def _flags(draw, options: dict) -> list[str]:
    """A random subset of ``options`` (flag: values, or None for a switch), each with a random value."""
    argv = []
    for flag in draw(st.lists(st.sampled_from(sorted(options)), unique=True, max_size=len(options))):
        argv += [flag] if options[flag] is None else [flag, draw(st.sampled_from(options[flag]))]
    return argv


@st.composite
def command_lines(draw):
    """Any subcommand with hostile arguments, but never one that could start training: search
    and finalize only get recipes and storages that are refused, or the study whose budget is met
    (and then no flag that could raise the budget or name another study)."""
    commands = ["show", "status", "report", "export", "finalize", "search", "search-done"]
    command = draw(st.sampled_from(commands))
    # the good inputs drawn as often as all bad ones together, so that the flags after them are reached
    readable = ["{study_recipe}"] * len(BAD_TARGETS) + BAD_TARGETS  # status, report and export only read
    storages = ["{study}"] * len(BAD_STORAGES) + BAD_STORAGES
    if command == "show":
        targets = ["{w}/space.toml", "{w}/spec.json"] * (len(BAD_TARGETS) // 2) + BAD_TARGETS
        return ["show", draw(st.sampled_from(targets))] + _flags(draw, {
            # not a huge --sample: sampling 10^20 architectures is a legitimate long request
            "--sample": [v for v in INTS if not v.startswith("999")], "--seed": INTS, "--classes": INTS,
            "--input": ["1,2", "0,8,8", "-1,8,8", "3,32,32", "3,99999999999,8", "", "a,b,c", "1,1,1"],
            "--json": None})
    if command == "search-done":
        return ["search", "{study_recipe}"] + _flags(draw, {
            "--workers": INTS, "--timeout": FLOATS, "--quiet": None, "--worker-id": ["", "w\n1", "0"]})
    if command in ("search", "finalize"):
        recipe = draw(st.sampled_from([[], *([t] for t in BAD_TARGETS)]))
        options = {"--storage": BAD_STORAGES, "--study": STUDIES}
        if command == "search":
            options.update({"--trials": INTS, "--timeout": FLOATS, "--workers": INTS, "--quiet": None})
        else:
            options.update({"--trial": TRIALS, "--epochs": INTS, "--seeds": INTS, "--json": None})
        return [command, *recipe] + _flags(draw, options)
    if command == "status":
        return ["status", *draw(st.lists(st.sampled_from(readable), max_size=1))] + _flags(draw, {
            "--storage": storages, "--study": STUDIES, "--top": INTS, "--json": None})
    if command == "report":
        names = draw(st.lists(st.sampled_from(STUDIES), max_size=2))
        studies = [a for name in names for a in ("--study", name)]
        return ["report", *draw(st.lists(st.sampled_from(readable), max_size=2)), *studies] + _flags(draw, {
            "-o": OUTPUTS, "--storage": storages})
    return ["export", *draw(st.lists(st.sampled_from(readable), max_size=1))] + _flags(draw, {
        "--spec": ["{w}/spec.json"] * len(BAD_TARGETS) + BAD_TARGETS, "--trial": TRIALS, "-o": OUTPUTS,
        "--weights": OUTPUTS,
        "--class-name": ["", "Net", "1bad", "class", "a b"], "--seed": INTS, "--storage": storages,
        "--study": STUDIES})


@pytest.fixture(scope="module")
def world(tmp_path_factory, finished):
    """The files the fuzzer's arguments name: every kind of bad input, and the finished study."""
    w = tmp_path_factory.mktemp("world")
    recipe = RECIPE.replace('"r"', '"w"')
    files = {"space.toml": TINY_SPACE, "spec.json": SPEC, "bad.json": "{", "binary.toml": NOT_UTF8,
             "binary.json": NOT_UTF8, "latin1.toml": LATIN1, "notes.txt": NOT_A_DATABASE,
             "unknown.toml": "bogus = 1\n" + recipe,
             "nodb.toml": 'storage = "sqlite:///notes.txt"\n' + recipe,
             "cuda.toml": recipe.replace('"cpu"', '"cuda:64"'),
             "latin_space.toml": recipe.replace("space.toml", "l.toml"),
             "l.toml": 'description = "é"\n'.encode("latin-1")}
    for name, content in files.items():
        (w / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    (w / "dir").mkdir()
    return {"{w}": str(w), **finished}


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=command_lines())
def test_any_command_line_exits_0_or_2_with_one_error_line(world, argv, monkeypatch, capsys):
    monkeypatch.chdir(world["{w}"])  # a report without -o lands here, not in the checkout
    capsys.readouterr()
    code = main([_fill(a, world) for a in argv])
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1, (argv, err)
