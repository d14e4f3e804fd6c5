"""Ctrl-C that always ends a command, however deep in training it lands.

Python turns SIGINT into ``KeyboardInterrupt`` at the main thread's next bytecode, wherever
that happens to be. Raised inside code that swallows exceptions (a finaliser, a library's
broad ``except``), it is lost, and a 100,000-epoch run simply goes on: seen once in about
100 interrupts on a loaded machine. So the handler also sets a flag, which the training
loop (every step), the latency protocol (every timed group) and the worker loop (every
trial) check: a lost interrupt is raised again there, where nothing swallows it. A second
Ctrl-C ends the process at once (exit 130); its running trial is then recovered by the
next run on this host (its owner process is gone).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# plain module state, not a threading.Event: handlers run on the main thread only, and
# Event.set() takes a lock that a second signal arriving inside it would deadlock on
_requested = False
_active = False


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed under ``ctrl_c_stops()``."""
    if _requested:
        raise KeyboardInterrupt


def _on_sigint(signum, frame) -> None:
    global _requested
    if _requested:  # the second one: the user means now
        # os.write, not print: print() into a stream the main thread is writing raises
        # "reentrant call", and the exit would be lost
        os.write(2, b"error: interrupted twice: stopping at once\n")
        os._exit(130)
    _requested = True
    raise KeyboardInterrupt


@contextmanager
def ctrl_c_stops() -> Iterator[None]:
    """Within this block, Ctrl-C raises ``KeyboardInterrupt`` and is remembered for ``check()``.

    Leaves SIGINT alone where it is ignored (``nohup``, a background job), off the main
    thread (only it can set handlers), and inside an outer block (which owns the handler)."""
    global _requested, _active
    if (_active or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        yield
        return
    _requested, _active = False, True
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        # None: a handler set outside Python, which cannot be put back; the default is closest
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
        _requested, _active = False, False
