"""Opening a recipe's study and running one worker's trials on it.

``open_study`` creates the study or resumes it (refusing one made with other objectives)
and seeds its sampler; ``run_worker`` runs an objective on it until the study holds a
budget of trials, stopping early when every candidate so far was rejected by the shapes
or the limits. The objective itself lives in ``objective.py``; what a trial's status and
feasibility mean, in ``trials.py``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from .artifacts import ArtifactsLost, wait_for_store
from .errors import CnnSearchError, FailingTrials, RecipeError
from .interrupt import check as check_interrupt
from .recipe import Recipe, changed_meaning
from .recovery import (
    fail_interrupted_trial,
    outage_deadline,
    recover_dead_local_trials,
    requeue_failed,
    requeued_text,
    wait_for_database,
)
from .samplers import RECORD_KEY, make_sampler, record_of, recorded, resolve, sampler_for  # noqa: F401 (make_sampler: importable from here)
from .storage import DatabaseLost, count_trials, database_lost
from .trials import FINISHED, REJECTED, is_feasible

INFEASIBLE_CHECK_AFTER = 20  # with no feasible trial after this many, stop and say why


def sampler_seed(recipe_seed: int, trials_in_study: int, worker: str) -> int:
    """The recipe's seed for a fresh study's first (or only) worker, so it reproduces; else
    one derived from the seed, the trials already there and the worker's identity, so a
    resumed run or a second worker does not re-propose the candidates it started from."""
    if trials_in_study == 0 and worker == "0":
        return recipe_seed
    digest = hashlib.sha256(f"{recipe_seed}:{trials_in_study}:{worker}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def check_existing(storage, recipe: Recipe) -> optuna.Study | None:
    """The recipe's study if the storage holds it, after refusing a different recipe (before
    any data is loaded or anything written). A study left empty by a run that failed before
    its data loaded (no trial, no data description: what older versions left after a bad
    ``[data]``) holds nothing to compare with: it is returned unchecked, to take the recipe."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    existing = _existing(storage, recipe.name)
    if existing is None:
        return None
    empty = _left_empty(existing)
    if existing.directions != _directions(recipe):
        raise RecipeError(f"objectives: study {recipe.name!r} already exists with "
                          f"{existing.metric_names or len(existing.directions)} objectives; use another name or "
                          "storage" + (" (it has no trial: `optuna delete-study` removes it)" if empty else ""))
    if not empty and not {"data", "recipe"} & set(existing.user_attrs):  # not ours: refused before a worker writes
        raise RecipeError(_NOT_OURS.format(name=recipe.name))
    if not empty:
        check_recipe(existing, recipe)
    return existing


def resolve_search(study: optuna.Study | None, recipe: Recipe) -> Recipe:
    """``recipe`` with the sampler and early-stopping settings it leaves unwritten taken from
    ``study``'s record (``samplers.resolve``); unchanged for no study, or one left empty."""
    if study is None or _left_empty(study):
        return recipe
    return resolve(recipe, recorded(study.user_attrs))


def _left_empty(study: optuna.Study) -> bool:
    """No trial and no data description: what a run that failed before its data loaded left."""
    return "data" not in study.user_attrs and not study.get_trials(deepcopy=False)


@dataclass(frozen=True)
class Seat:
    """A worker's place in a study: the study, and what its trials record of the worker."""

    study: optuna.Study
    sampler_seed: int  # the seed of this worker's sampler (``sampler_seed``)
    worker: str  # this worker's name: an index, or index@host:pid for a plain run resuming


def open_study(recipe: Recipe, storage, *, worker: str = "0") -> optuna.Study:
    """``open_worker``'s study."""
    return open_worker(recipe, storage, worker=worker).study


