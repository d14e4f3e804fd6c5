"""Small recipes written by tests, and a look into their study databases."""

import textwrap
import time
from pathlib import Path

import optuna

from tests.conftest import ROOT

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

TINY_SPACE = """
depth = {low = 1, high = 2}
[block]
out_channels = [4, 8, 16]
kernel_size = 3
padding = 1
pool = ["max", "none"]
[head]
hidden_layers = [0, 1]
hidden = [16, 32]
[train]
lr = {low = 3e-3, high = 1e-2, log = true}
batch_size = 64
"""


def write_recipe(tmp_path: Path, *, name: str = "tiny", extra: str = "", space: str = TINY_SPACE,
                 trials: int = 4, epochs: int = 2, top: str = "", early_stopping: bool | None = False) -> Path:
    """A digits recipe. Early stopping is written off (``early_stopping``; None: not written,
    the default, on) unless ``extra`` has its own table: the suite's studies train every trial
    unless a test asks for early stopping, since whether a trial stops hangs on measured latency."""
    if early_stopping is not None and "[early_stopping]" not in extra:
        extra += f"\n[early_stopping]\nenabled = {str(early_stopping).lower()}\n"
    (tmp_path / "space.toml").write_text(textwrap.dedent(space))
    recipe = tmp_path / f"{name}.toml"
    recipe.write_text(textwrap.dedent(f"""
        name = "{name}"
        space = "space.toml"
        dataset = "digits"
        trials = {trials}
        seed = 0
        {top}
        [train]
        epochs = {epochs}
        device = "cpu"
    """) + textwrap.dedent(extra))
    return recipe


# early stopping's first rung at epoch 1 even for trials of 100,000 epochs
FIRST_EPOCH_RUNG = "[early_stopping]\nenabled = true\nrungs = [0.00001]\n"


def perfect_peer(recipe, value: float = 1.0, epochs: int = 3) -> optuna.trial.FrozenTrial:
    """A finished trial of ``recipe`` (a loaded Recipe) as small and fast as anything and 100%
    accurate from epoch 1: every later trial is dominated at its first rung."""
    attrs = {"curve": [1.0] * epochs, "latency_ms": 0.0, "params": 0, "flops": 0, "steps_per_epoch": 1,
             "fingerprint": recipe.fingerprint(), "status": "ok"}
    return optuna.trial.create_trial(values=[value, 0.0], user_attrs=attrs)


def new_study(recipe) -> optuna.Study:
    """The study of ``recipe`` (a loaded Recipe), created as a search creates it, with no trial."""
    from cnnsearch.data import load_data
    from cnnsearch.storage import open_storage
    from cnnsearch.study import open_study, record_data

    study = open_study(recipe, open_storage(recipe.storage))
    record_data(study, load_data(recipe.dataset, **recipe.data).description())
    return study


def run_recipe(recipe, *, until: int, objective=None) -> optuna.Study:
    """One worker of ``recipe`` (a loaded Recipe) until the study holds ``until`` trials."""
    from cnnsearch.objective import Objective
    from cnnsearch.storage import open_storage
    from cnnsearch.study import open_study, record_data, run_worker

    study = open_study(recipe, open_storage(recipe.storage))
    objective = objective or Objective.create(recipe)
    record_data(study, objective.data.description())
    return run_worker(study, objective, until=until, infeasible_after=min(20, recipe.trials),
                      max_consecutive_failures=recipe.max_consecutive_failures)


def wait_for(predicate, *, timeout: float = 120.0, ignoring: tuple = (KeyError,)):
    """Poll ``predicate`` until it returns something truthy; exceptions in ``ignoring`` count
    as not yet (KeyError: the database file exists before the worker created the study)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            value = predicate()
        except ignoring:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def load(recipe: Path, name: str = "tiny", storage: str | None = None) -> optuna.Study:
    url = storage or f"sqlite:///{recipe.parent / name}.db"
    return optuna.load_study(study_name=name, storage=url)


__all__ = ["FIRST_EPOCH_RUNG", "PG_URL", "ROOT", "load", "new_study", "perfect_peer", "run_recipe", "wait_for",
           "write_recipe"]


def outage(relay, proc, lines: list, *, noticed: str | None = None, hold_s: float = 0.0) -> tuple[str, str]:
    """Cut ``relay`` (a database or store behind it) under the running worker ``proc``, whose
    stdout a reader thread (``proc.reader``) collects into ``lines``. With ``noticed``: wait
    until the worker says it, keep it down ``hold_s`` more, restore it; without: leave it
    down. Then wait for the worker's end: (its stdout, its stderr). The worker is killed and
    the relay cut whatever happens."""
    try:
        relay.cut()
        if noticed is not None:
            wait_for(lambda: any(noticed in line for line in lines), timeout=240)
            time.sleep(hold_s)
            relay.restore()
        proc.wait(timeout=300)
        proc.reader.join(timeout=10)
        return "".join(lines), proc.stderr.read()
    finally:
        proc.kill()
        relay.cut()


def recorded_studies(tmp_path: Path, names: list[str]) -> Path:
    """A recipe and, in its storage, studies of these names with two trials each."""
    from cnnsearch.recipe import load_recipe
    from tests.test_report_frame import add, new_study

    path = write_recipe(tmp_path, trials=2, epochs=1)
    recipe = load_recipe(path)
    for name in names:
        study = new_study(name=name, storage=recipe.storage)
        study.set_user_attr("recipe", {**recipe.to_dict(), "name": name})
        add(study, acc=0.9, lat=2.0)
        add(study, acc=0.8, lat=3.0)
    return path
