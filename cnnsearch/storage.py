"""Optuna storages as cnnsearch opens them: crash-safe, shareable, readable by Optuna.

* SQLite: WAL journal, synchronous=NORMAL and a 60 s busy timeout, so several local workers share one file
  without "database is locked" failures.
* Any other RDB URL (PostgreSQL, MySQL): a pre-ping connection pool.
* Both: heartbeats. A worker killed mid-trial (``kill -9``) leaves a RUNNING trial whose
  heartbeat stops; the next worker to start a trial marks it FAIL and re-queues its
  parameters (RetryHeartbeatStaleTrialCallback), so no trial stays RUNNING and none is lost.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from pathlib import Path

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from .errors import RecipeError

# Seconds between heartbeats; a trial silent for 3 intervals is stale. Tests shorten it.
HEARTBEAT_S = int(os.environ.get("CNNSEARCH_HEARTBEAT_S", "10"))


def open_storage(url: str, *, heartbeat_s: int | None = None) -> RDBStorage:
    heartbeat = heartbeat_s or HEARTBEAT_S
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        if not path.parent.is_dir():
            raise RecipeError(f"storage: folder {path.parent} does not exist")
        with sqlite3.connect(path, timeout=60) as con:  # WAL is a property of the file: set once
            con.execute("PRAGMA journal_mode=WAL")
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif "://" in url:
        engine_kwargs = {"pool_pre_ping": True}
    else:
        raise RecipeError(f"storage: {url!r} is not a database URL (sqlite:///file.db, "
                          "postgresql+psycopg://user@host/db, ...)")
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and stable here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                 grace_period=3 * heartbeat,
                                 heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=2))
    except (ImportError, ModuleNotFoundError) as exc:
        raise RecipeError(f"storage: {url.split(':')[0]} needs a driver that is not installed ({exc})") from None
    except Exception as exc:  # sqlalchemy.exc.OperationalError and friends: unreachable server
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise RecipeError(f"storage: cannot open {url}: {first}") from None
    if url.startswith("sqlite:///"):
        # WAL + synchronous=NORMAL: a crashed or killed worker loses nothing committed (only a
        # power cut can drop the last commits), and each commit skips an fsync: about half the
        # cost of every trial attribute written.
        @sqlalchemy.event.listens_for(storage.engine, "connect")
        def _pragmas(dbapi_connection, _record):
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")

        storage.engine.dispose()  # connections opened during set-up lack the pragma
    return storage


def load_existing_study(url: str, name: str) -> optuna.Study:
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise RecipeError(f"study {name!r} not found in {url} (studies there: {names})") from None
