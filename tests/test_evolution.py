"""The multi-objective regularized evolution sampler (cnnsearch/evolution.py)."""

import math
import statistics
import warnings

import optuna
import pytest

from cnnsearch.evolution import EvolutionSampler
from cnnsearch.recipe import load_recipe
from cnnsearch.samplers import SAMPLER_OPTIONS, make_sampler
from cnnsearch.space import parse_space
from cnnsearch.storage import non_domination_ranks
from tests.study_helpers import TINY_SPACE, write_recipe

CHOICES = {"a": [0, 1, 2], "b": [0, 1, 2], "c": [0, 1, 2], "d": [0, 1, 2]}


def objective(trial):
    x = {k: trial.suggest_categorical(k, v) for k, v in CHOICES.items()}
    return x["a"] + x["b"] * 0.5, (2 - x["a"]) + x["c"] + x["d"] * 0.1  # a trade-off on "a"


def run(sampler, n=40):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=n)
    return study


def hamming(p, q):
    return sum(p[k] != q.get(k) for k in p)


def test_after_the_population_each_child_is_a_population_member_with_one_decision_changed():
    study = run(EvolutionSampler(population=6, tournament=6, seed=3))
    trials = study.trials
    for t in trials[6:]:
        population = trials[t.number - 6:t.number]
        points = [[-p.values[0], p.values[1]] for p in population]
        front = [p for p, r in zip(population, non_domination_ranks(points)) if r == 0]
        # tournament = population: the parent is on the population's front, one decision away
        assert any(hamming(t.params, p.params) == 1 for p in front), t.number


def test_children_do_not_repeat_trials_while_the_space_has_room():
    study = run(EvolutionSampler(population=6, tournament=3, seed=0), n=40)  # 81 points in the space
    keys = [tuple(sorted(t.params.items())) for t in study.trials]
    for n in range(6, len(keys)):  # the first 6 are random and may repeat; a child repeats no earlier trial
        assert keys[n] not in keys[:n], n


def test_it_is_seeded():
    first = [t.params for t in run(EvolutionSampler(seed=5), n=25).trials]
    assert first == [t.params for t in run(EvolutionSampler(seed=5), n=25).trials]
    assert first != [t.params for t in run(EvolutionSampler(seed=6), n=25).trials]


def test_it_beats_random_on_a_simple_front():
    """A one-decision local search finds the (a, b=2, c=0, d=0) front faster than random."""
    def front_found(study):
        return sum(1 for t in study.best_trials if t.params["b"] == 2 and t.params["c"] == 0 and t.params["d"] == 0)

    evo = [front_found(run(EvolutionSampler(population=8, seed=s), n=40)) for s in range(5)]
    rnd = [front_found(run(optuna.samplers.RandomSampler(seed=s), n=40)) for s in range(5)]
    assert sum(evo) > sum(rnd)


def test_a_conditional_space_samples_valid_architectures():
    """Depth decides which blocks exist: a deeper child's new blocks are drawn at random."""
    space = parse_space(TINY_SPACE)

    def arch(trial):
        spec = space.sample(trial, input=(1, 8, 8), num_classes=10)
        return float(len(spec.blocks)), float(sum(b.out_channels for b in spec.blocks))

    study = run(EvolutionSampler(population=4, tournament=2, seed=1), n=0)
    study.optimize(arch, n_trials=30)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert {len([k for k in t.params if k.startswith("b1_")]) > 0 for t in study.trials} == {True, False}


def test_a_recipe_names_it_and_its_study_records_its_options(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, top='sampler = "evolution"'))
    assert recipe.sampler == "evolution"
    sampler = make_sampler("evolution", 0)
    assert isinstance(sampler, EvolutionSampler) and (sampler.population, sampler.tournament) == (12, 4)
    with pytest.raises(ValueError, match="tournament 5"):
        EvolutionSampler(population=4, tournament=5)
    recorded = make_sampler("evolution", 0, {"population": 6, "tournament": 2})  # a study's recorded options
    assert (recorded.population, recorded.tournament) == (6, 2)


def test_the_defaults_are_the_recipes_and_a_tournament_runs_from_one_to_the_population():
    """EvolutionSampler() used as a library gets what sampler = "evolution" gets."""
    sampler = EvolutionSampler()
    assert {"population": sampler.population, "tournament": sampler.tournament} == SAMPLER_OPTIONS["evolution"]
    assert sampler.retries == 10
    assert EvolutionSampler(population=4, tournament=1).tournament == 1  # a tournament of one: a random parent
    with pytest.raises(ValueError, match=r"^tournament 0 must be in \[1, population 4\]$"):
        EvolutionSampler(population=4, tournament=0)


def test_infeasible_trials_are_no_parents_while_a_feasible_one_exists():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")

        def constrained(trial):
            x = {k: trial.suggest_categorical(k, v) for k, v in CHOICES.items()}
            trial.set_constraint("infeasible", 1.0 if x["a"] == 2 else 0.0)
            return float(x["a"]), 0.0

        study = optuna.create_study(directions=["maximize", "minimize"],
                                    sampler=EvolutionSampler(population=8, tournament=8, seed=2))
        study.optimize(constrained, n_trials=40)
    # a = 2 dominates but is infeasible: parents have a < 2, so a child with a = 2 is one mutation of "a"
    for t in study.trials[8:]:
        population = study.trials[t.number - 8:t.number]
        feasible = [p for p in population if p.params["a"] != 2]
        if feasible:
            assert any(hamming(t.params, p.params) <= 1 for p in feasible), t.number


