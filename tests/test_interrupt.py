"""Ctrl-C always ends a command: a KeyboardInterrupt swallowed on its way (by a finaliser or a
library) is raised again at the next training step, and a second Ctrl-C exits at once."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cnnsearch.interrupt import check, ctrl_c_stops
from cnnsearch.train import TrainConfig, train
from tests.conftest import ROOT
from tests.test_training_exact import linear_net, tiny_data


@pytest.fixture
def default_sigint():
    """Python's own Ctrl-C handling, whatever the shell that started the suite left (a
    background job inherits SIGINT ignored); put back afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def swallowed_ctrl_c() -> None:
    """A Ctrl-C that lands in code which swallows every exception."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler runs at once; never reached in full
        raise AssertionError("SIGINT was not delivered")
    except KeyboardInterrupt:
        pass


def test_a_swallowed_ctrl_c_is_raised_again_by_check(default_sigint):
    check()  # nothing pressed: nothing raised
    with ctrl_c_stops():
        check()
        swallowed_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            check()
        with pytest.raises(KeyboardInterrupt):  # until the command ends, not just once
            check()
    check()  # the block is over: forgotten
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # and the handler put back


def test_without_the_block_a_swallowed_ctrl_c_is_not_remembered(default_sigint):
    swallowed_ctrl_c()
    check()


def test_training_stops_at_the_next_step_after_a_swallowed_ctrl_c(default_sigint):
    data = tiny_data()
    epochs = []
    with ctrl_c_stops():
        swallowed_ctrl_c()
        model = linear_net()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        with pytest.raises(KeyboardInterrupt):
            train(model, data, TrainConfig(epochs=1000, batch_size=16, device="cpu"),
                  on_epoch=lambda stats: epochs.append(stats) and False)
    assert epochs == []  # not even one epoch more
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # not one step


def test_an_ignored_sigint_is_left_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # nohup, a background job
    try:
        with ctrl_c_stops():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


SECOND_CTRL_C = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
from cnnsearch.interrupt import ctrl_c_stops
with ctrl_c_stops():
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)
    except KeyboardInterrupt:
        print("first", flush=True)  # and carry on, as code that swallowed it would
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(30)
print("not stopped", flush=True)
"""


def test_a_second_ctrl_c_exits_at_once():
    proc = subprocess.Popen([sys.executable, "-c", SECOND_CTRL_C], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=25)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert out.split() == ["first"]
    assert err.strip() == "error: interrupted twice: stopping at once"


def test_an_inner_block_leaves_the_outer_one_in_charge(default_sigint):
    with ctrl_c_stops():
        with ctrl_c_stops():
            swallowed_ctrl_c()
        with pytest.raises(KeyboardInterrupt):  # the inner block's end forgot nothing
            check()
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # still ours
    check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_stale_ctrl_c_is_forgotten_when_a_block_starts(default_sigint, monkeypatch):
    import cnnsearch.interrupt as interrupt

    monkeypatch.setattr(interrupt, "_requested", True)  # left by an interrupt that ended no block
    with ctrl_c_stops():
        check()


def test_a_handler_python_cannot_put_back_leaves_the_default(monkeypatch):
    previous = signal.getsignal(signal.SIGINT)
    real = signal.signal
    calls = []

    def recording(signum, handler):
        calls.append(handler)
        old = real(signum, handler)
        return None if len(calls) == 1 else old  # the first: a handler set outside Python

    monkeypatch.setattr(signal, "signal", recording)
    try:
        if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
            real(signal.SIGINT, signal.default_int_handler)
        with ctrl_c_stops():
            pass
        assert calls[-1] is signal.SIG_DFL
    finally:
        real(signal.SIGINT, previous)


def test_the_worker_loop_raises_a_ctrl_c_swallowed_during_a_trial(default_sigint):
    import optuna

    from cnnsearch.study import run_worker

    def objective(trial):
        swallowed_ctrl_c()  # lost inside the trial, which then finishes normally
        return 1.0

    study = optuna.create_study()
    with ctrl_c_stops(), pytest.raises(KeyboardInterrupt):
        run_worker(study, objective, until=5)
    assert len(study.trials) == 1 and study.trials[0].state.name == "COMPLETE"  # stored, then stopped


def test_latency_timing_raises_a_ctrl_c_swallowed_before_it(default_sigint):
    from torch import nn

    from cnnsearch.latency import measure

    with ctrl_c_stops():
        swallowed_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            measure(nn.Linear(2, 2), (2,), warmup_s=0.0, min_runs=10, time_cap_s=0.05, lock=False)
