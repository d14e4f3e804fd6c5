"""The batched attribute writes and the trial count give what Optuna's own calls give."""

import sys
import uuid

import optuna
import pytest
from optuna.trial import TrialState

from cnnsearch.errors import RecipeError
from cnnsearch.storage import count_trials, load_existing_study, open_storage, set_user_attrs
from tests.study_helpers import PG_URL

ATTRS = {"arch": {"blocks": [{"out_channels": 8}], "input": [1, 8, 8]}, "params": 1234, "flops": 5.5e6,
         "summary": "c8k3", "curve": [0.5, 0.75], "status": "ok", "nothing": None}
KEEPALIVE = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5,
             "keepalives_count": 3}


def _storages(tmp_path):
    yield "sqlite", open_storage(f"sqlite:///{tmp_path / 's.db'}")
    yield "memory", optuna.storages.InMemoryStorage()


def _check_same_as_set_user_attr(storage, name):
    study = optuna.create_study(storage=storage, study_name=name, directions=["maximize"])
    batched, plain = study.ask(), study.ask()
    batched.set_user_attr("params", 1)  # an existing key is overwritten, as set_user_attr does
    set_user_attrs(batched, ATTRS)
    for key, value in ATTRS.items():
        plain.set_user_attr(key, value)
    assert batched.user_attrs == ATTRS  # the live trial sees them too
    study.tell(batched, 1.0)
    study.tell(plain, 1.0)
    fresh = optuna.load_study(study_name=name, storage=storage)  # read back from the database
    assert fresh.trials[0].user_attrs == fresh.trials[1].user_attrs == ATTRS
    with pytest.raises(RuntimeError):  # a finished trial refuses, as with set_user_attr
        set_user_attrs(batched, {"late": 1})
    assert "late" not in optuna.load_study(study_name=name, storage=storage).trials[0].user_attrs


def test_batched_user_attrs_equal_set_user_attr_on_sqlite_and_in_memory(tmp_path):
    for kind, storage in _storages(tmp_path):
        _check_same_as_set_user_attr(storage, f"attrs-{kind}")


@pytest.mark.postgres
def test_batched_user_attrs_equal_set_user_attr_on_postgresql():
    _check_same_as_set_user_attr(open_storage(PG_URL), f"attrs-{uuid.uuid4().hex[:8]}")


def test_a_postgresql_connection_gives_up_in_seconds_on_a_cut_network():
    """A cut network drops packets: the driver gets a connect timeout and TCP keepalives, so
    no query hangs for minutes of TCP retries (here, the refused first connection's)."""
    import sqlalchemy

    sent = []

    def record(dialect, conn_rec, cargs, cparams):
        sent.append(dict(cparams))

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "do_connect", record)
    try:
        with pytest.raises(RecipeError, match=r"^storage: cannot open postgresql\+psycopg://postgres@127.0.0.1:1/test: "):
            open_storage("postgresql+psycopg://postgres@127.0.0.1:1/test")  # nothing listens on port 1
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "do_connect", record)
    assert sent and {k: sent[0].get(k) for k in KEEPALIVE} == KEEPALIVE


@pytest.mark.postgres
def test_a_pooled_postgresql_connection_is_pinged_before_use():
    """A connection the network cut while it sat in the pool is found dead before a query."""
    assert open_storage(PG_URL).engine.pool._pre_ping


def test_a_database_whose_driver_is_missing_is_named_by_its_scheme(monkeypatch):
    """One line that names the URL's scheme (the dialect and driver SQLAlchemy was asked for)."""
    monkeypatch.setitem(sys.modules, "MySQLdb", None)  # missing, even where mysqlclient is installed
    with pytest.raises(RecipeError, match=r"^storage: mysql\+mysqldb needs a driver that is not installed \("):
        open_storage("mysql+mysqldb://user@127.0.0.1/db")

