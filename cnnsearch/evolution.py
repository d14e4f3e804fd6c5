"""A multi-objective regularized evolution sampler: local search around the Pareto set.

Regularized (aging) evolution (Real et al. 2019), which with local search beats random
sampling on tabular NAS benchmarks at ~150 evaluations (White et al. 2020), made
multi-objective: the population is the last ``population`` completed trials; a parent is
the best of ``tournament`` of them drawn at random, by non-domination rank on the study's
objectives (ties broken at random); the child is the parent with ONE decision changed: a
categorical or (linear) integer one to another of its allowed values, a continuous one (a
learning rate, a log-scale integer) by a Gaussian step of a sixth of its range (on the log
scale where it is log), reflected inside, of at least one grid point where it has a grid.
Parameters the parent lacks (a deeper child's new blocks) are drawn at random. Until
``population`` trials have completed, trials are random.

A child equal to a trial already run is redrawn (up to ``retries`` times, then kept), so a
small space is not spent on repeats. Trials an early stopping cut short (PRUNED) and
infeasible ones are no parents while a feasible completed trial exists.

An Optuna sampler like any other: ``sampler = "evolution"`` in a recipe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from .storage import non_domination_ranks
from .trials import CONSTRAINT


class EvolutionSampler(optuna.samplers.BaseSampler):
    """Aging evolution with one-decision mutations, parents by non-domination rank.

    Args:
        population: how many of the latest completed trials parents are drawn from.
        tournament: how many of them are drawn; the best of those is the parent.
        seed: the random seed.
        retries: how often a child equal to a trial already run is redrawn.
    """

    def __init__(self, *, population: int = 12, tournament: int = 4, seed: int | None = None, retries: int = 10):
        if not 1 <= tournament <= population:
            raise ValueError(f"tournament {tournament} must be in [1, population {population}]")
        self.population, self.tournament, self.retries = population, tournament, retries
        self._rng = np.random.RandomState(seed)
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._plans: dict[int, dict[str, Any]] = {}  # trial number -> the parent's params with one changed

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        return {}

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trials = study.get_trials(deepcopy=False)  # one storage read: a trial's cost on a remote database
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        if len(done) < self.population:
            return
        seen = {_key(t.params) for t in trials if t.number != trial.number}
        child: dict[str, Any] = {}
        for _ in range(self.retries + 1):
            child = self._mutate(self._parent(study, done[-self.population:]))
            if _key(child) not in seen:
                break
        self._plans[trial.number] = child

    def sample_independent(self, study, trial, param_name: str, param_distribution: BaseDistribution) -> Any:
        plan = self._plans.get(trial.number)
        if plan is not None and param_name in plan and _allowed(param_distribution, plan[param_name]):
            return plan[param_name]
        # RandomSampler draws from the distribution alone: study, trial and name are the API's
        return self._random.sample_independent(study, trial, param_name, param_distribution)  # pragma: no mutate (see above)

    def after_trial(self, study, trial, state, values) -> None:
        self._plans.pop(trial.number, None)

    def _parent(self, study: optuna.Study, population: list[FrozenTrial]) -> FrozenTrial:
        """The best of ``tournament`` trials drawn from ``population`` (feasible ones first)."""
        feasible = [t for t in population if t.constraints.get(CONSTRAINT, 0.0) <= 0] or population
        # without repeats (as RandomState.choice(replace=False) draws): a tournament as large
        # as the population always holds its best
        drawn = [feasible[i] for i in self._rng.permutation(len(feasible))[:self.tournament]]
        signs = [1.0 if d == optuna.study.StudyDirection.MINIMIZE else -1.0 for d in study.directions]
        ranks = non_domination_ranks(np.array([[s * v for s, v in zip(signs, t.values)] for t in drawn]))
        best = np.flatnonzero(ranks == ranks.min())
        return drawn[int(self._rng.choice(best))]

    def _mutate(self, parent: FrozenTrial) -> dict[str, Any]:
        """The parent's params with one decision, of those that have another value, changed."""
        child = dict(parent.params)
        movable = [n for n, d in parent.distributions.items() if len(_values(d)) > 1 or _continuous(d)]
        if not movable:
            return child
        name = movable[self._rng.randint(len(movable))]
        distribution = parent.distributions[name]
        if _continuous(distribution):
            child[name] = self._step(distribution, child[name])
            return child
        others = [v for v in _values(distribution) if v != child[name]]
        child[name] = others[self._rng.randint(len(others))]
        return child

    def _step(self, distribution: FloatDistribution | IntDistribution, value: float) -> float | int:
        """``value`` moved by a Gaussian step of a sixth of the range (log scale if log),
        reflected back inside at an end; on a grid (an integer, a float with ``step``), at
        least one grid point, so that the child differs from its parent."""
        scale = np.log if distribution.log else (lambda x: x)
        low, high = scale(distribution.low), scale(distribution.high)
        moved = scale(value) + self._rng.normal(0.0, (high - low) / 6)
        # reflected at an end (at an end exactly, reflecting leaves it there: < and <= agree)
        if moved < low:  # pragma: no mutate (<= is the same: see above)
            moved = 2 * low - moved
        elif moved > high:  # pragma: no mutate (>= is the same: see above)
            moved = 2 * high - moved
        moved = float(np.clip(moved, low, high))  # a step past both ends
        moved = float(np.exp(moved)) if distribution.log else moved
        grid = distribution.step  # an integer's is 1: Optuna allows no other step on a log scale
        if grid is None:
            return min(max(moved, distribution.low), distribution.high)  # exp(log(x)) may round past an end
        points = round((distribution.high - distribution.low) / grid)
        at, to = (round((v - distribution.low) / grid) for v in (value, moved))
        if to == at:  # a step smaller than the grid: the next point towards it (or the only other way)
            to = at + (1 if (moved > value and at < points) or at == 0 else -1)
        moved = distribution.low + min(max(to, 0), points) * grid
        return int(moved) if isinstance(distribution, IntDistribution) else moved


def _continuous(distribution: BaseDistribution) -> bool:
    """A float, or a log-scaled integer: mutated by a step, not by a draw among its values."""
    return (isinstance(distribution, FloatDistribution) or (isinstance(distribution, IntDistribution)
                                                             and distribution.log)) and distribution.low < distribution.high


def _values(distribution: BaseDistribution) -> list:
    """A categorical or (linear) integer parameter's values; none for a continuous one (``_continuous``)."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return list(range(distribution.low, distribution.high + 1, distribution.step))
    return []


def _allowed(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` is one ``distribution`` can give (the parent's may lie outside a
    conditional parameter's range in the child's context)."""
    if isinstance(distribution, CategoricalDistribution):
        return value in distribution.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    inside = distribution.low <= value <= distribution.high
    if isinstance(distribution, IntDistribution):
        return inside and (value - distribution.low) % distribution.step == 0
    return inside


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))
