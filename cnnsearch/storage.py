"""Optuna storages as cnnsearch opens them: crash-safe, shareable, readable by Optuna.

* SQLite: WAL journal, synchronous=NORMAL and a 60 s busy timeout, so several local workers share one file
  without "database is locked" failures.
* Any other RDB URL (PostgreSQL, MySQL): a pre-ping connection pool.
* Both: heartbeats. A worker killed mid-trial (``kill -9``) on another host leaves a RUNNING trial whose
  heartbeat stops; the next worker to start a trial marks it FAIL and re-queues its parameters
  (``RetryStaleTrial``, without the dead owner; this host's are found sooner: ``recovery``).
"""

from __future__ import annotations

import copy
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from .errors import RecipeError

# A trial whose worker died (or whose database went away) is run again at most this many times.
MAX_RETRY = 2


def first_line(exc: BaseException, *, limit: int = 200) -> str:
    """An error's message as one short line (its type's name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


# Seconds between heartbeats; a trial silent for 3 intervals is stale. Tests shorten it.
HEARTBEAT_S = int(os.environ.get("CNNSEARCH_HEARTBEAT_S", "10"))


# the first 16 bytes of every SQLite 3 database file (an empty file is a new database)
SQLITE_MAGIC = b"SQLite format 3\x00"


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (relative to the working directory), else None."""
    return Path(url[len("sqlite:///"):]) if url.startswith("sqlite:///") else None


def storage_exists(url: str) -> bool:
    """Whether opening ``url`` could find a study: False for a SQLite file not there yet
    (opening it would create it), True for a server's URL."""
    path = _sqlite_path(url)
    return path is None or path.exists()


def check_url(url: str) -> None:
    """What can be said of a storage URL without opening it (a new SQLite file is not made):
    RecipeError for a SQLite path that cannot be a database."""
    path = _sqlite_path(url)
    if path is not None:
        _check_sqlite_file(path)


def _check_sqlite_file(path: Path) -> None:
    """Refuse a path that SQLite would choke on, before SQLite opens it: a folder, or a file
    that is not a database (a README given by mistake is read, never written)."""
    if not path.parent.is_dir():
        raise RecipeError(f"storage: folder {path.parent} does not exist")
    if path.is_dir():
        raise RecipeError(f"storage: {path} is a folder, not a database file")
    try:
        with path.open("rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return  # a new database
    except OSError as exc:
        raise RecipeError(f"storage: cannot read {path} ({exc.strerror})") from None
    if head and head != SQLITE_MAGIC:
        raise RecipeError(f"storage: {path} is not an SQLite database file")


class _NoFallbackOnLostConnection(logging.Filter):
    """Optuna's RDB storage catches every OperationalError of one query, logs it as "Caught
    an error from sqlalchemy ... Falling back to a slower alternative" (meant for a query with
    too many variables) and tries again. When the error is a lost connection, the retry fails
    too and the worker reports the outage in its own one line: the logged SQL would only bury it."""

    _LOST = ("server closed the connection", "connection failed", "connection refused",
             "could not connect", "terminating connection", "connection is closed", "database is locked",
             "ssl syscall error", "could not receive data", "no connection to the server",
             "the database system is shutting down", "the database system is starting up")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Caught an error from sqlalchemy"):
            return True
        return not any(lost in message.lower() for lost in self._LOST)


_RDB_LOGGER = "optuna.storages._rdb.storage"
if not any(isinstance(f, _NoFallbackOnLostConnection) for f in logging.getLogger(_RDB_LOGGER).filters):
    logging.getLogger(_RDB_LOGGER).addFilter(_NoFallbackOnLostConnection())


def open_storage(url: str, *, heartbeat_s: int | None = None) -> RDBStorage:
    heartbeat = heartbeat_s or HEARTBEAT_S
    path = _sqlite_path(url)
    if path is not None:
        _check_sqlite_file(path)
        try:
            with sqlite3.connect(path, timeout=60) as con:  # WAL is a property of the file: set once
                con.execute("PRAGMA journal_mode=WAL")  # pragma: no mutate (SQL reads the words in any case)
        except sqlite3.Error as exc:  # right header, damaged body; or a file it may not write
            raise RecipeError(f"storage: cannot open {path} as a database ({exc})") from None
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        # a cut network drops packets instead of refusing them: without these, one query can
        # hang for minutes of TCP retries, past any wait for the database (CNNSEARCH_DB_RETRY_S)
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {
            "connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
            "keepalives_count": 3}}
    elif "://" in url:
        engine_kwargs = {"pool_pre_ping": True}
    else:
        raise RecipeError(f"storage: {url!r} is not a database URL (sqlite:///file.db, "
                          "postgresql+psycopg://user@host/db, ...)")
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna, and stable here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = _Storage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
                                 grace_period=3 * heartbeat,
                                 heartbeat_stale_trial_callback=RetryStaleTrial(max_retry=MAX_RETRY))
    except (ImportError, ModuleNotFoundError) as exc:
        raise RecipeError(f"storage: {url.split(':')[0]} needs a driver that is not installed ({exc})") from None
    except Exception as exc:  # sqlalchemy.exc.OperationalError and friends: unreachable server
        raise RecipeError(f"storage: cannot open {url}: {first_line(exc, limit=160)}") from None
    if path is not None:
        # WAL + synchronous=NORMAL: a crashed or killed worker loses nothing committed (only a
        # power cut can drop the last commits), and each commit skips an fsync: about half the
        # cost of every trial attribute written.
        @sqlalchemy.event.listens_for(storage.engine, "connect")
        def _pragmas(dbapi_connection, _record):
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")

        storage.engine.dispose()  # connections opened during set-up lack the pragma
    return storage


