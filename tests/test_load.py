"""Four workers on one study, SQLite and PostgreSQL, 24 short trials each; one is killed
with kill -9 mid-trial: the others finish, every trial is recorded once, the dead worker's
trial is retried, and nothing is left RUNNING."""

import os
import signal
import subprocess
import sys
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from tests.conftest import ROOT
from tests.study_helpers import PG_URL, load, wait_for, write_recipe

WORKERS, TRIALS = 4, 24


def _four_workers_one_killed(tmp_path, storage_url, name):
    # the default sampler: the survivors may meet the budget before the victim's heartbeat is
    # stale (6 s), so its trial is recovered the local way, by the next trial a survivor ends
    recipe = write_recipe(tmp_path, name=name, trials=TRIALS, epochs=1)
    if storage_url:
        recipe.write_text(recipe.read_text().replace("seed = 0", f'seed = 0\nstorage = "{storage_url}"'))
    url = storage_url or f"sqlite:///{tmp_path / name}.db"
    # a 2 s heartbeat (stale after 6 s): quick to notice the dead worker, slow enough that a
    # live one on a busy 2-core machine is never taken for dead
    env = {**os.environ, "CNNSEARCH_HEARTBEAT_S": "2", "CNNSEARCH_TRAIN_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # the first worker creates the study; the others join it as separate processes, as on a cluster
    procs = []
    try:
        for i in range(WORKERS):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "cnnsearch", "search", str(recipe), "--until", str(TRIALS),
                 "--worker-index", str(i), "--quiet"],
                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            if i == 0:  # one reader throughout: each look is one query, the victim stopped briefly
                watched = wait_for(lambda: _study(url, name), timeout=300, ignoring=(Exception,))
        victim = procs[1]

        def victim_mid_trial():
            return [t for t in watched.get_trials(states=(TrialState.RUNNING,))
                    if t.user_attrs.get("owner", {}).get("pid") == victim.pid and "latency_ms" in t.user_attrs]

        def stopped_mid_trial():
            # read while the victim is stopped: what it runs then is what it dies running (read
            # after the kill, a survivor may already have failed and re-queued it)
            victim.send_signal(signal.SIGSTOP)
            running = None
            try:
                running = victim_mid_trial()
            finally:
                if not running:
                    victim.send_signal(signal.SIGCONT)
            return running

        killed = wait_for(stopped_mid_trial, timeout=300, ignoring=(Exception,))  # the database may be mid-creation
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        outputs = [p.communicate(timeout=600) for p in procs if p is not victim]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (_, err) in zip([p for p in procs if p is not victim], outputs):
        assert p.returncode == 0, err[-2000:]
    study = load(recipe, name=name, storage=storage_url)
    trials = study.trials
    assert len({t.number for t in trials}) == len(trials)  # every trial recorded once
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert TRIALS <= len(finished) <= TRIALS + WORKERS - 1  # the budget; workers may finish one in flight each
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [t.number for t in killed], [
        t.user_attrs.get("fail_reason") for t in failed]
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for dead in killed:  # retried with the same parameters
        assert any(t.params == dead.params and t.number > dead.number for t in finished)
    assert not any("locked" in str(t.user_attrs.get("fail_reason", "")) for t in trials)
    assert len({t.user_attrs["worker"] for t in finished}) >= WORKERS - 1


def _study(url, name):
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return None


@pytest.mark.slow
def test_four_workers_on_sqlite_survive_a_kill(tmp_path):
    _four_workers_one_killed(tmp_path, None, "load")


@pytest.mark.postgres
def test_four_workers_on_postgresql_survive_a_kill(tmp_path):
    _four_workers_one_killed(tmp_path, PG_URL, f"load_{uuid.uuid4().hex[:8]}")
