"""No latency is taken while a local sibling trains on the same device: a figure timed
beside a training worker measures the contention, not the network (x0.09-x1.05 on an H200
with two workers).

Every cnnsearch process on a machine shares two lock files per device (``cpu``, or one
GPU by its UUID: ``CUDA_VISIBLE_DEVICES`` makes every worker's GPU ``cuda:0``):

* trainers hold the ``quiet`` lock *shared* while they train, and look at the ``gate``
  between steps and evaluation batches (one non-blocking flock, a few microseconds);
* a worker about to time a network takes the ``gate`` *exclusively* (so trainers stop at
  their next step and new ones wait) and then the ``quiet`` lock exclusively, which it gets
  once every trainer of that device has paused; it times, and lets them go.

A trainer pauses for one timing, a timer waits for one step (or evaluation batch) of each
sibling. No wait is unbounded: past ``WAIT_S`` (a stopped process, a foreign lock holder)
both sides go on without the other, and where the lock files cannot be opened (another
user's /tmp rules, a read-only /tmp) they go on without them. A process that times inside
its own training (``on_epoch`` calling ``measure``) stands its own trainer aside first.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

WAIT_S = 30.0  # the longest a timer waits for trainers, or a trainer for a timer
_LOCAL = threading.local()  # this thread's open slots: a timing from inside its own training


def _open(name: str) -> int | None:
    path = os.path.join(tempfile.gettempdir(), name)
    for flags in (os.O_RDONLY, os.O_RDONLY | os.O_CREAT):  # flock needs no write access
        try:
            fd = os.open(path, flags)  # made with the default mode: fchmod sets the mode below
        except OSError:
            continue
        try:
            os.fchmod(fd, 0o666)  # whatever the umask: every user's workers share it
        except OSError:
            pass  # another user's file: theirs to set
        return fd
    return None


def _files(key: str) -> tuple[int | None, int | None]:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)
    return _open(f"cnnsearch-gate-{safe}.lock"), _open(f"cnnsearch-quiet-{safe}.lock")


def _slots() -> set[TrainingSlot]:
    if not hasattr(_LOCAL, "slots"):
        _LOCAL.slots = set()
    return _LOCAL.slots


def _lock(fd: int | None, mode: int, deadline: float) -> bool:
    """flock ``fd`` in ``mode`` by the deadline (a few ms between tries), or give up: False."""
    if fd is None:
        return False
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:  # pragma: no mutate (a clock read equal to the deadline: either way)
                return False
            time.sleep(0.002)


@contextmanager
def quiet_machine(key: str = "cpu") -> Iterator[None]:
    """Hold while timing on device ``key``: its local trainers are paused between two steps."""
    own = list(_slots())
    for slot in own:  # our own training (a timing from inside it) must not wait for itself
        slot.step_aside()
    gate, quiet = _files(key)
    try:
        deadline = time.monotonic() + WAIT_S
        if _lock(gate, fcntl.LOCK_EX, deadline):
            _lock(quiet, fcntl.LOCK_EX, deadline)
        yield
    finally:
        for fd in (quiet, gate):  # closing a descriptor releases its lock
            if fd is not None:
                os.close(fd)
        for slot in own:
            slot.resume()


class TrainingSlot:
    """What a trainer on device ``key`` holds while it trains; ``between_steps()`` pauses it
    while a local worker times a network on that device. ``drain`` runs before pausing (on
    a GPU: synchronise, so that no queued kernel runs during the timing)."""

    def __init__(self, key: str = "cpu", drain: Callable[[], None] | None = None):
        self.key, self.drain = key, drain
        self.gate = self.quiet = None
        self.pauses = 0
        self.paused_s = 0.0  # time spent standing aside: not training time

    def open(self) -> TrainingSlot:
        self.gate, self.quiet = _files(self.key)
        t0 = time.monotonic()
        self.resume()
        self.paused_s += time.monotonic() - t0  # waited at the gate before the first step
        _slots().add(self)
        return self

    def close(self) -> None:
        _slots().discard(self)
        for fd in (self.quiet, self.gate):
            if fd is not None:
                os.close(fd)
        self.gate = self.quiet = None

    def __enter__(self) -> TrainingSlot:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def step_aside(self) -> None:
        if self.quiet is not None:
            fcntl.flock(self.quiet, fcntl.LOCK_UN)

    def resume(self) -> None:
        deadline = time.monotonic() + WAIT_S
        if _lock(self.gate, fcntl.LOCK_SH, deadline):  # pass the gate: wait while a timer holds it
            fcntl.flock(self.gate, fcntl.LOCK_UN)
        _lock(self.quiet, fcntl.LOCK_SH, deadline)

    def between_steps(self) -> None:
        if self.gate is None:
            return
        try:
            fcntl.flock(self.gate, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # a timer holds the gate: step aside until it is done
            if self.drain is not None:
                self.drain()  # the queued steps are training: finished before the pause starts
            t0 = time.monotonic()
            self.step_aside()
            self.pauses += 1
            self.resume()
            self.paused_s += time.monotonic() - t0
            return
        fcntl.flock(self.gate, fcntl.LOCK_UN)


def device_key(device) -> str:
    """Whose trainers a timing on ``device`` pauses: ``cpu``, or ``cuda-<UUID>`` (the same
    physical GPU in every process, whatever ``CUDA_VISIBLE_DEVICES`` calls it)."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return "cpu"
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        return f"cuda-{torch.cuda.get_device_properties(index).uuid}"
    except Exception:  # pragma: no mutate (GPU only: a driver without UUIDs)
        return f"cuda-{os.environ.get('CUDA_VISIBLE_DEVICES', '')}-{index}"