def load_existing_study(url: str, name: str) -> optuna.Study:
    path = _sqlite_path(url)
    if path is not None and not path.exists():  # reading only: opening would create an empty database
        raise RecipeError(f"study {name!r} not found: {path} does not exist")
    storage = open_storage(url)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = ", ".join(optuna.get_all_study_names(storage)) or "none"
        raise RecipeError(f"study {name!r} not found in {url} (studies there: {names})") from None


def set_user_attrs(trial: optuna.Trial, attrs: dict) -> None:
    """``trial.set_user_attr(key, value)`` for every item, as one statement in one
    transaction where the storage is SQLite or PostgreSQL (a trial records about 15 keys:
    one round trip instead of 15, each of which re-reads the trial row).

    The rows are the ones ``set_user_attr`` writes (Optuna's own table and JSON encoding,
    upserted on (trial_id, key)), and the trial must still be running, as there. Any other
    storage (MySQL, in-memory, SQLite before 3.24) gets the plain per-key calls. It reaches
    into Optuna's RDB models, so pyproject.toml pins Optuna below 6; tests/test_storage.py
    compares the result with set_user_attr's on SQLite and PostgreSQL."""
    backend = rdb_backend(trial.storage)
    trial_id = getattr(trial, "_trial_id", None)  # private: see "Optuna's private names" below
    dialect = _upsert_dialect(backend)
    if dialect is None or trial_id is None or not attrs:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    _upsert_user_attrs(backend, dialect, trial_id, attrs, running_only=True)
    cached = getattr(trial, "_cached_frozen_trial", None)  # what trial.user_attrs returns
    if cached is not None:
        cached.user_attrs.update(attrs)


def set_finished_trial_user_attrs(study: optuna.Study, trial: optuna.trial.FrozenTrial, attrs: dict) -> None:
    """User attributes on a trial that has already finished, which Optuna's API refuses:
    what ``finalize`` learns about a trial after the search. Same rows as set_user_attr."""
    backend, dialect = require_rdb_for_finished_trials(study)
    _upsert_user_attrs(backend, dialect, trial_id_of(trial), attrs, running_only=False)


def require_rdb_for_finished_trials(study: optuna.Study) -> tuple[RDBStorage, str]:
    """The storage and SQL dialect set_finished_trial_user_attrs needs, or RecipeError."""
    backend = rdb_backend(storage_of(study))
    dialect = _upsert_dialect(backend)
    if dialect is None:
        raise RecipeError("finalize records its results in the study: that needs a SQLite or PostgreSQL storage")
    return backend, dialect


def _upsert_dialect(backend) -> str | None:
    """"sqlite" or "postgresql" where one upsert statement can write user attributes, else None
    (MySQL, in-memory, SQLite before 3.24 has no ON CONFLICT DO UPDATE; Optuna falls back too)."""
    dialect = backend.engine.name if isinstance(backend, RDBStorage) else None
    if dialect == "sqlite" and sqlite3.sqlite_version_info < (3, 24, 0):
        return None
    return dialect if dialect in ("sqlite", "postgresql") else None


