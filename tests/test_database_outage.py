"""A study's PostgreSQL database going away mid-run, for real: the worker talks to the server
through a TCP relay on loopback that the test cuts (every connection dropped, new ones
refused), as a server restart or a network cut does, and then restores or not."""

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

from tests.conftest import ROOT
from tests.study_helpers import PG_URL, wait_for, write_recipe

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


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
    # about 60 epochs of a tiny net on digits: a few seconds a trial, time to cut mid-trial
    return write_recipe(tmp_path, name=name, trials=trials, epochs=60, top=f'storage = "{relay.url}"')


def _trials(name):
    return optuna.load_study(study_name=name, storage=PG_URL).get_trials(deepcopy=False)


def _running_with_owner(name, number):
    return any(t.number == number and t.state == optuna.trial.TrialState.RUNNING and "owner" in t.user_attrs
               for t in _trials(name))


def test_a_database_that_comes_back_costs_only_the_trial_it_interrupted(tmp_path):
    relay = Relay()
    name = f"outage-{uuid.uuid4().hex[:8]}"
    proc = _start(_recipe(tmp_path, relay, name, trials=2), retry_s=60)
    try:
        wait_for(lambda: _running_with_owner(name, 1), timeout=240)  # trial 0 done, trial 1 training
        relay.cut()
        time.sleep(4)  # down for longer than a heartbeat: the worker notices mid-trial
        relay.restore()
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        relay.cut()
    assert proc.returncode == 0, out + err[-3000:]
    assert "Traceback" not in err and "Exception in thread" not in err, err
    assert "the database stopped answering" in out and "trial    1 failed: the database connection was lost" in out
    trials = _trials(name)
    states = [t.state.name for t in trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"], states  # trial 1's candidate re-queued as trial 2
    assert trials[1].user_attrs["fail_reason"].startswith("the database connection was lost mid-trial")
    assert trials[2].params == trials[1].params
    assert trials[0].user_attrs["status"] == "ok" and "weights" in trials[0].user_attrs  # nothing completed lost
    optuna.delete_study(study_name=name, storage=PG_URL)


def test_a_database_that_stays_away_stops_the_worker_in_one_line(tmp_path):
    relay = Relay()
    name = f"gone-{uuid.uuid4().hex[:8]}"
    proc = _start(_recipe(tmp_path, relay, name, trials=3), retry_s=3)
    try:
        wait_for(lambda: _running_with_owner(name, 1), timeout=240)
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
