"""Ctrl-C that always ends a command, however deep in training it lands.

Python turns SIGINT into ``KeyboardInterrupt`` at the main thread's next bytecode, wherever
that happens to be. Raised inside code that swallows exceptions (a finaliser, a library's
broad ``except``), it is lost, and a 100,000-epoch run simply goes on: seen once in 20
interrupts on a loaded machine. So the handler also sets a flag, and the training loop calls
``check()`` every step: a lost interrupt is raised again there, where nothing swallows it.
A second Ctrl-C ends the process at once (exit 130); its running trial is then recovered by
the next run on this host (its owner process is gone).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_requested = threading.Event()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed under ``ctrl_c_stops()``."""
    if _requested.is_set():
        raise KeyboardInterrupt


def _on_sigint(signum, frame) -> None:
    if _requested.is_set():  # the second one: the user means now
        print("error: interrupted twice: stopping at once", file=sys.stderr, flush=True)
        os._exit(130)
    _requested.set()
    raise KeyboardInterrupt


@contextmanager
def ctrl_c_stops() -> Iterator[None]:
    """Within this block, Ctrl-C raises ``KeyboardInterrupt`` and is remembered for ``check()``.

    Leaves SIGINT alone where it is ignored (``nohup``, a background job) and off the main
    thread (only it can set handlers)."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested.clear()
