"""The trial objective: sample -> check -> limits -> build -> measure -> train -> record.

A candidate that fails the shapes or a limit is never trained: it is COMPLETE, marked
infeasible with ``trial.set_constraint`` (so samplers learn where the feasible region is,
and ``best_trials`` leaves it out) with its reason in ``user_attrs``. Diverged and
out-of-memory trainings are infeasible too, recorded as such. At the recipe's rungs a
trial that an earlier comparable trial dominates (on the objectives known before training
and on accuracy so far), and that is not in the top fraction of its peers, is stopped there
(PRUNED, with how far it got): see ``early_stopping.py``. ``Trial.report`` cannot do this
for multi-objective studies.

The objective writes a trial's attributes in two batches (before training, so ``status``
shows what runs, and at the end) rather than one storage round trip per key.
"""

from __future__ import annotations

import math
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import optuna
import torch

from .artifacts import upload
from .baselines import of_trial
from .build import build
from .data import ImageData, load_data
from .early_stopping import Peer, known_objectives, rung_epochs, should_stop
from .errors import ShapeError
from .export import save_weights
from .latency_remote import LatencyServerError, settle_device, time_candidate
from .objectives import CHECK, LATENCY, TRAIN, Metric, at_stage
from .recipe import Recipe
from .shapes import check
from .space import SearchSpace
from .storage import DatabaseLost, cached_trials, database_lost, set_user_attrs
from .train import TrainStatus, resolve_device, train
from .trials import CONSTRAINT, FINISHED, Status
from .version import __version__


def versions() -> dict[str, str]:
    return {"cnnsearch": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "python": platform.python_version()}


def _finished_trials(study: optuna.Study) -> list:
    """Finished trials as of this trial's start, from Optuna's per-trial cache (which the
    sampler has usually filled already); one storage read where that cache is missing.
    With several workers, a peer that finishes while this trial builds and measures is
    left out: early stopping is then, if anything, more lenient."""
    return cached_trials(study, FINISHED)


class _Clock:
    """Seconds per phase of one trial (``user_attrs["phases"]``): ``lap(name)`` books the
    time since the last lap; ``storage`` time is booked apart by ``_Record.flush`` and left
    out of the phase it interrupted."""

    def __init__(self):
        self.last = time.perf_counter()
        self.seconds: Counter = Counter()

    def lap(self, name: str) -> float:
        now = time.perf_counter()
        spent, self.last = now - self.last, now
        self.seconds[name] += spent
        return spent

    def aside(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds
        self.last += seconds

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 5) for k, v in self.seconds.items()}


class _Record:
    """A trial's user attributes, kept here and written to the storage in batches."""

    def __init__(self, trial: optuna.Trial, clock: _Clock | None = None):
        self.trial = trial
        self.pending: dict = {}
        self.clock = clock or _Clock()

    def __setitem__(self, key: str, value) -> None:
        self.pending[key] = value.value if isinstance(value, Status) else value

    def update(self, **attrs) -> None:
        for key, value in attrs.items():
            self[key] = value

    def flush(self) -> None:
        # taken out before writing: a batch that failed (a locked or lost database) is not
        # retried with the error's own status and reason, which are then written on their own
        pending, self.pending = self.pending, {}
        if pending:
            t0 = time.perf_counter()
            set_user_attrs(self.trial, pending)
            self.clock.aside("storage", time.perf_counter() - t0)


