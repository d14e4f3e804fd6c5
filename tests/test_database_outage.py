"""A study's database going away mid-run. First in-process on SQLite, with every statement
failing for a while (or for good, or only the writes: a full disk); then for real on
PostgreSQL: the worker talks to the server through a TCP relay on loopback that the test
cuts (every connection dropped, new ones refused), as a server restart or a network cut
does, and then restores or not."""

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import optuna
import pytest
import sqlalchemy

from cnnsearch import objective as objective_module
from cnnsearch import recovery
from cnnsearch.errors import FailingTrials
from cnnsearch.objective import Objective
from cnnsearch.recipe import load_recipe
from cnnsearch.storage import open_storage
from cnnsearch.study import open_study, record_data, run_worker
from tests.conftest import ROOT
from tests.study_helpers import PG_URL, outage, wait_for, write_recipe


class Outage:
    """Makes the storage's statements fail as a lost database's do, from the start of trial
    ``at``'s training on, for ``seconds`` after the first statement it fails (None: for
    good): however long the training takes on a busy machine, the trial's next write meets
    the outage. ``writes_only``: reads still work."""

    def __init__(self, storage, *, at: int | tuple[int, ...], seconds: float | None, writes_only: bool = False):
        self.at = at if isinstance(at, tuple) else (at,)
        self.seconds, self.writes_only = seconds, writes_only
        self.armed, self.until = False, None
        self.hit: set[int] = set()  # the trials it has started in
        sqlalchemy.event.listen(storage.engine, "before_cursor_execute", self._statement)

    def start(self):
        self.armed, self.until = True, None

    def _statement(self, conn, cursor, statement, parameters, context, executemany):
        if not self.armed or (self.writes_only and statement.lstrip().upper().startswith("SELECT")):
            return
        now = time.monotonic()
        if self.until is None:  # the first statement of the outage: its clock starts here
            self.started = now
            self.until = now + (self.seconds if self.seconds is not None else 10**9)
        if now < self.until:
            raise sqlalchemy.exc.OperationalError(statement, parameters, Exception("disk I/O error"))
        self.armed = False


def _in_process(tmp_path, monkeypatch, *, trials, retry_s, **outage):
    monkeypatch.setattr(recovery, "DB_RETRY_S", retry_s)
    recipe = load_recipe(write_recipe(tmp_path, trials=trials, epochs=1))
    storage = open_storage(recipe.storage)
    study = open_study(recipe, storage)
    inner = Objective.create(recipe)
    record_data(study, inner.data.description())
    cut = Outage(storage, **outage)
    train, numbers = objective_module.train, []

    def objective(trial):
        numbers.append(trial.number)
        return inner(trial)

    def training(*args, **kwargs):  # the database goes away while a trial in `at` trains
        if numbers[-1] in cut.at and numbers[-1] not in cut.hit:
            cut.hit.add(numbers[-1])
            cut.start()
        return train(*args, **kwargs)

    monkeypatch.setattr(objective_module, "train", training)
    notes = []
    return study, cut, notes, lambda: run_worker(study, objective, until=trials, on_note=notes.append)


def test_the_trial_a_database_outage_interrupted_fails_with_its_reason_and_is_retried(tmp_path, monkeypatch):
    study, _, notes, run = _in_process(tmp_path, monkeypatch, trials=2, retry_s=30, at=1, seconds=1.5)
    run()
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["fail_reason"].startswith("the database connection was lost mid-trial: ")
    assert "disk I/O error" in trials[1].user_attrs["fail_reason"] and trials[2].params == trials[1].params
    assert notes[0].startswith("the database stopped answering (") and "disk I/O error" in notes[0]
    assert notes[-1] == "trial    1 failed: the database connection was lost mid-trial; re-queued"


@pytest.mark.parametrize("writes_only", [False, True])
def test_a_database_that_stays_away_stops_the_worker_after_the_wait(tmp_path, monkeypatch, writes_only):
    """Reads that work while writes fail (a full disk) must not spin the worker: one
    deadline for the whole outage, a try a second."""
    study, cut, notes, run = _in_process(tmp_path, monkeypatch, trials=3, retry_s=2.5, at=1, seconds=None,
                                         writes_only=writes_only)
    with pytest.raises(FailingTrials, match=r"the study's database has not answered for 2 s \(.*disk I/O error"):
        run()
    assert 2.5 <= time.monotonic() - cut.started < 20  # about the wait from the first failed statement: never forever
    assert len([n for n in notes if n.startswith("the database stopped answering")]) == 1


class Relay:
    """127.0.0.1:<port> -> 127.0.0.1:5432, byte for byte; ``cut()`` drops every connection
    and closes the port, ``restore()`` opens it again on the same port."""

    def __init__(self, target=("127.0.0.1", 5432)):
        self.target = target
        self.port = None
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.lock = threading.Lock()
        self.restore()

    def restore(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port or 0))
        self.port = self.listener.getsockname()[1]
        self.listener.listen(64)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            if listener.fileno() == -1:  # cut while this connection arrived
                client.close()
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.pairs.append((client, server))
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 1.0)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except OSError:
            return
        finally:
            a.close()
            b.close()

    def cut(self):
        # shutdown first: a thread blocked in accept() keeps a merely closed socket listening
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for pair in self.pairs:
                for s in pair:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()
            self.pairs.clear()

    @property
    def url(self):
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/test"


