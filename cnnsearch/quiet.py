"""No latency is taken while a local sibling trains: a figure timed beside a training worker
measures the contention, not the network (x0.09-x1.05 on an H200 with two workers).

Every cnnsearch process on a machine shares two lock files in the temporary folder:

* trainers hold the ``quiet`` lock *shared* while they train, and look at the ``gate``
  between steps (one non-blocking flock, a few microseconds);
* a worker about to time a network takes the ``gate`` *exclusively* (so trainers stop at
  their next step and new ones wait) and then the ``quiet`` lock exclusively, which it gets
  once every trainer has paused; it times, and lets them go.

A trainer pauses for one timing (a fraction of a second), a timer waits for at most one
training step of each sibling: no starvation either way. Where the lock files cannot be
opened (another user's /tmp rules, a read-only /tmp) both sides go on without them.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

GATE, QUIET = "cnnsearch-gate.lock", "cnnsearch-quiet.lock"


def _open(name: str) -> int | None:
    path = os.path.join(tempfile.gettempdir(), name)
    for flags in (os.O_RDONLY, os.O_RDONLY | os.O_CREAT):  # flock needs no write access
        try:
            return os.open(path, flags, 0o666)
        except OSError:
            continue
    return None


@contextmanager
def quiet_machine() -> Iterator[None]:
    """Hold while timing: every local trainer is paused between two steps."""
    gate, quiet = _open(GATE), _open(QUIET)
    try:
        if gate is not None:
            fcntl.flock(gate, fcntl.LOCK_EX)
        if quiet is not None:
            fcntl.flock(quiet, fcntl.LOCK_EX)
        yield
    finally:
        for fd in (quiet, gate):  # closing a descriptor releases its lock
            if fd is not None:
                os.close(fd)


class TrainingSlot:
    """What a trainer holds while it trains; ``between_steps()`` pauses it while a local
    worker times a network. ``drain`` runs before pausing (on a GPU: synchronise, so that
    no queued kernel runs during the timing)."""

    def __init__(self, drain: Callable[[], None] | None = None):
        self.drain = drain
        self.gate = self.quiet = None
        self.pauses = 0
        self.paused_s = 0.0  # time spent standing aside: not training time

    def open(self) -> TrainingSlot:
        self.gate, self.quiet = _open(GATE), _open(QUIET)
        self._resume()
        return self

    def close(self) -> None:
        for fd in (self.quiet, self.gate):
            if fd is not None:
                os.close(fd)
        self.gate = self.quiet = None

    def __enter__(self) -> TrainingSlot:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _resume(self) -> None:
        if self.gate is not None:  # pass the gate: wait while a timer holds it
            fcntl.flock(self.gate, fcntl.LOCK_SH)
            fcntl.flock(self.gate, fcntl.LOCK_UN)
        if self.quiet is not None:
            fcntl.flock(self.quiet, fcntl.LOCK_SH)

    def between_steps(self) -> None:
        if self.gate is None:
            return
        try:
            fcntl.flock(self.gate, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # a timer holds the gate: step aside until it is done
            t0 = time.perf_counter()
            if self.drain is not None:
                self.drain()
            if self.quiet is not None:
                fcntl.flock(self.quiet, fcntl.LOCK_UN)
            self.pauses += 1
            self._resume()
            self.paused_s += time.perf_counter() - t0
            return
        fcntl.flock(self.gate, fcntl.LOCK_UN)
