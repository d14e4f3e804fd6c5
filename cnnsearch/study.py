"""The trial pipeline and the search loop of one worker.

sample -> check() -> params/FLOPs limits -> build -> latency -> latency limit -> brief
training -> record. A candidate that fails the shapes or a limit is never trained: it is
COMPLETE, marked infeasible with ``trial.set_constraint`` (so samplers learn where the
feasible region is, and ``best_trials`` leaves it out) with its reason in ``user_attrs``.
Diverged and out-of-memory trainings are infeasible too, recorded as such. A trial whose accuracy at epoch e is
clearly below that of an earlier, not slower trial at the same epoch is stopped there
(PRUNED, with how far it got): successive halving on Pareto dominance, which works for
multi-objective studies where ``Trial.report`` cannot.
"""

from __future__ import annotations

import math
import platform
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from . import __version__
from .build import build
from .data import ImageData, load_data
from .errors import CnnSearchError, RecipeError, ShapeError
from .export import save_weights
from .latency import measure
from .recipe import Recipe
from .report import CONSTRAINT, is_feasible
from .shapes import check
from .space import SearchSpace
from .train import TrainConfig, resolve_device, train

INFEASIBLE_CHECK_AFTER = 20  # with no feasible trial after this many, stop and say why


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Samplers read the constraint each trial sets (Optuna 5's Trial.set_constraint)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def open_study(recipe: Recipe, storage, *, worker: int = 0) -> optuna.Study:
    """Create the recipe's study or resume it; refuse one made by a different recipe."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # group=, metric names
    sampler = make_sampler(recipe.sampler, recipe.seed + 7919 * worker)
    study = optuna.create_study(study_name=recipe.name, storage=storage, sampler=sampler,
                                directions=recipe.directions, load_if_exists=True)
    want = [optuna.study.StudyDirection.MAXIMIZE if d == "maximize" else optuna.study.StudyDirection.MINIMIZE
            for d in recipe.directions]
    if study.directions != want:
        raise RecipeError(f"objectives: study {recipe.name!r} already exists with "
                          f"{study.metric_names or len(study.directions)} objectives; "
                          f"use another name or storage")
    if study.metric_names != list(recipe.objectives):
        study.set_metric_names(list(recipe.objectives))
    if "recipe" not in study.user_attrs:
        study.set_user_attr("recipe", recipe.to_dict())
    return study


def versions() -> dict[str, str]:
    return {"cnnsearch": __version__, "torch": torch.__version__, "optuna": optuna.__version__,
            "python": platform.python_version()}


@dataclass
class Pipeline:
    recipe: Recipe
    space: SearchSpace
    data: ImageData
    device: torch.device
    timings: Counter = field(default_factory=Counter)  # seconds in build, latency, train
    # one measurement per architecture: the same network re-measured would differ by noise
    # and sit on the Pareto front several times with different training luck
    latencies: dict = field(default_factory=dict)
    progress: bool = False  # a per-step bar under the trials bar, for a person at a terminal

    @classmethod
    def create(cls, recipe: Recipe) -> Pipeline:
        device = resolve_device(recipe.train.device)
        data = load_data(recipe.dataset, **recipe.data).to(device)
        return cls(recipe, recipe.load_space(), data, device)

    def __call__(self, trial: optuna.Trial) -> list[float]:
        try:
            return self._run(trial)
        except (optuna.TrialPruned, KeyboardInterrupt):
            raise
        except Exception as exc:  # recorded as FAIL with its reason; the study goes on
            trial.set_user_attr("status", "error")
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:500])
            raise

    def _values(self, **metrics: float) -> list[float]:
        """Objective values in recipe order; a size never measured counts as infinite."""
        return [metrics.get(o, math.inf) for o in self.recipe.objectives]

    def _infeasible(self, trial, status: str, reason: str, amount: float, **metrics) -> list[float]:
        trial.set_user_attr("status", status)
        trial.set_user_attr("infeasible_reason", reason)
        trial.set_constraint(CONSTRAINT, max(float(amount), 1e-9))
        return self._values(accuracy=0.0, **metrics)  # never trained (or failed to): worst accuracy

    def _run(self, trial: optuna.Trial) -> list[float]:
        r = self.recipe
        spec = self.space.sample(trial, input=self.data.input_shape, num_classes=self.data.num_classes)
        hp = self.space.sample_train(trial)
        trial.set_user_attr("arch", spec.to_dict())
        trial.set_user_attr("summary", spec.summary)
        trial.set_user_attr("versions", versions())
        try:
            table = check(spec)
        except ShapeError as exc:
            return self._infeasible(trial, "shape", str(exc), 1.0)
        trial.set_user_attr("params", table.params)
        trial.set_user_attr("flops", table.flops)
        sizes = {"params": table.params, "flops": table.flops}
        for key, value, limit in (("max_params", table.params, r.limits.max_params),
                                  ("max_flops", table.flops, r.limits.max_flops)):
            if limit is not None and value > limit:
                return self._infeasible(trial, "limit", f"{key[4:]} {value:,} > limits.{key} {limit:,}",
                                        value / limit - 1, **sizes)
        seed = r.seed * 1_000_003 + trial.number
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        model = build(spec)
        t1 = time.perf_counter()
        lat = self.latencies.get(spec.digest)
        if lat is None:
            lat = self.latencies[spec.digest] = measure(
                model, spec.input, device=r.latency.device, batch_size=r.latency.batch_size,
                threads=r.latency.threads)
        t2 = time.perf_counter()
        self.timings["build"] += t1 - t0
        self.timings["latency"] += t2 - t1
        trial.set_user_attr("latency_ms", lat.median_ms)
        trial.set_user_attr("latency_iqr_ms", lat.iqr_ms)
        trial.set_user_attr("latency", {k: v for k, v in lat.to_dict().items() if k not in ("median_ms", "iqr_ms")})
        metrics = {**sizes, "latency_ms": lat.median_ms}
        if r.limits.max_latency_ms is not None and lat.median_ms > r.limits.max_latency_ms:
            return self._infeasible(trial, "limit", f"latency {lat.median_ms:.3f} ms > limits.max_latency_ms "
                                    f"{r.limits.max_latency_ms}", lat.median_ms / r.limits.max_latency_ms - 1,
                                    **metrics)

        peers = self._peers(trial, lat.median_ms)
        curve: list[float] = []

        def on_epoch(stats) -> bool:
            curve.append(stats.val_accuracy)
            e = stats.epoch
            if not r.early_stopping.enabled or e < r.early_stopping.min_epoch or e >= r.train.epochs:
                return False
            leads = [c[e - 1] for c in peers if len(c) >= e]
            return bool(leads) and max(leads) >= stats.val_accuracy + r.early_stopping.margin

        cfg = TrainConfig.from_params(hp, epochs=r.train.epochs, seed=seed, device=str(self.device),
                                      augment=r.train.augment,
                                      **({"batch_size": r.train.batch_size} if r.train.batch_size else {}))
        t3 = time.perf_counter()
        result = train(model, self.data, cfg, on_epoch=on_epoch, progress=self.progress)
        self.timings["train"] += time.perf_counter() - t3
        trial.set_user_attr("curve", curve)
        trial.set_user_attr("accuracy", result.accuracy)
        trial.set_user_attr("train_seconds", result.train_seconds)
        trial.set_user_attr("epochs", len(result.epochs))
        trial.set_user_attr("device", result.device)
        if result.status in ("diverged", "oom"):
            return self._infeasible(trial, result.status, result.detail, 1.0, **metrics)
        if result.status == "stopped":
            trial.set_user_attr("status", "early_stopped")
            raise optuna.TrialPruned(f"stopped after epoch {len(result.epochs)} of {r.train.epochs}: "
                                     f"a not slower trial led by >= {r.early_stopping.margin}")
        trial.set_user_attr("status", "ok")
        trial.set_constraint(CONSTRAINT, 0.0)
        trial.set_user_attr("weights", self._save_weights(trial, model))
        return self._values(accuracy=result.accuracy, **metrics)

    def _peers(self, trial: optuna.Trial, latency_ms: float) -> list[list[float]]:
        """Accuracy curves of finished trials at most as slow as this one."""
        if not self.recipe.early_stopping.enabled:
            return []
        finished = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        return [t.user_attrs["curve"] for t in finished
                if "curve" in t.user_attrs and t.user_attrs.get("latency_ms", math.inf) <= latency_ms]

    def _save_weights(self, trial: optuna.Trial, model: torch.nn.Module) -> str:
        """Trained weights as an Optuna artifact (safetensors) beside the database."""
        from optuna.artifacts import FileSystemArtifactStore, upload_artifact

        Path(self.recipe.artifacts).mkdir(parents=True, exist_ok=True)
        store = FileSystemArtifactStore(self.recipe.artifacts)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"trial_{trial.number}.safetensors"
            save_weights(model, path)
            return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


class AllInfeasible(CnnSearchError):
    """Every candidate so far broke the shapes or a limit: the recipe needs changing."""


def _reason_kind(reason: str) -> str:
    """'params 12,345 > limits.max_params 3,000' -> 'limits.max_params';
    'blocks[1].conv: kernel 5 is larger ...' -> 'blocks[1].conv'."""
    if " > limits." in reason:
        return reason.split(" > ", 1)[1].split()[0]
    return reason.split(":", 1)[0]


def infeasible_summary(study: optuna.Study) -> str:
    """The three most common reasons, e.g. 'limits.max_params (17); blocks[2].conv (3)'."""
    reasons = Counter(_reason_kind(t.user_attrs.get("infeasible_reason", "?"))
                      for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    return "; ".join(f"{why} ({n})" for why, n in reasons.most_common(3))


def run_worker(recipe: Recipe, storage, *, until: int, timeout: float | None = None, worker: int = 0,
               on_trial=None, pipeline: Pipeline | None = None, study: optuna.Study | None = None) -> optuna.Study:
    """Run trials on the recipe's study until it holds ``until`` finished (or running) trials.
    ``study``: the study already opened with ``open_study`` on ``storage``, if the caller has it."""
    study = study or open_study(recipe, storage, worker=worker)
    pipeline = pipeline or Pipeline.create(recipe)
    budget = optuna.study.MaxTrialsCallback(
        until, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))

    feasible_seen = False

    def watch(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal feasible_seen
        if on_trial is not None:
            on_trial(study, trial)
        feasible_seen = feasible_seen or is_feasible(trial)
        if feasible_seen:
            return  # the all-infeasible check reads every trial: skip it once it cannot fire
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        rejected = [t for t in done if t.user_attrs.get("status") in ("shape", "limit")]
        if len(rejected) >= min(INFEASIBLE_CHECK_AFTER, recipe.trials) and len(rejected) == len(done):
            study.stop()
            raise AllInfeasible(f"all {len(done)} candidates so far were infeasible, none was trained: "
                                f"{infeasible_summary(study)}; widen [limits] or change the space")

    done = finished_count(study)
    if done < until:
        # the budget callback stops the loop; the bound leaves room for failed (retried) trials
        study.optimize(pipeline, n_trials=until - done + 10, timeout=timeout,
                       callbacks=[budget, watch],
                       catch=(Exception,), gc_after_trial=False)
    return study
