"""Studies against real storages: records, resume, limits, failures, crashes, many workers."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from optuna.trial import TrialState

import cnnsearch.objective as objective_mod
from cnnsearch.objective import Objective
from cnnsearch.recipe import load_recipe
from tests.conftest import ROOT, run_cli
from tests.study_helpers import (
    FIRST_EPOCH_RUNG,
    PG_URL,
    load,
    perfect_peer,
    run_recipe,
    wait_for,
    write_recipe,
)

RECORDED = {"arch", "params", "flops", "latency_ms", "latency_iqr_ms", "accuracy", "train_seconds",
            "epochs", "device", "versions", "weights", "status", "summary", "curve"}


@pytest.mark.slow
def test_search_records_everything_and_optuna_reads_it(tmp_path):
    recipe = write_recipe(tmp_path, trials=4)
    result = run_cli("search", str(recipe))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("trial ") >= 4
    study = load(recipe)
    assert study.metric_names == ["accuracy", "latency_ms"]
    assert len(study.trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    ok = [t for t in study.trials if t.user_attrs["status"] == "ok"]
    assert ok
    for t in ok:
        assert RECORDED <= set(t.user_attrs), RECORDED - set(t.user_attrs)
        assert t.values == [t.user_attrs["accuracy"], t.user_attrs["latency_ms"]]
        assert t.user_attrs["versions"]["torch"] and t.user_attrs["epochs"] == 2
    assert {t.number for t in study.best_trials} <= {t.number for t in ok}
    cli = subprocess.run([os.path.join(os.path.dirname(sys.executable), "optuna"), "trials", "--storage",
                          f"sqlite:///{tmp_path / 'tiny.db'}", "--study-name", "tiny", "-f", "json"],
                         capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert sorted(row["number"] for row in json.loads(cli.stdout)) == [0, 1, 2, 3]


@pytest.mark.slow
def test_rerun_resumes_and_trials_adds_more(tmp_path):
    recipe = write_recipe(tmp_path, trials=2)
    assert run_cli("search", str(recipe)).returncode == 0
    again = run_cli("search", str(recipe))
    assert again.returncode == 0 and "already has 2 finished trials" in again.stdout
    more = run_cli("search", str(recipe), "--trials", "2")
    assert more.returncode == 0, more.stderr
    assert len(load(recipe).trials) == 4
    status = json.loads(run_cli("status", str(recipe), "--json").stdout)
    assert status["trials"] == 4 and set(status["pareto"]) <= {r["trial"] for r in status["leaderboard"]}
    by_url = run_cli("status", "--storage", f"sqlite:///{tmp_path / 'tiny.db'}", "--study", "tiny", "--json")
    assert json.loads(by_url.stdout)["pareto"] == status["pareto"]


@pytest.mark.slow
def test_limits_make_infeasible_trials_that_are_never_trained(tmp_path):
    recipe = write_recipe(tmp_path, trials=12, extra="[limits]\nmax_params = 3000\n")
    assert run_cli("search", str(recipe)).returncode == 0
    study = load(recipe)
    over = [t for t in study.trials if t.user_attrs.get("status") == "limit"]
    under = [t for t in study.trials if t.user_attrs.get("params", 0) <= 3000]
    assert over and under
    for t in over:
        assert t.state == TrialState.COMPLETE  # not FAIL, not a silent prune
        assert t.user_attrs["params"] > 3000 and "limits.max_params 3,000" in t.user_attrs["infeasible_reason"]
        assert t.constraints["infeasible"] > 0
        assert "accuracy" not in t.user_attrs and "epochs" not in t.user_attrs  # untrained
        assert "latency_ms" not in t.user_attrs  # not even measured
    assert not {t.number for t in over} & {t.number for t in study.best_trials}


@pytest.mark.slow
def test_all_infeasible_says_so_early(tmp_path):
    recipe = write_recipe(tmp_path, trials=40, extra="[limits]\nmax_params = 10\n")
    result = run_cli("search", str(recipe))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "error: all 20 candidates so far were infeasible, none was trained: limits.max_params (20); "
        "widen [limits] or change the space")
    assert len(load(recipe).trials) == 20


@pytest.mark.slow
def test_diverged_training_is_recorded_as_such(tmp_path):
    space = "depth = 1\n[block]\nout_channels = 8\nkernel_size = 3\n[train]\nlr = 1e6\noptimizer = 'sgd'\n"
    recipe = write_recipe(tmp_path, trials=1, space=space)
    assert run_cli("search", str(recipe)).returncode == 0
    (t,) = load(recipe).trials
    assert t.state == TrialState.COMPLETE and t.user_attrs["status"] == "diverged"
    assert t.constraints["infeasible"] > 0 and "non-finite" in t.user_attrs["infeasible_reason"]


def test_exception_in_a_trial_is_a_fail_with_reason_and_the_study_goes_on(tmp_path, monkeypatch):
    recipe = load_recipe(write_recipe(tmp_path, trials=3))
    real_train = objective_mod.train
    calls = []

    def flaky(model, data, cfg, **kw):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("simulated driver fault")
        return real_train(model, data, cfg, **kw)

    monkeypatch.setattr(objective_mod, "train", flaky)
    study = run_recipe(recipe, until=3)
    states = [t.state for t in study.trials]
    assert states[0] == TrialState.FAIL and states.count(TrialState.FAIL) == 1
    assert study.trials[0].user_attrs["fail_reason"] == "RuntimeError: simulated driver fault"
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 3


def test_early_stopping_prunes_a_clearly_worse_slower_trial(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, trials=1, epochs=4, extra="[early_stopping]\nenabled = true\n"))
    study = run_recipe(recipe, until=1)
    assert study.trials[0].user_attrs["status"] == "ok"
    for _ in range(2):  # as fast as anything, 100% at every epoch: half the peers are ahead of any trial
        study.add_trial(perfect_peer(recipe, epochs=4))
    study = run_recipe(recipe, until=4)
    third = study.trials[3]
    assert third.state == TrialState.PRUNED and third.user_attrs["status"] == "early_stopped"
    assert third.user_attrs["epochs"] == 1 and len(third.user_attrs["curve"]) == 1
    off = load_recipe(write_recipe(tmp_path, name="off", trials=1, epochs=2,
                                   extra="[early_stopping]\nenabled = false\n"))
    off_study = run_recipe(off, until=1)
    off_study.add_trial(perfect_peer(off, epochs=2))
    off_study = run_recipe(off, until=3)
    assert off_study.trials[2].user_attrs["status"] == "ok"


@pytest.mark.slow
def test_kill_9_mid_trial_loses_nothing_and_retries_the_parameters(tmp_path):
    # one recipe throughout (a resumed study refuses a changed one): trials that would train
    # for ages, so the first is surely killed mid-training
    recipe = write_recipe(tmp_path, trials=2, epochs=100_000, extra=FIRST_EPOCH_RUNG)
    env = {**os.environ, "CNNSEARCH_HEARTBEAT_S": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnsearch", "search", str(recipe), "--trials", "1", "--quiet"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        number = wait_for(lambda: [t for t in load(recipe).trials if t.state == TrialState.RUNNING])[0].number
        wait_for(lambda: "latency_ms" in load(recipe).trials[number].user_attrs)  # sampled, now training
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = load(recipe).trials[number]
    assert killed.state == TrialState.RUNNING  # what a crash leaves behind
    # completed trials that must survive; as fast as anything and 100% from epoch 1, so the
    # retried trial is early-stopped after one epoch instead of training for ages
    study = load(recipe)
    for value in (0.9, 1.0):
        study.add_trial(perfect_peer(load_recipe(recipe), value))
    completed = {t.number: t.values for t in load(recipe).trials if t.state == TrialState.COMPLETE}
    time.sleep(3.5)  # the grace period: 3 heartbeats
    result = subprocess.run([sys.executable, "-m", "cnnsearch", "search", str(recipe), "--trials", "1", "--quiet"],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    study = load(recipe)
    assert study.trials[killed.number].state == TrialState.FAIL
    retried = [t for t in study.trials if t.number > killed.number and t.params]
    assert retried and retried[0].params == killed.params
    assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len(completed) == 2 and {t.number: t.values for t in study.trials if t.number in completed} == completed


def _latency_recorded(db) -> bool:
    """Read-only look into a database another process is still creating (no schema race)."""
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return bool(con.execute("select 1 from trial_user_attributes where key = 'latency_ms'").fetchone())
    except sqlite3.OperationalError:  # tables not created yet
        return False


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_marks_the_running_trial(tmp_path):
    recipe = write_recipe(tmp_path, trials=2, epochs=100_000)

    def default_sigint():  # a suite started from a background shell inherits SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen([sys.executable, "-m", "cnnsearch", "search", str(recipe), "--quiet"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    try:
        wait_for(lambda: _latency_recorded(tmp_path / "tiny.db"))
        time.sleep(0.5)  # well inside the (long) training
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"still running 60 s after Ctrl-C; its stderr:\n{err[-3000:]}")
    finally:
        if proc.poll() is None:  # never leave a training process behind
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and err.strip().splitlines()[-1].startswith("error: interrupted")
    assert [t.state for t in load(recipe).trials] == [TrialState.FAIL]


def _two_workers(tmp_path, storage_url, name):
    recipe = write_recipe(tmp_path, name=name, trials=6, epochs=1)
    if storage_url:
        recipe.write_text(recipe.read_text().replace("seed = 0", f'seed = 0\nstorage = "{storage_url}"'))
    result = run_cli("search", str(recipe), "--workers", "2")
    assert result.returncode == 0, result.stderr[-2000:]
    study = load(recipe, name=name, storage=storage_url)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    assert not [t for t in study.trials if t.state == TrialState.FAIL], [
        t.user_attrs.get("fail_reason") for t in study.trials]
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert 6 <= len(finished) <= 7  # the budget; a second worker may finish one trial in flight
    assert {t.user_attrs.get("status") for t in finished} <= {"ok", "early_stopped"}
    return study


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study(tmp_path):
    _two_workers(tmp_path, None, "duo")


@pytest.mark.postgres
def test_two_workers_share_one_postgresql_study(tmp_path):
    name = f"cnnsearch-test-{uuid.uuid4().hex[:8]}"
    try:
        study = _two_workers(tmp_path, PG_URL, name)
        assert study.metric_names == ["accuracy", "latency_ms"]
    finally:
        try:
            optuna.delete_study(study_name=name, storage=PG_URL)
        except KeyError:
            pass


@pytest.mark.slow
def test_unknown_study_and_missing_recipe_are_one_line_errors(tmp_path):
    result = run_cli("status", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--study", "ghost")
    assert result.returncode == 2 and result.stderr.startswith("error: study 'ghost' not found")
    result = run_cli("search")
    assert result.returncode == 2 and "give a recipe" in result.stderr


def test_objective_loads_the_dataset_once_for_all_trials(tmp_path, monkeypatch):
    real_load = objective_mod.load_data
    loads = []

    def counting_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(objective_mod, "load_data", counting_load)
    recipe = load_recipe(write_recipe(tmp_path, trials=3))
    objective = Objective.create(recipe)
    study = run_recipe(recipe, until=3, objective=objective)
    assert loads == [("digits",)]  # once, at creation; not per trial
    trained = [t for t in study.trials if "train_seconds" in t.user_attrs]
    assert trained and objective.timings["train"] >= sum(t.user_attrs["train_seconds"] for t in trained)


def test_a_failed_attribute_write_still_records_the_reason(tmp_path, monkeypatch):
    real = objective_mod.set_user_attrs
    calls = []

    def locked_once(trial, attrs):
        calls.append(sorted(attrs))
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return real(trial, attrs)

    monkeypatch.setattr(objective_mod, "set_user_attrs", locked_once)
    recipe = load_recipe(write_recipe(tmp_path, trials=1))
    study = run_recipe(recipe, until=1)
    first = study.trials[0]
    assert first.state == TrialState.FAIL
    assert first.user_attrs == {"status": "error", "fail_reason": "RuntimeError: database is locked"}
    assert calls[1] == ["fail_reason", "status"]  # the failed batch was not retried with them
    assert study.trials[1].user_attrs["status"] in ("ok", "early_stopped")  # the study went on


@pytest.mark.slow
def test_logs_get_plain_lines_with_eta_and_no_bar_redraws(tmp_path, monkeypatch, capsys):
    import cnnsearch.runner as runner

    result = run_cli("search", str(write_recipe(tmp_path, trials=2, epochs=1)))
    assert result.returncode == 0 and "\r" not in result.stdout + result.stderr
    # a trial's lines (an epoch's line too, on a machine slow enough that a trial runs past LONG_TRIAL_S)
    lines = [line for line in result.stdout.splitlines() if line.startswith("trial") and " epoch " not in line]
    assert len(lines) == 2 and all("elapsed, ETA" in line for line in lines), result.stdout
    monkeypatch.setattr(runner, "LONG_TRIAL_S", 0.0)  # every trial counts as long: a line per epoch
    recipe = load_recipe(write_recipe(tmp_path, name="long", trials=1, epochs=2))
    assert runner.search(None, recipe, trials=None, timeout=None, workers=1, until=None, worker_index=0,
                         quiet=False) == 0
    out = capsys.readouterr()
    assert "\r" not in out.out + out.err
    epochs = [line for line in out.out.splitlines() if " epoch " in line]
    assert [line.split(" epoch ")[1].split(":")[0] for line in epochs] == ["1/2", "2/2"], out.out


@pytest.mark.slow
def test_a_dead_local_worker_s_trial_is_recovered_at_once(tmp_path):
    recipe = write_recipe(tmp_path, trials=2, epochs=100_000, extra=FIRST_EPOCH_RUNG)  # would train for ages
    proc = subprocess.Popen([sys.executable, "-m", "cnnsearch", "search", str(recipe), "--trials", "1", "--quiet"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _latency_recorded(tmp_path / "tiny.db"))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    (killed,) = [t for t in load(recipe).trials if t.state == TrialState.RUNNING]
    assert killed.user_attrs["owner"]["pid"] == proc.pid
    study = load(recipe)  # fast, perfect peers: the retried trial is early-stopped after one epoch
    study.add_trial(perfect_peer(load_recipe(recipe)))
    started = time.monotonic()  # at once: no 30 s heartbeat grace period (the default heartbeat is 10 s)
    result = run_cli("search", str(recipe), "--trials", "1", "--quiet", timeout=120)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60  # the heartbeat alone would wait 30 s after its last beat
    assert f"trial {killed.number:>4} failed: its worker on this host died; re-queued" in result.stdout
    study = load(recipe)
    assert study.trials[killed.number].state == TrialState.FAIL
    assert "died mid-trial" in study.trials[killed.number].user_attrs["fail_reason"]
    retried = [t for t in study.trials if t.number > killed.number and t.params]
    assert retried and retried[0].params == killed.params
    assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_a_study_records_where_its_weights_go_when_it_is_made_and_keeps_it(tmp_path):
    from cnnsearch.storage import open_storage
    from cnnsearch.study import open_worker

    recipe = load_recipe(write_recipe(tmp_path, top='artifacts = "weights-here"'))
    storage = open_storage(recipe.storage)
    first = open_worker(recipe, storage).study
    assert first.user_attrs["artifacts"] == str(tmp_path / "weights-here")
    other = load_recipe(write_recipe(tmp_path, top='artifacts = "weights-elsewhere"'))
    assert open_worker(other, storage).study.user_attrs["artifacts"] == str(tmp_path / "weights-here")
