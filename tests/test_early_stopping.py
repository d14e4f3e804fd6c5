"""Early stopping is sound for any objectives: it never stops a trial that no earlier
comparable trial dominates on the objectives known before training, whichever those are."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

from cnnsearch import RecipeError
from cnnsearch.early_stopping import Peer, accuracy_at, known_objectives, rung_epochs, should_stop
from cnnsearch.recipe import load_recipe
from tests.study_helpers import new_study, perfect_peer, run_recipe, write_recipe

ACC = st.integers(0, 20).map(lambda i: i / 20)  # a coarse grid: ties and margins matter


@st.composite
def situations(draw):
    """A trial at a rung and its peers: 1-3 known objectives, uneven curves, mixed batch sizes."""
    k = draw(st.integers(1, 3))
    size = st.integers(0, 4).map(float)  # few values: dominance in some coordinates, not all
    epochs = draw(st.integers(2, 12))
    peers = [Peer(tuple(draw(st.lists(size, min_size=k, max_size=k))),
                  tuple(draw(st.lists(ACC, min_size=1, max_size=epochs))),
                  draw(st.sampled_from([1, 2, 4, 8])))
             for _ in range(draw(st.integers(0, 8)))]
    epoch = draw(st.integers(1, epochs - 1))
    steps = epoch * draw(st.sampled_from([1, 2, 4, 8]))
    return (tuple(draw(st.lists(size, min_size=k, max_size=k))), draw(ACC), epoch, steps, peers,
            draw(st.sampled_from([0.0, 0.05, 0.1])), draw(st.sampled_from([0.25, 1 / 3, 0.5, 1.0])))


def _dominates(peer_sizes, peer_acc, sizes, acc, margin):
    return peer_acc >= acc + margin and all(p <= s for p, s in zip(peer_sizes, sizes))


def _ranks(points):
    """Non-domination ranks by brute force (all coordinates minimised): independent of Optuna."""
    ranks, rest, r = {}, set(range(len(points))), 0

    def dom(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    while rest:
        front = {i for i in rest if not any(dom(points[j], points[i]) for j in rest if j != i)}
        ranks.update(dict.fromkeys(front, r))
        rest -= front
        r += 1
    return [ranks[i] for i in range(len(points))]


@settings(max_examples=400, deadline=None, derandomize=True)
@given(situations())
def test_stops_exactly_when_dominated_and_outside_the_top_fraction(case):
    sizes, acc, epoch, steps, peers, margin, keep = case
    stop = should_stop(sizes, acc, epoch=epoch, steps=steps, peers=peers, margin=margin, keep=keep)
    seen = [(p.sizes, a) for p in peers if (a := accuracy_at(p, epoch, steps)) is not None]
    dominated = any(_dominates(s, a, sizes, acc, margin) for s, a in seen)
    if stop:  # soundness: some earlier comparable trial dominates it on what is known
        assert dominated
    points = [(*s, -a) for s, a in seen] + [(*sizes, -acc)]
    ranks = _ranks(points)
    ahead = sum(r < ranks[-1] for r in ranks)
    assert stop == (dominated and ahead >= keep * len(points))


def test_a_peer_larger_on_any_known_objective_does_not_dominate():
    # A is far ahead but larger on the second objective; B is as small but within the margin
    a = Peer((0.0, 2.0), (0.9, 0.9), 1)
    b = Peer((1.0, 1.0), (0.52, 0.52), 1)
    assert not should_stop((1.0, 1.0), 0.5, epoch=1, steps=1, peers=[a, b], margin=0.05, keep=0.25)
    assert should_stop((1.0, 2.0), 0.5, epoch=1, steps=1, peers=[a, b], margin=0.05, keep=0.25)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(ACC, min_size=1, max_size=10), st.integers(1, 8), st.integers(1, 10), st.integers(1, 8))
def test_a_peer_is_never_credited_with_more_progress(curve, peer_steps, epoch, trial_steps_per_epoch):
    peer = Peer((0.0,), tuple(curve), peer_steps)
    steps = epoch * trial_steps_per_epoch
    acc = accuracy_at(peer, epoch, steps)
    reached = [e for e in range(1, len(curve) + 1) if e <= epoch and e * peer_steps <= steps]
    assert acc == (curve[max(reached) - 1] if reached else None)


def test_peers_with_smaller_batches_are_read_at_an_earlier_epoch():
    # 4x the steps per epoch (a quarter of the batch size): after 2 epochs of a trial with 1
    # step per epoch, such a peer had done as many steps after... none of its epochs: not comparable
    peer = Peer((0.0,), (0.1, 0.2, 0.3, 0.4), steps_per_epoch=4)
    assert accuracy_at(peer, 2, 2) is None
    assert accuracy_at(peer, 2, 8) == 0.2  # equal steps and epochs
    assert accuracy_at(peer, 3, 8) == 0.2  # more epochs here, but the peer is held to 8 steps
    assert accuracy_at(Peer((0.0,), (0.1, 0.2, 0.3), 1), 3, 300) == 0.3  # larger batches: by epoch


@pytest.mark.parametrize(("epochs", "rungs", "min_epoch", "expected"), [
    (6, (1 / 3, 2 / 3), 1, {2, 4}),
    (3, (1 / 3, 2 / 3), 1, {1, 2}),
    (2, (1 / 3, 2 / 3), 1, {1}),  # round(4/3) = 1; round(2/3 x 2) = 1
    (1, (1 / 3, 2 / 3), 1, set()),  # the last epoch is never a rung
    (6, (1 / 3, 2 / 3), 3, {4}),
    (100_000, (0.00001,), 1, {1}),
    (6, (0.01,), 1, set()),  # round(0.06) = 0: before the first epoch
])
def test_rungs(epochs, rungs, min_epoch, expected):
    assert rung_epochs(epochs, rungs, min_epoch) == expected


def test_known_objectives_keep_recipe_order():
    assert known_objectives(["accuracy", "flops", "latency_ms"]) == ("flops", "latency_ms")
    assert known_objectives(["accuracy"]) == ()


def _add_peers(study, recipe, count: int, changed: dict | None = None) -> None:
    """``count`` perfect peers of ``recipe`` (see ``perfect_peer``), with ``changed`` attributes."""
    for _ in range(count):
        peer = perfect_peer(recipe)
        peer.user_attrs.update(changed or {})
        study.add_trial(peer)


@pytest.mark.parametrize("objective", ["latency_ms", "params", "flops"])
def test_each_known_objective_decides_who_dominates(tmp_path, objective):
    """Two perfect peers, 100% from epoch 1: larger than anything on the recipe's second
    objective, they dominate nobody and nothing stops; as small as anything, they stop the
    next trial at its first rung."""
    path = write_recipe(tmp_path, name=objective.replace("_", ""), trials=1, epochs=3,
                        top=f'objectives = ["accuracy", "{objective}"]', extra="[early_stopping]\nenabled = true\nkeep = 0.2\n")
    recipe = load_recipe(path)
    study = new_study(recipe)
    _add_peers(study, recipe, 2, {objective: 1e12})
    study = run_recipe(recipe, until=3)
    assert study.trials[2].state == TrialState.COMPLETE, study.trials[2].user_attrs.get("status")
    _add_peers(study, recipe, 2)
    study = run_recipe(recipe, until=6)
    stopped = study.trials[5]
    assert stopped.state == TrialState.PRUNED and stopped.user_attrs["curve"] and stopped.user_attrs["epochs"] == 1


def test_peers_of_another_recipe_are_not_compared(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, trials=1, epochs=3, extra="[early_stopping]\nenabled = true\nkeep = 0.2\n"))
    study = new_study(recipe)
    _add_peers(study, recipe, 2, {"fingerprint": "another recipe"})
    study = run_recipe(recipe, until=3)
    assert study.trials[2].state == TrialState.COMPLETE
    assert study.trials[2].user_attrs["fingerprint"] == recipe.fingerprint()


def test_early_stopping_settings_do_not_change_the_fingerprint(tmp_path):
    a = load_recipe(write_recipe(tmp_path, name="a"))
    b = load_recipe(write_recipe(tmp_path, name="a", extra="[early_stopping]\nenabled = true\nkeep = 0.2\nmargin = 0.1\n"))
    c = load_recipe(write_recipe(tmp_path, name="a", epochs=3))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_settings_of_a_switched_off_early_stopping_do_not_change_a_recipe(tmp_path):
    from cnnsearch.recipe import changed_meaning

    def recipe(extra):
        return load_recipe(write_recipe(tmp_path, name="a", extra="[early_stopping]\n" + extra))

    assert changed_meaning(recipe("enabled = false\n"), recipe("enabled = false\nkeep = 0.2\nmargin = 0.1\n")) == []
    on = "enabled = true\n"
    assert changed_meaning(recipe(on + "keep = 0.5\n"), recipe(on + "keep = 0.2\n")) == ["early_stopping.keep: 0.5 -> 0.2"]
    assert "early_stopping.enabled: False -> True" in changed_meaning(recipe("enabled = false\n"), recipe(on))


def test_a_study_stored_before_the_rework_resumes_whatever_its_early_stopping(tmp_path):
    """Its stored recipe has no rungs or keep (and margin 0.03, enabled true, then the
    defaults); a recipe file that leaves [early_stopping] out must still resume it."""
    import json

    from cnnsearch.study import check_recipe

    recipe = load_recipe(write_recipe(tmp_path, trials=1, epochs=2, early_stopping=None))
    study = new_study(recipe)
    stored = json.loads(json.dumps(study.user_attrs["recipe"]))
    stored["early_stopping"] = {"enabled": True, "margin": 0.03, "min_epoch": 1}
    stored["latency"].pop("runtime", None)
    study.set_user_attr("recipe", stored)
    check_recipe(study, recipe)  # no RecipeError
    stored["train"]["epochs"] = 3  # what still counts
    study.set_user_attr("recipe", stored)
    with pytest.raises(RecipeError, match="train.epochs: 3 -> 2"):
        check_recipe(study, recipe)


def test_the_fingerprint_ignores_settings_at_their_default(tmp_path):
    """A key a later version adds (at its default) must not separate old trials from new."""
    plain = load_recipe(write_recipe(tmp_path, name="a"))
    explicit = load_recipe(write_recipe(tmp_path, name="a", extra='[latency]\nruntime = "torch"\nthreads = 1\n'))
    other = load_recipe(write_recipe(tmp_path, name="a", extra="[latency]\nthreads = 2\n"))
    assert plain.fingerprint() == explicit.fingerprint() != other.fingerprint()


def test_diverged_trials_are_no_peers(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, trials=1, epochs=3, extra="[early_stopping]\nenabled = true\n"))
    study = new_study(recipe)
    _add_peers(study, recipe, 3, {"status": "diverged"})
    study = run_recipe(recipe, until=4)
    assert study.trials[3].state == TrialState.COMPLETE
