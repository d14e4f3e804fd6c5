"""Trials left behind: a worker that died mid-trial (kill -9, a crash, a lost machine) and
a database that stopped answering mid-trial. Each such trial is failed with its reason and
re-queued with the same parameters (at most twice), so no trial stays RUNNING and no
candidate is lost; ``study.py``'s worker loop and ``runner.py`` call these.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime

import optuna
from optuna.trial import TrialState

from .errors import CnnSearchError, FailingTrials
from .interrupt import check as check_interrupt
from .storage import (
    MAX_RETRY,
    RetryStaleTrial,
    count_trials,
    database_error,
    database_lost,
    first_line,
    rdb_backend,
    set_finished_trial_user_attrs,
    storage_of,
    study_lock,
    trial_id_of,
)
from .trials import FINISHED


def process_owner() -> dict:
    """Who runs a trial: host, pid and the process's start time (so a reused pid is not
    taken for the dead owner), and the boot and pid namespace, so containers that share a
    hostname but not their processes never judge each other's. Recorded first on each trial."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_time(os.getpid()),
            "boot": _read("/proc/sys/kernel/random/boot_id"), "pidns": _pid_namespace()}


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start) of ``pid`` from Linux /proc: its state letter (Z: a zombie, dead but not
    yet reaped by its parent) and the clock ticks after boot at which it started; or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def _start_time(pid: int) -> int | None:
    """Clock ticks after boot at which ``pid`` started (Linux /proc), or None elsewhere."""
    stat = _stat(pid)
    return stat[1] if stat is not None else None