def _upsert_user_attrs(backend: RDBStorage, dialect: str, trial_id: int, attrs: dict, *,
                       running_only: bool) -> None:
    from optuna.storages._rdb import models

    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    table = models.TrialUserAttributeModel
    stmt = insert(table).values([{"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                                 for k, v in attrs.items()])
    stmt = stmt.on_conflict_do_update(index_elements=[table.trial_id, table.key],
                                      set_={"value_json": stmt.excluded.value_json})
    session = backend.scoped_session()
    try:
        row = models.TrialModel.find_or_raise_by_id(trial_id, session)
        if running_only:
            backend.check_trial_is_updatable(trial_id, row.state)
        session.execute(stmt)
        session.commit()
    except Exception:
        session.rollback()
        raise
    finally:
        session.close()


def count_trials(study: optuna.Study, states: tuple[TrialState, ...]) -> int:
    """How many of the study's trials (every worker's) are in ``states``: one COUNT query on
    an RDB storage, instead of reading every unfinished trial with its params and attrs."""
    backend = rdb_backend(storage_of(study))
    if not isinstance(backend, RDBStorage):
        return len(study.get_trials(deepcopy=False, states=states))
    from optuna.storages._rdb import models

    session = backend.scoped_session()
    try:
        return (session.query(sqlalchemy.func.count(models.TrialModel.trial_id))
                .filter(models.TrialModel.study_id == study._study_id)  # private: see below
                .filter(models.TrialModel.state.in_(states)).scalar())
    finally:
        session.close()


def database_error(exc: BaseException | None) -> BaseException | None:
    """The error in ``exc``'s chain that says the database is not answering (a lost
    connection, a server that is down or restarting, a file locked past its timeout), or
    None. Optuna wraps these in StorageInternalError, or in errors raised while it handles
    them: causes and contexts are followed."""
    lost = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.DisconnectionError)
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, lost):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def database_lost(exc: BaseException) -> bool:
    return database_error(exc) is not None


class DatabaseLost(BaseException):
    """Raised by the objective when the database stops answering mid-trial. Not an
    Exception, so that Optuna neither catches it nor tries to record the trial (which would
    fail, or mark a sound candidate failed for good): the worker waits for the database,
    then fails the trial with this reason and re-queues it (``recovery``, ``run_worker``)."""


class _Storage(RDBStorage):
    """Optuna's RDB storage, with heartbeats that outlive a database outage: Optuna's
    heartbeat thread dies on its first error (a traceback on stderr), and the trial then
    looks dead to other workers once the database is back. A missed heartbeat is skipped;
    the next one, when the database answers again, makes up for it."""

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if not database_lost(exc):
                raise


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """Optuna's retry of a trial whose worker is gone (same parameters, at most ``max_retry``
    times), noting which trials it was called for (``recovery.recover_dead_trials``), without
    the ``drop`` attributes: a retry with the dead worker's ``owner``, run by a live worker
    not yet recorded, would pass for the dead worker's trial."""

    def __init__(self, max_retry: int | None = None, *, drop: tuple[str, ...] = ("owner",)) -> None:
        super().__init__(max_retry=max_retry)
        self.drop = drop
        self.seen: list[tuple[int, bool]] = []  # (trial number, whether it was re-queued)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        history = trial.system_attrs.get("retry_history", [])  # Optuna's rule: at most max_retry retries
        self.seen.append((trial.number, self._max_retry is None or len(history) < self._max_retry))
        clean = copy.copy(trial)
        clean.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in self.drop}
        clean.system_attrs = copy.deepcopy(trial.system_attrs)  # Optuna's append stays off the caller's trial
        super().__call__(study, clean)


@contextmanager
def study_lock(url: str, name: str):
    """One holder at a time per study, across processes and machines: a file lock beside a
    SQLite database (its workers share a file system), a session advisory lock on
    PostgreSQL. Other databases get none (MySQL: a second worker may duplicate the work done
    under it)."""
    path = _sqlite_path(url)
    if path is not None:
        with open(f"{path}.{name}.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    if not url.startswith("postgresql"):
        yield
        return
    key = int.from_bytes(hashlib.sha256(f"cnnsearch:{name}".encode()).digest()[:8], "big", signed=True)
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
    finally:
        engine.dispose()


# --- Optuna's private names: the one module that uses them -----------------------------------
# Optuna 5.0 has no public way to do what each of these does. pyproject.toml pins Optuna below 6,
# and tests/test_storage.py::test_the_optuna_internals_cnnsearch_uses_exist names the one that
# is gone if an upgrade removes any. Also private, in this module only: ``optuna.storages._rdb``
# (its table models, for one-statement upserts and a COUNT query; its logger's name) and
# ``Study._study_id`` (the rows' study key), ``Trial._cached_frozen_trial`` (updated after that
# upsert, so that ``trial.user_attrs`` sees it) and the retry callback's ``_max_retry``.

def storage_of(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study reads and writes (``Study._storage``). Needed to read one trial
    by its id and to reach the heartbeat's retry callback, which Optuna only offers there."""
    return study._storage


def rdb_backend(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """The RDB storage under Optuna's caching wrapper (``_CachedStorage._backend``), or the
    storage itself: the SQL engine lives there."""
    return getattr(storage, "_backend", storage)


def trial_id_of(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's key of a trial (``_trial_id``): a storage addresses trials by it, and a
    trial's number is unique only within its study."""
    return trial._trial_id


def cached_trials(study: optuna.Study, states: tuple[TrialState, ...]) -> list[optuna.trial.FrozenTrial]:
    """``study.get_trials(deepcopy=False, states=states)`` from Optuna's per-trial cache
    (``Study._get_trials(use_cache=True)``), which the sampler has usually filled already:
    no storage read inside a trial. Falls back to the public read if that is gone."""
    try:
        return study._get_trials(
            states=states,
            deepcopy=False, use_cache=True,  # pragma: no mutate (copies and the cache: speed, the same trials)
        )
    except (AttributeError, TypeError):
        return study.get_trials(
            states=states,
            deepcopy=False,  # pragma: no mutate (copies: speed, the same trials)
        )


def non_domination_ranks(points: np.ndarray) -> np.ndarray:
    """Each point's non-domination rank, 0 for the Pareto front, every coordinate minimised
    (ties share a rank). Optuna's fast non-dominated sort (``_fast_non_domination_rank``,
    what NSGA-II and ``Study.best_trials`` use): the project's one Pareto implementation."""
    from optuna.study._multi_objective import _fast_non_domination_rank

    return _fast_non_domination_rank(np.asarray(points, dtype=float))