def open_worker(recipe: Recipe, storage, *, worker: str = "0") -> Seat:
    """Create the recipe's study or resume it; refuse one made by a different recipe.

    ``worker`` names this worker (an index, or index@host:pid); with the trials already in
    the study it seeds the sampler (``sampler_seed``), and the returned seat says which
    seed, for the objective to record on each trial. The study's early-stopping
    fingerprint is fixed when it is made (``user_attrs["fingerprint"]``), so that a later
    version that computes fingerprints otherwise never splits its trials into strangers; so
    are its sampler and early-stopping settings (``user_attrs["search"]``, ``samplers.py``),
    which the sampler is made from: a later change of default never changes a study's."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # group=, metric names
    existing = check_existing(storage, recipe)
    empty = existing is not None and _left_empty(existing)
    study = optuna.create_study(study_name=recipe.name, storage=storage, directions=recipe.directions,
                                load_if_exists=True,
                                sampler=optuna.samplers.RandomSampler(),  # pragma: no mutate (a stand-in: replaced below)
                                )
    trials = study.get_trials(deepcopy=False)  # pragma: no mutate (a copy changes nothing: only read)
    worker = str(worker)
    if trials and worker == "0":  # a plain run resuming: two such runs must not share a seed
        worker = f"0@{socket.gethostname()}:{os.getpid()}"
    seed = sampler_seed(recipe.seed, len(trials), worker)
    if RECORD_KEY not in study.user_attrs or empty:  # made now, or before records: what it resolves to
        fresh = existing is None or empty
        study.set_user_attr(RECORD_KEY, record_of(recipe) if fresh else recorded(study.user_attrs))
    study.sampler = sampler_for(study.user_attrs[RECORD_KEY], seed)
    if study.metric_names != list(recipe.objectives):
        study.set_metric_names(list(recipe.objectives))
    if (existing is None or empty) and "artifacts" not in study.user_attrs and recipe.artifacts:
        study.set_user_attr("artifacts", recipe.artifacts)  # where every worker puts its weights (artifacts.py)
    if (empty or "recipe" not in study.user_attrs) and study.user_attrs.get("recipe") != recipe.to_dict():
        study.set_user_attr("recipe", recipe.to_dict())
    if "fingerprint" not in study.user_attrs:
        # a study made before fingerprints were stored: its trials' own (the latest), else the recipe's
        prints = [t.user_attrs["fingerprint"] for t in trials if "fingerprint" in t.user_attrs]
        study.set_user_attr("fingerprint", prints[-1] if prints else recipe.fingerprint())
    return Seat(study=study, sampler_seed=seed, worker=worker)


def _directions(recipe: Recipe) -> list[optuna.study.StudyDirection]:
    return [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
            for d in recipe.directions]


def record_data(study: optuna.Study, description: dict) -> None:
    """What a self-contained export needs (input size, classes, normalisation), stored with
    the study the first time a worker loads its data; later workers must load the same."""
    check_data(study, description)
    if "data" not in study.user_attrs:
        study.set_user_attr("data", description)


_NOT_OURS = ("study {name!r} has trials but no stored data description: it was made by other Optuna code, or by an "
             "older cnnsearch (whose split had no test set); give the recipe a new name or another storage")


def check_data(study: optuna.Study, description: dict) -> None:
    """Refuse data that is not what the study's trials were trained on: a changed folder,
    other split defaults, or a study from before train/val/test splits."""
    stored = study.user_attrs.get("data")
    if stored is None:
        if study.get_trials(deepcopy=False):  # pragma: no mutate (deepcopy is a speed option: any value gives the same trials)
            raise RecipeError(_NOT_OURS.format(name=study.study_name))
        return
    changed = sorted(k for k in set(stored) | set(description) if stored.get(k) != description.get(k))
    if changed:
        why = ""
        if str(stored.get("name")).startswith("folder:") and set(changed) <= {"mean", "std"}:
            why = (" (photos are now resized on their short side and centre-cropped, not squashed: a study of "
                   "photos that are not square, made before, trained on other pixels)")
        raise RecipeError(f"study {study.study_name!r}: the data now loads differently from when its trials "
                          f"were trained ({', '.join(changed)} changed){why}; give the recipe a new name or "
                          "another storage")


def _existing(storage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def check_recipe(study: optuna.Study, recipe: Recipe) -> None:
    """A study keeps the recipe that made it; resuming it under a recipe that changes what
    its trials mean would mix incomparable trials into one front."""
    from .recipe import from_dict

    stored = study.user_attrs.get("recipe")
    if not stored:
        return  # not made by cnnsearch (check_existing refuses one with trials) or left empty
    recipe = resolve(recipe, recorded(study.user_attrs))  # the settings it leaves unwritten: the study's
    try:
        old = from_dict({**stored, "storage": recipe.storage, "artifacts": recipe.artifacts}, Path.cwd())
    except RecipeError as exc:  # not a silent pass: nothing could then be compared
        raise RecipeError(f"study {recipe.name!r} keeps a recipe that this cnnsearch cannot read ({exc}), so "
                          "whether its trials are comparable with this recipe's is unknown: give the recipe a "
                          "new name (or another storage)") from None
    changes = changed_meaning(old, recipe)
    if "rungs" not in stored.get("early_stopping", {}):
        # stored before early stopping's rework (its defaults changed then): its settings
        # never made trials incomparable, so a study of that time resumes under today's
        changes = [c for c in changes if not c.startswith("early_stopping.")]
    if changes:
        raise RecipeError(f"study {recipe.name!r} was made with another recipe: " + "; ".join(changes)
                          + ". Its trials would not be comparable: give the recipe a new name "
                          "(or another storage), or undo the change")


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


class AllInfeasible(CnnSearchError):
    """Every candidate so far broke the shapes or a limit: the recipe needs changing."""


def _reason_kind(reason: str) -> str:
    """'params 12,345 > limits.max_params 3,000' -> 'limits.max_params';
    'blocks[1].conv: kernel 5 is larger ...' -> 'blocks[1].conv'."""
    if " > limits." in reason:
        return reason.split(" > ", 1)[1].split()[0]
    return reason.split(":", 1)[0]


def infeasible_summary(trials: list[FrozenTrial]) -> str:
    """The three most common reasons, e.g. 'limits.max_params (17); blocks[2].conv (3)'."""
    reasons = Counter(_reason_kind(t.user_attrs.get("infeasible_reason", "?"))
                      for t in trials if t.state == TrialState.COMPLETE)
    return "; ".join(f"{why} ({n})" for why, n in reasons.most_common(3))


def run_worker(study: optuna.Study, objective: Callable[[optuna.Trial], list[float]], *, until: int,
               timeout: float | None = None, infeasible_after: int = INFEASIBLE_CHECK_AFTER,
               max_consecutive_failures: int = 5,
               on_trial: Callable[[optuna.Study, FrozenTrial], None] | None = None,
               on_note: Callable[[str], None] | None = None) -> optuna.Study:
    """Run ``objective`` on ``study`` until it holds ``until`` finished trials and no re-queued one,
    counting every worker's. ``on_trial`` sees each trial this worker finishes. With no
    feasible trial after ``infeasible_after`` rejected ones, stop with AllInfeasible; after
    ``max_consecutive_failures`` of this worker's trials FAILed in a row, with FailingTrials
    (instead of burning the budget on a broken GPU or a bug). A database that stops answering
    mid-run is waited for (``DB_RETRY_S``): the trial it interrupted fails with that reason
    and is re-queued, and the run goes on; ``on_note`` hears of it. If it does not come
    back, FailingTrials: every finished trial is already stored. An artifact store that
    fails mid-trial is handled alike (``wait_for_store``)."""
    watch = _Watch(until=until, infeasible_after=infeasible_after, max_failures=max_consecutive_failures,
                   on_trial=on_trial, on_note=on_note)
    current: dict[str, optuna.Trial] = {}  # the trial in hand, to fail if the database goes away under it

    def tracked(trial: optuna.Trial):
        current["trial"] = trial
        return objective(trial)

    started = time.monotonic()
    while True:
        try:
            done = finished_count(study)
            owed = count_trials(study, (TrialState.WAITING,))  # re-queued after a dead worker: run even on a met budget
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if not (done < until or owed) or (left is not None and left <= 0):
                return study
            # the callback stops the loop; the bound leaves room for failed (retried) trials
            study.optimize(tracked, n_trials=max(until - done, 0) + owed + 10, timeout=left,
                           callbacks=[watch.after_trial], catch=(Exception,),
                           gc_after_trial=False,  # pragma: no mutate (Optuna tests its truth: None is False too)
                           )
            return study
        except ArtifactsLost as exc:  # the database answers: fail and re-queue the trial, then wait for the store
            watch.artifacts_lost(study, current.pop("trial", None), exc)
        except (Exception, DatabaseLost) as exc:
            if not database_lost(exc):
                raise
            watch.database_lost(study, current, exc)


class _Watch:
    """What one worker's run keeps between its trials (``run_worker``): its failures in a
    row, whether a feasible trial was seen, and since when the database has been away."""

    def __init__(self, *, until: int, infeasible_after: int, max_failures: int,
                 on_trial: Callable[[optuna.Study, FrozenTrial], None] | None,
                 on_note: Callable[[str], None] | None) -> None:
        self.until, self.infeasible_after, self.max_failures = until, infeasible_after, max_failures
        self.on_trial, self.on_note = on_trial, on_note
        self.feasible_seen = False
        self.failures = 0
        self.lost_since: float | None = None  # when the database stopped answering, since the last finished trial

    def _failed(self, last: str) -> None:
        """One more of this worker's trials failed (``last``: why): FailingTrials at the limit
        (raised from Optuna's callback, it ends optimize: no study.stop() needed)."""
        self.failures += 1
        if self.failures >= self.max_failures:
            raise FailingTrials(f"{self.failures} trials in a row failed; the last: {last}") from None

    def after_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna's callback after each of this worker's trials."""
        check_interrupt()  # a Ctrl-C swallowed during the trial (its status is already stored)
        self.lost_since = None  # a trial got through: the database answers
        if self.on_trial is not None:
            self.on_trial(study, trial)
        if trial.state == TrialState.FAIL:
            if trial.user_attrs.get("retry"):  # e.g. its latency server was down: the same parameters again
                again = requeue_failed(study, trial)
                if self.on_note is not None:
                    self.on_note(f"trial {trial.number:>4}: {requeued_text(again)} ({trial.user_attrs['retry']} failed)")
            self._failed(trial.user_attrs.get("fail_reason", "no reason recorded"))
        else:
            self.failures = 0
        # a worker on this host that died (kill -9) is seen now, not once its heartbeat is
        # stale: its trial is failed and re-queued before the budget is judged, so that the
        # others meeting the budget in the meantime leave none RUNNING
        for number, why in recover_dead_local_trials(study):
            if self.on_note is not None:
                self.on_note(f"trial {number:>4} failed: {why}")
        # every worker's finished trials; running ones do not count, since another host's dead
        # worker's trial looks running until the heartbeat fails it and re-queues it (WAITING):
        # a worker stops only when the budget is finished and no re-queued trial is owed
        if count_trials(study, FINISHED) >= self.until and not count_trials(study, (TrialState.WAITING,)):
            study.stop()
        self.feasible_seen = self.feasible_seen or is_feasible(trial)
        if not self.feasible_seen:  # the guard reads every trial: skip it once it cannot fire
            self._all_infeasible_guard(study)

    def _all_infeasible_guard(self, study: optuna.Study) -> None:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if any(is_feasible(t) for t in done):
            self.feasible_seen = True  # pragma: no mutate (a shortcut: without it the guard re-reads the trials and finds the same)
            return
        rejected = [t for t in done if t.user_attrs.get("status") in REJECTED]
        if len(rejected) >= self.infeasible_after and len(rejected) == len(done):
            raise AllInfeasible(f"all {len(done)} candidates so far were infeasible, none was trained: "
                                f"{infeasible_summary(done)}; widen [limits] or change the space")

    def artifacts_lost(self, study: optuna.Study, trial: optuna.Trial | None, exc: ArtifactsLost) -> None:
        """The store refused a trial's weights: that trial failed and re-queued, the store waited for."""
        outcome = fail_interrupted_trial(study, trial, exc, reason=f"the artifact store failed mid-trial: {exc.reason}")
        if outcome is not None and self.on_note is not None:
            self.on_note(f"trial {outcome[0]:>4} failed: the artifact store refused its weights ({exc.reason}); "
                         + requeued_text(outcome[1]))
        wait_for_store(exc.location, exc, on_note=self.on_note)
        self._failed(f"the artifact store failed mid-trial ({exc.reason})")

    def database_lost(self, study: optuna.Study, current: dict, exc: BaseException) -> None:
        """The database went away: waited for, then the trial it cut failed and re-queued."""
        # one deadline for the whole outage, however many passes it takes (a database
        # that reads but cannot write fails every pass at once); a write that gets
        # through (a finished trial, the interrupted one failed) ends the outage
        first = self.lost_since is None
        self.lost_since = time.monotonic() if first else self.lost_since
        wait_for_database(study, exc, deadline=outage_deadline(self.lost_since),
                          on_note=self.on_note if first else None)
        outcome = fail_interrupted_trial(study, current.pop("trial", None), exc)
        if outcome is None:
            return
        self.lost_since = None
        number, requeued = outcome
        if self.on_note is not None:
            self.on_note(f"trial {number:>4} failed: the database connection was lost mid-trial; "
                         + requeued_text(requeued))
        self._failed("the database connection was lost mid-trial")