def _alive(owner: dict) -> bool:
    try:
        os.kill(int(owner["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError, TypeError):
        return True  # someone else's live process, or a value we cannot judge: leave it be
    stat, start = _stat(int(owner["pid"])), owner.get("start")
    if stat is not None and stat[0] == "Z":
        return False  # killed, and its parent (``--workers``' launcher) has not reaped it yet
    return start is None or stat is None or stat[1] == start


# Seconds after its start during which a retry is left to whoever runs it: a retry that an
# older cnnsearch queued carries its dead owner until the live one records itself.
JUST_STARTED_S = 2.0


def _dead_here(trial: optuna.trial.FrozenTrial, here: dict) -> bool:
    """Whether ``trial``'s recorded owner ran on this host (``here``) and is gone."""
    owner = trial.user_attrs.get("owner")
    if (not isinstance(owner, dict) or None in (here["boot"], here["pidns"])
            or any(owner.get(k) != here[k] for k in ("host", "boot", "pidns"))):
        return False  # no owner yet, or another machine, container or boot: the heartbeat judges it
    if "failed_trial" in trial.system_attrs:
        age_s = (datetime.now() - trial.datetime_start).total_seconds()  # a RUNNING trial has its start
        if age_s < JUST_STARTED_S:  # pragma: no mutate (< or <=: they differ on one instant of a clock)
            return False
    return not _alive(owner)


def _lock(study: optuna.Study):
    """The study's lock (``storage.study_lock``), so that two workers recovering at once
    fail and re-queue a trial once (the second finds it finished); none for a storage
    without a URL (in memory)."""
    url = getattr(rdb_backend(storage_of(study)), "url", None)
    return study_lock(url, study.study_name) if url else nullcontext()


def recover_dead_local_trials(study: optuna.Study) -> list[tuple[int, str]]:
    """Fail and re-queue, at once, every RUNNING trial whose owner ran on this host and is
    gone (kill -9, a crash), as (number, what happened). Other hosts' trials are left to the
    heartbeat (30 s). A trial is retried as the heartbeat would: same parameters, at most twice."""
    here = process_owner()
    recovered = []
    for t in study.get_trials(states=(TrialState.RUNNING,)):
        if not _dead_here(t, here):
            continue
        with _lock(study):  # Optuna's RUNNING check and its write are apart: on SQLite, two could pass it
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except Exception:  # another worker recovered it first (or the storage refused): leave it
                continue
            again = _retry(study, t)
        try:  # the retry copied the trial's attributes: the reason goes on the failed trial only, after
            set_finished_trial_user_attrs(study, t, {"fail_reason": f"its worker (pid {t.user_attrs['owner']['pid']}) "
                                                                    "died mid-trial"})
        except CnnSearchError:
            pass  # a storage that cannot annotate finished trials: the FAIL and the retry stand
        recovered.append((t.number, f"its worker on this host died; {requeued_text(again)}"))
    return recovered


def recover_dead_trials(study: optuna.Study) -> list[tuple[int, str]]:
    """Every RUNNING trial whose worker is gone, failed and re-queued (at most twice), as
    (number, what happened):
    this host's dead workers at once (``recover_dead_local_trials``), other hosts' by their
    stale heartbeat (Optuna's ``fail_stale_trials``, which runs the storage's retry callback)."""
    recovered = recover_dead_local_trials(study)
    getter = getattr(storage_of(study), "get_heartbeat_stale_trial_callback", None)  # RDB storages only
    callback = getter() if getter is not None else None
    seen = getattr(callback, "seen", [])  # storage.RetryStaleTrial notes what it retries
    start = len(seen)
    with warnings.catch_warnings():  # "experimental" in Optuna since 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    stale = seen[start:]
    return recovered + [(n, f"its worker stopped sending heartbeats; {requeued_text(ok)}") for n, ok in stale]


def _retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, *, drop: tuple[str, ...] = ("owner",)) -> bool:
    """Re-queue a failed trial's parameters as the heartbeat's retry does, without its
    ``drop`` attributes; whether it did (at most ``MAX_RETRY`` times)."""
    with warnings.catch_warnings():  # "experimental" in Optuna since 2.8, and stable here
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # pragma: no mutate (the constructor warns of nothing else)
        retry = RetryStaleTrial(max_retry=MAX_RETRY, drop=drop)
    retry(study, trial)
    return retry.seen[0][1]


def requeue_failed(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """A trial that failed for a reason outside its candidate (``user_attrs["retry"]``: its
    latency server was down), re-queued with the same parameters, at most ``MAX_RETRY``
    times, without the failure's status and reason; whether it was."""
    return _retry(study, trial, drop=("owner", "status", "fail_reason", "retry"))


def requeued_text(requeued: bool) -> str:
    return "re-queued" if requeued else f"not re-queued (tried {MAX_RETRY + 1} times)"


# How long a worker waits for a database that stopped answering (a PostgreSQL restart, a
# network cut) before it stops; every finished trial is in the database by then.
DB_RETRY_S = float(os.environ.get("CNNSEARCH_DB_RETRY_S", "120"))


def outage_deadline(since: float) -> float:
    """When a worker that lost its database at ``since`` (time.monotonic) stops waiting."""
    return since + DB_RETRY_S


def _first_line(exc: BaseException) -> str:
    """The database's own words where ``exc`` holds them (not Optuna's wrapper's)."""
    return first_line(database_error(exc) or exc)


def wait_for_database(study: optuna.Study, exc: BaseException, *, deadline: float,
                      on_note: Callable[[str], None] | None = None) -> None:
    """Return once the study's database answers again, trying every second (never at once:
    an error that a read does not show, such as a full disk, must not spin the worker);
    FailingTrials once ``deadline`` (time.monotonic) has passed."""
    if on_note is not None:
        on_note(f"the database stopped answering ({_first_line(exc)}); retrying for up to {DB_RETRY_S:.0f} s")
    last = exc
    while True:
        time.sleep(1.0)
        check_interrupt()
        if time.monotonic() >= deadline:
            raise FailingTrials(f"the study's database has not answered for {DB_RETRY_S:.0f} s "
                                f"({_first_line(last)}); every finished trial is stored in it: run the "
                                "search again when it is back") from None
        try:
            count_trials(study, FINISHED)
            return
        except Exception as again:
            if not database_lost(again):
                raise
            last = again


def fail_interrupted_trial(study: optuna.Study, trial: optuna.Trial | None,
                           exc: BaseException, *, reason: str | None = None) -> tuple[int, bool] | None:
    """The trial that was running when the database went away, failed with that reason and
    re-queued (its candidate was never judged), as a dead worker's is: (its number, whether
    it was re-queued). None when it had finished anyway, none was running, or the database
    failed again meanwhile (the trial then stays RUNNING, and its stopped heartbeat has the
    next worker fail and re-queue it). ``reason``: another cause than the database's (the
    artifact store's)."""
    if trial is None:
        return None
    try:
        frozen = storage_of(study).get_trial(trial_id_of(trial))
        if frozen.state != TrialState.RUNNING:
            return None
        study.tell(trial.number, state=TrialState.FAIL)
    except Exception as again:  # another worker's recovery failed it first, or the database again
        if database_lost(again) or isinstance(again, (ValueError, RuntimeError)):
            return None
        raise
    requeued = False
    try:
        requeued = _retry(study, frozen)
        set_finished_trial_user_attrs(study, frozen, {
            "status": "error",
            "fail_reason": reason or f"the database connection was lost mid-trial: {_first_line(exc)}"})
    except CnnSearchError:
        pass  # a storage that cannot annotate finished trials: the FAIL and the retry stand
    except Exception as again:
        if not database_lost(again):
            raise
    return trial.number, requeued