@dataclass
class Objective:
    """Callable for ``Study.optimize``: one trial of the recipe, returning its objective values."""

    recipe: Recipe
    space: SearchSpace
    data: ImageData
    device: torch.device
    timings: Counter = field(default_factory=Counter)  # seconds in build, latency, train
    # one measurement per architecture: the same network re-measured would differ by noise
    # and sit on the Pareto front several times with different training luck
    latencies: dict = field(default_factory=dict)
    progress: bool = False  # a per-step bar under the trials bar, for a person at a terminal
    run_attrs: dict = field(default_factory=dict)  # recorded on every trial (sampler seed, worker)
    # called after each epoch as (trial number, epoch, epochs, val accuracy, seconds into the
    # trial): the runner prints a line for long trials when no bar shows progress
    on_epoch: Callable[[int, int, int, float, float], None] | None = None
    latency_device: dict | None = None  # the study's (latency_remote.settle_device), once known

    @cached_property
    def fingerprint(self) -> str:
        """Trials with equal fingerprints trained the same way: early stopping compares only those."""
        return self.recipe.fingerprint()

    @classmethod
    def create(cls, recipe: Recipe, *, progress: bool = False) -> Objective:
        device = resolve_device(recipe.train.device)
        # the search selects on validation and never sees the test split: drop it here
        data = replace(load_data(recipe.dataset, **recipe.data), x_test=None, y_test=None).to(device)
        return cls(recipe, recipe.load_space(), data, device, progress=progress)

    def __call__(self, trial: optuna.Trial) -> list[float]:
        record = _Record(trial)
        try:
            if "owner" in self.run_attrs:  # first: the live workers' recovery judges a trial by its owner
                set_user_attrs(trial, {"owner": self.run_attrs["owner"]})
                record.clock.lap("storage")
            return self._run(trial, record)
        except (optuna.TrialPruned, KeyboardInterrupt):
            record.flush()
            raise
        except Exception as exc:  # recorded as FAIL with its reason; the study goes on
            if database_lost(exc):  # not the candidate's fault: the worker waits, fails and re-queues it
                raise DatabaseLost(str(exc)) from exc
            record.update(status=Status.ERROR, fail_reason=f"{type(exc).__name__}: {exc}"[:500])
            if isinstance(exc, LatencyServerError) and exc.retry:  # not the candidate's fault: run_worker re-queues it
                record["retry"] = "latency server"
            try:
                record.flush()
            except Exception as lost:
                if database_lost(lost):
                    raise DatabaseLost(str(lost)) from lost
                raise
            raise

    def _values(self, **metrics: float) -> list[float]:
        """Objective values in recipe order; a size never measured counts as infinite."""
        return [metrics.get(o, math.inf) for o in self.recipe.objectives]

    def _infeasible(self, trial, record: _Record, status: Status, reason: str, amount: float,
                    **metrics) -> list[float]:
        record.update(status=status, infeasible_reason=reason)
        record.flush()
        trial.set_constraint(CONSTRAINT, max(float(amount), 1e-9))
        return self._values(**{m.name: 0.0 for m in at_stage(TRAIN)}, **metrics)  # never trained (or failed to)

    def _run(self, trial: optuna.Trial, record: _Record) -> list[float]:
        r = self.recipe
        baseline = of_trial(trial)  # a known network enqueued by name: its spec, not a sampled one
        spec = (baseline.spec_for(self.data.input_shape, self.data.num_classes) if baseline is not None
                else self.space.sample(trial, input=self.data.input_shape, num_classes=self.data.num_classes))
        seed = r.seed * 1_000_003 + trial.number
        cfg = r.train_config(trial, seed=seed, device=str(self.device), space=self.space)
        clock = record.clock
        clock.lap("sample")  # (each suggestion is a storage write, too)
        record.update(arch=spec.to_dict(), summary=spec.summary, versions=versions(), fingerprint=self.fingerprint,
                      **self.run_attrs)
        try:
            table = check(spec)
        except ShapeError as exc:
            return self._infeasible(trial, record, Status.SHAPE, str(exc), 1.0)
        clock.lap("check")
        sizes = {m.name: m.read(table) for m in at_stage(CHECK)}  # params, flops, memory_bytes
        record.update(**sizes)
        over = self._over_limit(trial, record, at_stage(CHECK), sizes)
        if over is not None:
            return over
        clock.lap("check")  # the limits
        torch.manual_seed(seed)
        model = build(spec)
        self.timings["build"] += clock.lap("build")
        lat = self._latency(trial, spec, model, record)
        self.timings["latency"] += clock.lap("latency")
        metrics = {**sizes, **{m.name: m.read(lat) for m in at_stage(LATENCY)}}
        over = self._over_limit(trial, record, at_stage(LATENCY), metrics)
        if over is not None:
            return over
        record.flush()  # what is about to train, visible to `status` while it trains
        es, known, curve = r.early_stopping, known_objectives(r.objectives), []
        on_epoch = self._epoch_watch(trial, tuple(metrics[o] for o in known), known, curve)
        clock.lap("train_setup")  # early stopping's peers
        result = train(model, self.data, cfg, on_epoch=on_epoch, progress=self.progress)
        trained = clock.lap("train_setup")
        self.timings["train"] += trained
        _book_training(clock, result, trained)
        record.update(curve=curve, accuracy=result.accuracy, balanced_accuracy=result.balanced_accuracy,
                      train_seconds=result.train_seconds,
                      train_images=round(result.images_per_s * result.train_seconds),
                      epochs=len(result.epochs), device=result.device,
                      steps_per_epoch=result.epochs[-1].steps // len(result.epochs) if result.epochs else 0)
        failed = {TrainStatus.DIVERGED: Status.DIVERGED, TrainStatus.OOM: Status.OOM}.get(result.status)
        if failed is not None:
            return self._infeasible(trial, record, failed, result.detail, 1.0, **metrics)
        if result.status == TrainStatus.STOPPED:
            record.update(status=Status.EARLY_STOPPED, phases=clock.rounded())
            raise optuna.TrialPruned(f"stopped after epoch {len(result.epochs)} of {r.train.epochs}: an earlier "
                                     f"trial as small on {', '.join(known) or 'nothing known'} led by >= "
                                     f"{es.margin}, and it was not in the top {es.keep:.0%} of its peers")
        weights = self._save_weights(trial, model)
        clock.lap("weights")
        record.update(status=Status.OK, weights=weights, phases=clock.rounded())  # storage: all but this write
        record.flush()
        trial.set_constraint(CONSTRAINT, 0.0)
        return self._values(**metrics, **{m.name: m.read(result) for m in at_stage(TRAIN)})

    def _latency(self, trial: optuna.Trial, spec, model: torch.nn.Module, record: _Record):
        """The candidate's latency (timed once per architecture in this process), recorded."""
        r = self.recipe
        lat = self.latencies.get(spec.digest)
        if lat is None:
            lat = time_candidate(model, spec.input, r.latency)
            # one front, one device: the study's first figure sets it, another device's fails here
            self.latency_device = settle_device(trial.study, lat, r.latency.server, self.latency_device, trial.number)
            self.latencies[spec.digest] = lat
        record.update(latency_ms=lat.median_ms, latency_iqr_ms=lat.iqr_ms,
                      latency={**{k: v for k, v in lat.to_dict().items() if k not in ("median_ms", "iqr_ms")},
                               "device": self.latency_device})
        return lat

    def _epoch_watch(self, trial: optuna.Trial, known_values: tuple, known: tuple[str, ...],
                     curve: list[float]) -> Callable:
        """train()'s per-epoch callback: records the validation curve, reports progress, and
        says whether early stopping stops the trial at this epoch (one of its rungs)."""
        r, es = self.recipe, self.recipe.early_stopping
        # accuracy is what it compares: without it among the objectives there is nothing to stop for;
        # a baseline is there to be compared in full, so it is never stopped
        rungs = (rung_epochs(r.train.epochs, es.rungs, es.min_epoch)
                 if es.enabled and "accuracy" in r.objectives and of_trial(trial) is None else frozenset())
        peers = self._peers(trial, known) if rungs else []
        started = time.perf_counter()

        def on_epoch(stats) -> bool:
            del curve[stats.epoch - 1:]  # a run restarted at a smaller batch after an OOM starts over
            curve.append(stats.val_accuracy)
            e = stats.epoch
            if self.on_epoch is not None:
                self.on_epoch(trial.number, e, r.train.epochs, stats.val_accuracy, time.perf_counter() - started)
            return e in rungs and should_stop(known_values, stats.val_accuracy, epoch=e, steps=stats.steps, peers=peers,
                                              margin=es.margin, keep=es.keep)

        return on_epoch

    def _over_limit(self, trial: optuna.Trial, record: _Record, metrics: tuple[Metric, ...],
                    values: dict[str, float]) -> list[float] | None:
        """The trial recorded infeasible at the first of ``metrics`` over its recipe cap
        (its objective values so far, ``values``), or None when none is."""
        for m in metrics:
            cap = getattr(self.recipe.limits, m.limit) if m.limit else None
            if cap is not None and values[m.name] > cap:
                return self._infeasible(trial, record, Status.LIMIT, m.over_limit(values[m.name], cap),
                                        values[m.name] / cap - 1 if cap else 1.0, **values)  # a cap of 0 ms
        return None

    def _peers(self, trial: optuna.Trial, known: tuple[str, ...]) -> list[Peer]:
        """Finished trials of the same recipe fingerprint, as early-stopping peers."""
        peers = []
        for t in _finished_trials(trial.study):
            a = t.user_attrs
            # a diverged or out-of-memory trial is no peer: no finished trial stands behind its curve
            if (a.get("status") in (Status.OK, Status.EARLY_STOPPED) and a.get("fingerprint") == self.fingerprint
                    and a.get("curve") and a.get("steps_per_epoch") and all(o in a for o in known)):
                peers.append(Peer(tuple(a[o] for o in known), tuple(a["curve"]), a["steps_per_epoch"]))
        return peers

    def _save_weights(self, trial: optuna.Trial, model: torch.nn.Module) -> str:
        """Trained weights as an Optuna artifact (safetensors) where the study keeps them (a
        folder, or an object store); ArtifactsLost when the store refuses them."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial_{trial.number}.safetensors"
            save_weights(model, path)
            return upload(self.recipe.artifacts, path, trial)


def _book_training(clock, result, trained: float) -> None:
    """train()'s wall time split into the clock's phases: epoch 1's training (warm-up,
    autotuning), later epochs' training, evaluation, pauses (stood aside while a sibling timed
    a network); what is left of ``trained`` (moving the model, the optimizer) stays set-up."""
    epochs = result.epochs
    split = {"first_epoch": sum(e.train_seconds for e in epochs[:1]),
             "later_epochs": sum(e.train_seconds for e in epochs[1:]),
             "evaluation": sum(e.seconds - e.train_seconds for e in epochs),
             "paused": result.paused_s}
    for name, seconds in split.items():
        clock.seconds[name] += seconds
    clock.seconds["train_setup"] -= min(sum(split.values()), trained)