def test_a_continuous_decision_moves_by_a_step_inside_its_range():
    """A learning rate (log float), a weight decay on a grid and a log integer are mutated
    too, one decision at a time, by a step that stays inside the range (and on the grid)."""
    def mixed(trial):
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        wd = trial.suggest_float("wd", 0.0, 0.5, step=0.1)
        width = trial.suggest_int("width", 4, 64, log=True)
        kind = trial.suggest_categorical("kind", ["a", "b"])
        return -abs(lr - 0.01) - wd + (kind == "a"), width

    study = run(EvolutionSampler(population=5, tournament=2, seed=2), n=0)
    study.optimize(mixed, n_trials=60)
    moved = {"lr": 0, "wd": 0, "width": 0}  # values no earlier trial had
    for t in study.trials[5:]:
        changed = [k for k in moved if all(p.params[k] != t.params[k] for p in study.trials[:t.number])]
        for k in changed:
            moved[k] += 1
    assert min(moved.values()) > 0  # every kind of decision is explored, none frozen at the first draws
    steps = [abs(math.log(t.params["lr"] / p.params["lr"])) for t in study.trials[5:]
             for p in study.trials[:t.number] if hamming(t.params, p.params) == 1 and t.params["lr"] != p.params["lr"]]
    # a step (median |N(0, range/6)| ~ 0.11 of the range), not a redraw (median ~ 0.29 of it)
    assert steps and statistics.median(steps) < math.log(1e3) / 5


@pytest.mark.parametrize("distribution", [
    optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
    optuna.distributions.FloatDistribution(0.0, 0.5, step=0.1),
    optuna.distributions.FloatDistribution(-1.0, 1.0),
    optuna.distributions.IntDistribution(4, 64, log=True),
    optuna.distributions.IntDistribution(1, 2, log=True),
])
def test_a_step_stays_inside_moves_off_its_start_and_keeps_to_the_grid(distribution):
    """From either end and the middle: inside the range, on the grid, and never the value it
    started from (a child equal to its parent would be a wasted trial)."""
    sampler = EvolutionSampler(seed=0)
    grid = 1 if isinstance(distribution, optuna.distributions.IntDistribution) else distribution.step
    points = round((distribution.high - distribution.low) / grid) if grid else None
    middle = (distribution.low + (points // 2 or 1) * grid if grid else (distribution.low + distribution.high) / 2)
    for start in (distribution.low, distribution.high, middle):
        for _ in range(200):
            value = sampler._step(distribution, start)
            assert distribution.low <= value <= distribution.high and value != start
            assert type(value) is type(start) or grid != 1
            if grid is not None:
                assert abs((value - distribution.low) / grid - round((value - distribution.low) / grid)) < 1e-9


def test_an_integer_s_values_are_its_grid_from_low_to_high_and_a_plan_s_value_is_checked_against_it():
    """A linear integer with a step is mutated among its grid points; a planned value is
    used only where the child's distribution can give it (a bool or a string never a number)."""
    from cnnsearch.evolution import _allowed, _values
    Int, Float = optuna.distributions.IntDistribution, optuna.distributions.FloatDistribution
    assert _values(Int(2, 8, step=2)) == [2, 4, 6, 8]
    assert _values(Int(4, 64, log=True)) == [] and _values(Float(0.0, 1.0)) == []
    assert _allowed(Int(2, 8, step=2), 8) and _allowed(Int(2, 8, step=2), 2) and _allowed(Int(2, 8, step=2), 4)
    assert not _allowed(Int(2, 8, step=2), 5) and not _allowed(Int(2, 8, step=2), 10)
    assert _allowed(Float(0.0, 0.5), 0.5) and not _allowed(Float(0.0, 0.5), 0.6)
    for foreign in (True, "0.1", None):
        assert not _allowed(Float(0.0, 1.0), foreign)
    # an integer-only space is mutated too: each child is new, one grid step from an earlier trial
    study = run(EvolutionSampler(population=4, tournament=2, seed=1), n=0)
    study.optimize(lambda t: (t.suggest_int("a", 2, 8, step=2) + t.suggest_int("b", 2, 8, step=2), 0.0), n_trials=12)
    for t in study.trials[4:]:
        earlier = study.trials[:t.number]
        assert min(hamming(t.params, p.params) for p in earlier) == 1, t.number


def test_a_trial_with_no_constraint_recorded_can_be_a_parent_as_a_feasible_one():
    """Only a trial recorded infeasible is set aside; one that recorded no constraint (a
    study's older trials) is a parent like any feasible one, here the best."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for a in (3, 1, 2):
        study.enqueue_trial({"a": a})

    def some_constrained(trial):
        a = trial.suggest_int("a", 0, 5)
        if a != 3:
            trial.set_constraint("infeasible", 0.0)
        return float(a), 0.0

    study.optimize(some_constrained, n_trials=3)
    parent = EvolutionSampler(population=3, tournament=3, seed=0)._parent(study, study.trials)
    assert parent.params["a"] == 3


def test_a_tournament_as_large_as_the_population_always_holds_its_best():
    """The tournament is drawn without repeats: one drawn with them would miss the single
    best of 5 a third of the time ((4/5)^5) and pick a worse parent."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for a in range(5):
        study.enqueue_trial({"a": a})
    study.optimize(lambda trial: (float(trial.suggest_int("a", 0, 9)), -float(trial.params["a"])), n_trials=5)
    sampler = EvolutionSampler(population=5, tournament=5, seed=0)
    parents = [sampler._parent(study, study.trials)
               for _ in range(30)]  # trial 4 dominates every other: the largest a and the lowest -a
    assert {p.params["a"] for p in parents} == {4}