def _start(recipe, *, retry_s):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "CNNSEARCH_HEARTBEAT_S": "1", "CNNSEARCH_DB_RETRY_S": str(retry_s)}
    return subprocess.Popen([sys.executable, "-m", "cnnsearch", "search", str(recipe), "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _recipe(tmp_path, relay, name, trials):
    # 20 epochs of a tiny net on digits: long enough to cut mid-trial (the cut follows the
    # trial's start within a poll, 0.2 s), short enough that trial 0 is soon done
    return write_recipe(tmp_path, name=name, trials=trials, epochs=20, top=f'storage = "{relay.url}"')


def _trials(name):
    return optuna.load_study(study_name=name, storage=PG_URL).get_trials(deepcopy=False)


def _running_with_owner(name, number):
    return any(t.number == number and t.state == optuna.trial.TrialState.RUNNING and "owner" in t.user_attrs
               for t in _trials(name))


def _worker_in_trial_1(tmp_path, *, prefix, trials, retry_s, lines=None):
    """A worker behind a fresh relay, once trial 0 is done and trial 1 trains: (relay, study
    name, process). ``lines`` (a list) collects its stdout as it comes."""
    relay = Relay()
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    proc = _start(_recipe(tmp_path, relay, name, trials=trials), retry_s=retry_s)
    if lines is not None:  # proc.reader ends with the output
        proc.reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        proc.reader.start()
    try:
        wait_for(lambda: _running_with_owner(name, 1), timeout=240)
    except BaseException:
        proc.kill()
        relay.cut()
        raise
    return relay, name, proc


@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_that_comes_back_costs_only_the_trial_it_interrupted(tmp_path):
    lines = []
    relay, name, proc = _worker_in_trial_1(tmp_path, prefix="outage", trials=2, retry_s=60, lines=lines)
    # down until the worker has noticed (at its next write, at the latest when the trial ends),
    # then a retry or two against the closed port
    out, err = outage(relay, proc, lines, noticed="the database stopped answering", hold_s=1.5)
    assert proc.returncode == 0, out + err[-3000:]
    assert "Traceback" not in err and "Exception in thread" not in err, err
    assert "the database stopped answering" in out and "trial    1 failed: the database connection was lost" in out
    trials = _trials(name)
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"], states  # trial 1's candidate re-queued as trial 2
    assert trials[1].user_attrs["fail_reason"].startswith("the database connection was lost mid-trial")
    # the same candidate, as far as it was sampled before the cut (the rest is sampled on retry)
    assert trials[1].params.items() <= trials[2].params.items()
    assert trials[0].user_attrs["status"] == "ok" and "weights" in trials[0].user_attrs  # nothing completed lost
    optuna.delete_study(study_name=name, storage=PG_URL)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_database_that_stays_away_stops_the_worker_in_one_line(tmp_path):
    relay, name, proc = _worker_in_trial_1(tmp_path, prefix="gone", trials=3, retry_s=3)
    try:
        relay.cut()
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        relay.cut()
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and err.startswith("error: the study's database has not answered for 3 s"), err
    trials = _trials(name)
    assert trials[0].state.name == "COMPLETE" and trials[0].user_attrs["status"] == "ok"  # kept
    # the interrupted trial stays RUNNING for now; its heartbeat stopped, so the next worker fails
    # and re-queues it (RetryHeartbeatStaleTrialCallback) and nothing is lost
    assert trials[1].state.name == "RUNNING"
    optuna.delete_study(study_name=name, storage=PG_URL)


def test_each_outage_gets_its_own_wait(tmp_path, monkeypatch):
    """Two blips a few trials apart: the second is waited for afresh, not judged against
    the first one's deadline (which has long passed)."""
    # a 1.2 s blip: the first try (after 1 s) fails, the second (2 s) gets through, 1.5 s before
    # the deadline; the second blip, trials later, comes after the first one's deadline
    study, cut, notes, run = _in_process(tmp_path, monkeypatch, trials=6, retry_s=3.5, at=(1, 5), seconds=1.2)
    run()
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states.count("FAIL") == 2 and states.count("COMPLETE") == 6, states
    assert len([n for n in notes if n.startswith("the database stopped answering")]) == 2


def test_a_lost_write_while_the_database_still_answers_is_retried_not_blamed(tmp_path, monkeypatch):
    """A write that fails once (a dropped connection, a lock past its timeout) while the
    database answers again at once: the trial is failed with that reason and re-queued, not
    recorded as the candidate's error."""
    study, _, notes, run = _in_process(tmp_path, monkeypatch, trials=2, retry_s=30, at=99, seconds=0)
    real, failed = objective_module.set_user_attrs, []

    def flaky(trial, attrs):
        if trial.number == 1 and "weights" in attrs and not failed:
            failed.append(1)
            raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))
        return real(trial, attrs)

    monkeypatch.setattr(objective_module, "set_user_attrs", flaky)
    run()
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["fail_reason"].startswith("the database connection was lost mid-trial")
    assert trials[2].params == trials[1].params  # the same candidate, run again


def test_optunas_fallback_warning_is_silenced_only_for_a_lost_connection(caplog):
    # Optuna logs a retried query's OperationalError with its SQL (CI saw 9 lines before the
    # worker's one error line); a lost connection is reported by the worker itself, anything
    # else (too many SQL variables) still reaches the user
    import cnnsearch.storage  # noqa: F401  (installs the filter)

    logger = optuna.logging.get_logger("optuna.storages._rdb.storage")
    with caplog.at_level("WARNING", logger="optuna.storages._rdb.storage"):
        logger.warning("Caught an error from sqlalchemy: (psycopg.OperationalError) consuming input failed: "
                       "server closed the connection unexpectedly. Falling back to a slower alternative.")
        logger.warning("Caught an error from sqlalchemy: (psycopg.OperationalError) connection failed: "
                       "Connection refused. Falling back to a slower alternative.")
        assert caplog.records == []
        logger.warning("Caught an error from sqlalchemy: (sqlite3.OperationalError) too many SQL variables. "
                       "Falling back to a slower alternative.")
    assert ["too many SQL variables" in r.getMessage() for r in caplog.records] == [True]
