"""Early stopping at its boundaries: rung epochs against min_epoch and the last epoch,
uneven (non-monotone, cut short) peer curves, the margin and keep fractions exactly met.

Accuracies are multiples of 1/8 so sums such as 0.5 + 0.25 are exact in floating point.
"""

import pytest

from cnnsearch.early_stopping import Peer, accuracy_at, known_objectives, rung_epochs, should_stop


@pytest.mark.parametrize(("epochs", "rungs", "min_epoch", "expected"), [
    (8, (0.25, 0.5, 0.75), 2, {2, 4, 6}),  # a rung exactly at min_epoch counts
    (8, (0.25, 0.5, 0.75), 3, {4, 6}),
    (8, (0.125, 0.5), 0, {1, 4}),  # min_epoch 0 is epoch 1: never before one epoch
    (8, (0.125, 0.5), 1, {1, 4}),
    (8, (0.5, 1.0), 1, {4}),  # the last epoch is measured, never a rung
    (8, (0.875,), 1, {7}),  # the one before it can be
    (4, (0.5, 0.5), 1, {2}),
    (8, (0.0,), 0, set()),
    (8, (0.5,), 8, set()),
])
def test_rung_boundaries(epochs, rungs, min_epoch, expected):
    assert rung_epochs(epochs, rungs, min_epoch) == expected


def test_known_objectives_leave_accuracy_out():
    assert known_objectives(("accuracy", "params", "latency_ms")) == ("params", "latency_ms")
    assert known_objectives(("params",)) == ("params",)


UNEVEN = Peer((1.0,), (0.875, 0.25, 0.75), steps_per_epoch=2)  # up, down, up again; stopped after 3


@pytest.mark.parametrize(("epoch", "steps", "expected"), [
    (1, 2, 0.875), (2, 4, 0.25), (3, 6, 0.75),  # the accuracy at that epoch, not the best so far
    (6, 100, 0.75),  # beyond a stopped peer's curve: its last epoch
    (3, 5, 0.25),  # 5 steps: the peer had finished 2 epochs by then
    (1, 1, None),  # not one epoch in
    (2, 2, 0.875),
])
def test_a_peer_is_read_at_the_same_point_of_training(epoch, steps, expected):
    assert accuracy_at(UNEVEN, epoch, steps) == expected


def test_a_peer_with_no_recorded_steps_is_read_by_epoch():
    assert accuracy_at(Peer((0.0,), (0.25, 0.5), 0), 2, 2) == 0.5
    assert accuracy_at(Peer((0.0,), (0.25, 0.5), 0), 1, 0) is None


def stop(sizes, accuracy, peers, *, epoch=1, steps=10, margin=0.0, keep=0.0):
    return should_stop(sizes, accuracy, epoch=epoch, steps=steps, peers=peers, margin=margin, keep=keep)


def test_an_uneven_peer_stops_a_trial_only_where_it_leads():
    peer = Peer((1.0,), (0.75, 0.25, 0.875), 1)
    assert stop((1.0,), 0.5, [peer], epoch=1, steps=1)
    assert not stop((1.0,), 0.5, [peer], epoch=2, steps=2)  # behind at epoch 2
    assert stop((1.0,), 0.5, [peer], epoch=3, steps=3)


def test_the_margin_is_a_lead_of_at_least_that_much():
    peer = Peer((1.0,), (0.75,), 1)
    assert stop((1.0,), 0.5, [peer], margin=0.25)  # 0.75 >= 0.5 + 0.25
    assert not stop((1.0,), 0.5, [peer], margin=0.375)
    assert not stop((1.0,), 0.875, [peer], margin=0.0)  # behind it: never dominated
    assert stop((1.0,), 0.75, [peer], margin=0.0)  # as accurate and as small: dominated


def test_dominance_needs_every_known_objective_at_most_as_large():
    peer = Peer((2.0, 3.0), (1.0,), 1)
    assert stop((2.0, 3.0), 0.5, [peer])  # ties count
    assert not stop((2.0, 2.875), 0.5, [peer])
    assert not stop((1.0, 3.0), 0.5, [peer])
    assert stop((4.0, 4.0), 0.5, [peer])


def test_keep_spares_the_top_fraction_exactly_at_its_boundary():
    """One dominating peer and the trial: 1 point ahead of 2. keep = 0.5 puts the boundary at
    1 ahead, so it stops; any keep above that spares it."""
    peer = Peer((1.0,), (1.0,), 1)
    assert stop((1.0,), 0.5, [peer], keep=0.5)
    assert not stop((1.0,), 0.5, [peer], keep=0.5 + 1e-9)
    assert not stop((1.0,), 0.5, [peer], keep=1.0)


def test_keep_counts_ranks_not_just_the_dominating_peers():
    """Three peers: one dominates the trial; two larger, between it and the leader on
    accuracy, share the trial's rank (the leader dominates them, the trial does not).
    One point ahead of four: keep 0.25 stops, 0.3 spares."""
    leader = Peer((1.0,), (1.0,), 1)
    same_rank = [Peer((3.0,), (0.625,), 1), Peer((2.0,), (0.75,), 1)]
    peers = [*same_rank, leader]
    assert stop((1.0,), 0.5, peers, keep=0.25)
    assert not stop((1.0,), 0.5, peers, keep=0.3)


def test_keep_counts_points_by_their_own_rank():
    """Two peers, one behind the other and both ahead of the trial: ranks 0, 1, 2. With
    keep = 2/3 the trial is stopped only because both are ahead of it."""
    peers = [Peer((1.0,), (1.0,), 1), Peer((1.0,), (0.75,), 1)]
    assert stop((1.0,), 0.5, peers, keep=2 / 3)
    assert not stop((1.0,), 0.875, [Peer((1.0,), (1.0,), 1), Peer((1.0,), (0.5,), 1)], keep=2 / 3)


def test_a_peer_not_yet_comparable_is_skipped_not_the_end_of_the_peers():
    early = Peer((0.0,), (1.0,), steps_per_epoch=100)  # no epoch within 10 steps
    leader = Peer((1.0,), (1.0,), 1)
    assert stop((1.0,), 0.5, [early, leader], steps=10)
    assert stop((1.0,), 0.5, [early, early, leader], steps=10, keep=0.5)  # the early ones are not points


def test_no_peers_or_only_trailing_ones_never_stop():
    assert not stop((1.0,), 0.0, [])
    assert not stop((1.0,), 0.5, [Peer((0.0,), (0.25,), 1), Peer((5.0,), (1.0,), 1)])


def test_accuracy_counts_toward_rank_as_higher_is_better():
    """Peers each ahead on accuracy only by being slightly bigger share the trial's front;
    were accuracy ranked the wrong way round they would rank differently."""
    leader = Peer((1.0,), (0.75,), 1)
    weaker = [Peer((1.0,), (0.25,), 1), Peer((1.0,), (0.125,), 1)]
    # leader rank 0, trial rank 1, the weaker ones behind it: 1 ahead of 4
    assert stop((1.0,), 0.5, [leader, *weaker], keep=0.25)
    assert not stop((1.0,), 0.5, [leader, *weaker], keep=0.3)
