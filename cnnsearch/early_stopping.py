"""Early stopping by Pareto dominance at fixed rungs, sound for any objectives.

Multi-objective successive halving in the spirit of MO-ASHA (Schmucker et al. 2021): at a
few fixed points of training (rungs, fractions of the epochs), a trial is compared with the
earlier comparable trials on what is known about it so far: the objectives fixed before
training (whichever of latency, params and FLOPs the recipe optimises, all minimised) and
validation accuracy at the same point of training. It is stopped only when both hold:

- some earlier trial *dominates* it: at most as large on every known objective and ahead on
  accuracy by at least ``margin`` (so a trial that could still land on the front is never
  stopped: nothing earlier is as small and better);
- it is not among the top ``keep`` fraction of itself and those peers by non-domination rank
  (Optuna's fast non-dominated sort), so a study keeps exploring while it is young.

"The same point of training" is judged conservatively when batch sizes differ: a peer's
accuracy is read at its latest epoch at which it had neither more epochs nor more optimizer
steps than this trial, so a peer is never credited with more optimisation progress.

Pure data in and out (no torch, no Optuna trials): the property tests drive it directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .objectives import METRICS
from .storage import non_domination_ranks

# objectives whose value a trial has before it trains (sizes, latency); accuracy is one it does not
KNOWN_BEFORE_TRAINING = tuple(name for name, m in METRICS.items() if m.known_before_training)


@dataclass(frozen=True)
class Peer:
    """What an earlier trial leaves for comparison."""

    sizes: tuple[float, ...]  # the recipe's known-before-training objectives, in recipe order
    curve: tuple[float, ...]  # validation accuracy after each epoch (shorter if it was stopped)
    steps_per_epoch: int  # optimizer steps per epoch (training images // batch size)


def known_objectives(objectives: Iterable[str]) -> tuple[str, ...]:
    return tuple(o for o in objectives if o in KNOWN_BEFORE_TRAINING)


def rung_epochs(epochs: int, rungs: Sequence[float], min_epoch: int) -> frozenset[int]:
    """The epochs after which trials are compared: round(fraction x epochs), never before
    ``min_epoch``, never the last epoch (a finished trial is measured, not stopped)."""
    chosen = (round(f * epochs) for f in rungs)
    return frozenset(e for e in chosen if max(1, min_epoch) <= e < epochs)


def accuracy_at(peer: Peer, epoch: int, steps: int) -> float | None:
    """The peer's accuracy at no more progress than ``epoch`` epochs and ``steps`` steps;
    None when it had not finished one epoch by then."""
    reached = min(epoch, len(peer.curve), steps // max(1, peer.steps_per_epoch))
    return peer.curve[reached - 1] if reached >= 1 else None


def should_stop(sizes: Sequence[float], accuracy: float, *, epoch: int, steps: int, peers: Iterable[Peer],
                margin: float, keep: float) -> bool:
    """Whether a trial of these ``sizes`` with ``accuracy`` after ``epoch`` epochs (``steps``
    optimizer steps) stops here, given its comparable ``peers``."""
    points, dominated = [], False
    for peer in peers:
        acc = accuracy_at(peer, epoch, steps)
        if acc is None:
            continue
        points.append((*peer.sizes, -acc))
        if acc >= accuracy + margin and all(p <= s for p, s in zip(peer.sizes, sizes)):
            dominated = True
    if not dominated:
        return False
    points.append((*sizes, -accuracy))  # this trial, last
    ranks = non_domination_ranks(np.asarray(points, dtype=float))
    ahead = int(np.count_nonzero(ranks < ranks[-1]))
    return ahead >= keep * len(points)