def test_count_trials_counts_by_state_across_workers(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    mine = optuna.create_study(storage=open_storage(url), study_name="c", directions=["maximize"])
    other = optuna.load_study(storage=open_storage(url), study_name="c")  # a second worker
    for value in (1.0, 2.0):
        mine.tell(mine.ask(), value)
    other.tell(other.ask(), state=TrialState.PRUNED)
    other.tell(other.ask(), state=TrialState.FAIL)
    running = other.ask()
    assert count_trials(mine, (TrialState.COMPLETE,)) == 2
    assert count_trials(mine, (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)) == 4
    other.tell(running, 3.0)
    assert count_trials(mine, (TrialState.COMPLETE,)) == 3
    memory = optuna.create_study()
    memory.tell(memory.ask(), 1.0)
    assert count_trials(memory, (TrialState.COMPLETE,)) == 1


def test_a_file_that_is_not_a_database_is_refused_by_name_and_left_untouched(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# notes, not a database\n" * 50)
    before = readme.read_bytes()
    for url in (f"sqlite:///{readme}", f"sqlite:///{tmp_path}"):  # a text file; a folder
        with pytest.raises(RecipeError, match=r"^storage: .* (is not an SQLite database file|is a folder)"):
            open_storage(url)
    assert readme.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]  # no -wal or -journal beside it


def test_reading_a_study_from_a_missing_database_file_creates_no_file(tmp_path):
    with pytest.raises(RecipeError, match=r"^study 'ghost' not found: .*none\.db does not exist"):
        load_existing_study(f"sqlite:///{tmp_path / 'none.db'}", "ghost")
    assert list(tmp_path.iterdir()) == []


def test_a_study_missing_from_a_database_without_studies_says_none(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    open_storage(url)  # the database, with Optuna's tables and no study
    with pytest.raises(RecipeError) as info:
        load_existing_study(url, "ghost")
    assert str(info.value) == f"study 'ghost' not found in {url} (studies there: none)"


def test_the_optuna_internals_cnnsearch_uses_exist(tmp_path):
    """storage.py's private Optuna names, each checked where it lives: an Optuna upgrade that
    removes one fails here, naming it, instead of deep inside a search."""
    import inspect

    import numpy as np
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    from cnnsearch.storage import cached_trials, non_domination_ranks, rdb_backend, storage_of, trial_id_of

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'i.db'}"))
    trial = study.ask()
    missing = [name for name, there in [
        ("Study._storage", hasattr(study, "_storage")),
        ("Study._study_id", hasattr(study, "_study_id")),
        ("Study._get_trials(use_cache=)", "use_cache" in inspect.signature(getattr(study, "_get_trials", id)).parameters),
        ("_CachedStorage._backend", hasattr(study._storage, "_backend")),
        ("Trial._trial_id", hasattr(trial, "_trial_id")),
        ("Trial._cached_frozen_trial", hasattr(trial, "_cached_frozen_trial")),
        ("RetryHeartbeatStaleTrialCallback._max_retry", hasattr(RetryHeartbeatStaleTrialCallback(2), "_max_retry")),
    ] if not there]
    try:
        from optuna.storages._rdb import models
        missing += [f"_rdb.models.{m}" for m in ("TrialModel", "TrialUserAttributeModel") if not hasattr(models, m)]
    except ImportError:
        missing.append("optuna.storages._rdb.models")
    try:
        from optuna.study._multi_objective import _fast_non_domination_rank  # noqa: F401
    except ImportError:
        missing.append("optuna.study._multi_objective._fast_non_domination_rank")
    assert not missing, f"Optuna {optuna.__version__} lacks what cnnsearch/storage.py uses: {missing}"
    # and the wrappers do what they say
    study.tell(trial, 1.0)
    assert isinstance(rdb_backend(storage_of(study)), optuna.storages.RDBStorage)
    assert storage_of(study).get_trial(trial_id_of(trial)).number == trial.number
    assert [t.number for t in cached_trials(study, (TrialState.COMPLETE,))] == [0]
    assert non_domination_ranks(np.array([[1, 2], [2, 1], [2, 2], [1, 2], [3, 3]])).tolist() == [0, 0, 1, 0, 2]


@pytest.mark.parametrize("points, directions, front", [
    ([], ["maximize", "minimize"], []),
    ([(0.9, 5.0), (0.8, 4.0), (0.8, 6.0), (0.9, 5.0)], ["maximize", "minimize"], [True, True, False, True]),
    ([(1.0, 1.0, 1.0), (0.5, 0.5, 2.0)], ["maximize", "minimize", "maximize"], [True, True]),
    ([(1.0, 2.0), (1.0, 3.0)], ["minimize", "minimize"], [True, False]),
    ([(0.9, 5.0), (0.8, float("nan")), (0.7, 1.0)], ["maximize", "minimize"], [True, False, True]),
    ([(0.9, float("inf")), (0.8, 1.0)], ["maximize", "minimize"], [True, True]),
    ([(float("nan"), 1.0)], ["maximize", "minimize"], [False]),
])
def test_the_pareto_mask_is_optunas_front(points, directions, front):
    from cnnsearch.trials import pareto_mask

    assert pareto_mask(points, directions) == front


def test_a_pareto_mask_is_booleans():
    from cnnsearch.trials import pareto_mask

    mask = pareto_mask([[0.9, 2.0], [0.8, 3.0], [float("nan"), 1.0]], ["maximize", "minimize"])
    assert mask == [True, False, False] and all(type(m) is bool for m in mask)


def test_a_trial_without_a_recorded_status_shows_its_state():
    from cnnsearch.trials import Status, status_of

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    study.ask()  # running
    study.tell(study.ask(), state=TrialState.FAIL)
    study.ask().set_user_attr("status", "shape")  # a status recorded wins over the state
    study.enqueue_trial({})  # waiting
    assert [status_of(t) for t in study.get_trials()] == [Status.RUNNING.value, "fail", "shape", "waiting"]

