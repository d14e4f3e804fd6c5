"""No latency is taken while a local sibling trains (quiet.py): trainers pause between steps
while a timer holds the machine, and the timer waits for their current step only."""

import os
import threading
import time

import torch

from cnnsearch import quiet
from cnnsearch.latency import measure
from cnnsearch.quiet import TrainingSlot, quiet_machine
from cnnsearch.train import TrainConfig, train
from tests.test_training_exact import linear_net, tiny_data


def wait_until(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def _trainer(steps: list[float], stop: threading.Event, slot_box: list, key: str = "cpu"):
    with TrainingSlot(key) as slot:
        slot_box.append(slot)
        while not stop.is_set():
            slot.between_steps()
            steps.append(time.monotonic())
            time.sleep(0.002)  # a training step


def test_trainers_pause_while_a_network_is_timed_and_go_on_after(tmp_path, monkeypatch):
    monkeypatch.setattr(quiet.tempfile, "gettempdir", lambda: str(tmp_path))  # this test's own lock files
    steps, stop, slots = [[], []], threading.Event(), []
    threads = [threading.Thread(target=_trainer, args=(s, stop, slots)) for s in steps]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: all(len(s) >= 3 for s in steps))  # both training
        with quiet_machine():
            start = time.monotonic()
            time.sleep(0.3)  # the timing
            end = time.monotonic()
        time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    for s in steps:
        during = [t for t in s if start <= t <= end]
        assert not during, f"{len(during)} steps while timing"
        assert any(t < start for t in s) and any(t > end for t in s)  # trained before, and after
    assert all(slot.pauses == 1 and 0.25 < slot.paused_s < 2.0 for slot in slots)


def test_a_timer_waits_for_the_current_step_only(tmp_path, monkeypatch):
    monkeypatch.setattr(quiet.tempfile, "gettempdir", lambda: str(tmp_path))
    inside, began = threading.Event(), []

    def one_long_step():
        with TrainingSlot() as slot:
            began.append(time.monotonic())  # the step's own clock: this thread may wake late
            inside.set()
            time.sleep(0.3)  # a step in progress when the timer arrives
            slot.between_steps()

    t = threading.Thread(target=one_long_step)
    t.start()
    inside.wait(5)
    with quiet_machine():
        got_in = time.monotonic()
    t.join(5)
    assert 0.29 < got_in - began[0] < 2.0  # the step's 0.3 s, then at once


def test_training_and_latency_take_part(tmp_path, monkeypatch):
    """train() looks at the gate between its steps and measure() holds the machine: a
    timing during a training pauses it, and the pause is not training time."""
    monkeypatch.setattr(quiet.tempfile, "gettempdir", lambda: str(tmp_path))
    calls = []
    real = TrainingSlot.between_steps
    monkeypatch.setattr(TrainingSlot, "between_steps", lambda self: calls.append(1) or real(self))
    result = train(linear_net(), tiny_data(), TrainConfig(epochs=2, batch_size=16, device="cpu"))
    assert len(calls) == 2 * (4 + 1)  # every step (64 images, batch 16) and evaluation batch, 2 epochs

    entered = []
    real_quiet = quiet.quiet_machine

    def spying(key):
        entered.append(key)
        return real_quiet(key)

    monkeypatch.setattr("cnnsearch.latency.quiet_machine", spying)
    measure(linear_net(), (1, 4, 4), time_cap_s=0.2)
    assert entered == ["cpu"]
    assert result.status == "ok"
    torch.set_num_threads(1)


def test_a_pause_is_not_counted_as_training_time(tmp_path, monkeypatch):
    monkeypatch.setattr(quiet.tempfile, "gettempdir", lambda: str(tmp_path))
    out, epochs_done = {}, []

    def training():
        t0 = time.monotonic()
        out["result"] = train(linear_net(), tiny_data(), TrainConfig(epochs=400, batch_size=16, device="cpu"),
                              on_epoch=lambda stats: epochs_done.append(stats.epoch) and False)
        out["wall"] = time.monotonic() - t0

    t = threading.Thread(target=training)
    t.start()
    wait_until(lambda: len(epochs_done) >= 2)  # mid-training, past any set-up
    with quiet_machine():
        time.sleep(0.5)
    t.join(60)
    result = out["result"]
    assert result.status == "ok" and len(epochs_done) < 400 or result.paused_s >= 0.45
    assert result.paused_s >= 0.45
    epochs = sum(e.seconds for e in result.epochs)
    assert epochs < out["wall"] - 0.45  # the half second stood aside is in no epoch
    assert result.train_seconds <= epochs


def test_workers_auto_is_two_per_gpu_else_one_per_four_cores(monkeypatch, capsys):
    from cnnsearch import runner
    from cnnsearch.cli import main

    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: False)
    assert runner.auto_workers() == 4
    monkeypatch.setattr(runner.os, "sched_getaffinity", lambda pid: {0, 1})
    assert runner.auto_workers() == 1
    monkeypatch.setattr(runner.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runner.torch.cuda, "device_count", lambda: 3)
    assert runner.auto_workers() == 6
    assert main(["search", "x.toml", "--workers", "many"]) == 2
    assert capsys.readouterr().err == "error: --workers: expected a number or auto, got 'many'\n"


def test_a_timing_inside_the_own_training_does_not_wait_for_itself(tmp_path, monkeypatch):
    """on_epoch calling measure(): the process's own trainer stands aside first."""
    monkeypatch.setattr(quiet.tempfile, "gettempdir", lambda: str(tmp_path))
    timed = []

    def on_epoch(stats):
        timed.append(measure(linear_net(), (1, 4, 4), time_cap_s=0.1).median_ms)
        return False

    done = []
    t = threading.Thread(target=lambda: done.append(train(linear_net(), tiny_data(),
                                                          TrainConfig(epochs=2, batch_size=16, device="cpu"),
                                                          on_epoch=on_epoch)))
    t.start()
    t.join(20)
    assert not t.is_alive() and done[0].status == "ok" and len(timed) == 2


def test_no_wait_is_unbounded(tmp_path, monkeypatch):
    """A stopped or foreign lock holder delays both sides by WAIT_S, never forever."""
    import fcntl

    monkeypatch.setattr(quiet.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(quiet, "WAIT_S", 0.3)
    gate, held = quiet._files("cpu")
    fcntl.flock(gate, fcntl.LOCK_EX)  # someone holds the gate and never lets go
    try:
        t0 = time.monotonic()
        with TrainingSlot() as slot:
            slot.between_steps()
        assert 0.25 < time.monotonic() - t0 < 3
        t0 = time.monotonic()
        with quiet_machine():
            pass
        assert 0.25 < time.monotonic() - t0 < 3
    finally:
        os.close(gate)
        os.close(held)
    assert oct(os.stat(tmp_path / "cnnsearch-gate-cpu.lock").st_mode & 0o777) == "0o666"


def test_a_timing_pauses_only_the_trainers_of_its_device(tmp_path, monkeypatch):
    monkeypatch.setattr(quiet.tempfile, "gettempdir", lambda: str(tmp_path))
    steps, stop, slots = [], threading.Event(), []
    t = threading.Thread(target=_trainer, args=(steps, stop, slots, "cuda-GPU-1234"))
    t.start()
    try:
        wait_until(lambda: len(steps) >= 3)
        with quiet_machine("cpu"):
            start = time.monotonic()
            time.sleep(0.2)
            end = time.monotonic()
    finally:
        stop.set()
        t.join(5)
    assert any(start <= s <= end for s in steps) and slots[0].pauses == 0
    assert quiet.device_key("cpu") == "cpu"


def test_workers_share_the_gpus_a_scheduler_lists(monkeypatch):
    from cnnsearch import runner

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert [runner._worker_env(i, 4)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["2", "3", "2", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(runner.torch.cuda, "device_count", lambda: 2)
    assert [runner._worker_env(i, 3)["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["0", "1", "0"]
    monkeypatch.setattr(runner.torch.cuda, "device_count", lambda: 0)
    assert "CUDA_VISIBLE_DEVICES" not in runner._worker_env(0, 2)


def test_four_workers_on_the_two_gpus_a_scheduler_lists_in_its_order(monkeypatch, capsys):
    """CUDA_VISIBLE_DEVICES="3,1" (a Slurm or Kubernetes allocation: any ids, any order):
    4 workers get 3, 1, 3, 1, each as its only visible GPU, and the launcher says so."""
    from cnnsearch import runner
    from cnnsearch.recipe import Recipe

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 1")
    given = []

    class Worker:
        def __init__(self, cmd, env, stdin):
            given.append((cmd[cmd.index("--worker-index") + 1], env["CUDA_VISIBLE_DEVICES"]))

        def wait(self):
            return 0

    monkeypatch.setattr(runner.subprocess, "Popen", Worker)
    recipe = Recipe(name="x", space="s.toml", space_toml="", storage="sqlite:///x.db", artifacts="/tmp/x")
    assert runner.launch_workers(None, recipe, workers=4, until=8, timeout=None) == 0
    assert given == [("0", "3"), ("1", "1"), ("2", "3"), ("3", "1")]
    assert "GPUs: w0 -> 3, w1 -> 1, w2 -> 3, w3 -> 1\n" in capsys.readouterr().out


def test_a_device_key_becomes_a_safe_file_name(tmp_path, monkeypatch):
    """A GPU's UUID or any other key names two lock files in /tmp: characters a file name
    should not hold become one underscore each, the rest is kept as is."""
    monkeypatch.setattr(quiet.tempfile, "gettempdir", lambda: str(tmp_path))
    fds = quiet._files("cuda:GPU-a1b2/x y.0")
    for fd in fds:
        os.close(fd)
    assert sorted(os.listdir(tmp_path)) == ["cnnsearch-gate-cuda_GPU-a1b2_x_y.0.lock",
                                           "cnnsearch-quiet-cuda_GPU-a1b2_x_y.0.lock"]


def test_without_lock_files_trainers_and_timers_go_on_alone(tmp_path, monkeypatch):
    """A /tmp where the lock files cannot be made: no slot holds a file, nothing waits."""
    monkeypatch.setattr(quiet.tempfile, "gettempdir", lambda: str(tmp_path / "missing"))
    assert quiet._files("cpu") == (None, None)
    t0 = time.monotonic()
    with TrainingSlot() as slot:
        assert (slot.gate, slot.quiet) == (None, None)
        slot.between_steps()
        with quiet_machine():
            slot.between_steps()
    assert slot.pauses == 0 and time.monotonic() - t0 < 1


def test_a_closed_slot_holds_nothing_and_closes_again_quietly(tmp_path, monkeypatch):
    monkeypatch.setattr(quiet.tempfile, "gettempdir", lambda: str(tmp_path))
    slot = TrainingSlot().open()
    slot.close()
    assert (slot.gate, slot.quiet) == (None, None)
    slot.between_steps()  # a step after the training ended: nothing to pass
    slot.close()
    with quiet_machine():  # and a timer does not wait for it
        pass


def test_a_gpu_without_a_uuid_is_keyed_by_the_schedulers_list_and_its_index(monkeypatch):
    """A driver that reports no UUID: the key falls back to CUDA_VISIBLE_DEVICES (empty when
    unset) and the index, the same in every process the scheduler gave that list."""
    import torch

    def no_uuid(index):
        raise RuntimeError("no UUID")

    monkeypatch.setattr(torch.cuda, "get_device_properties", no_uuid)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert quiet.device_key("cuda:1") == "cuda--1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert quiet.device_key("cuda:0") == "cuda-2,3-0"


def test_a_lock_held_elsewhere_is_given_up_at_the_deadline(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setattr(quiet.tempfile, "gettempdir", lambda: str(tmp_path))
    holder, *others = quiet._files("cpu")
    waiter, *more = quiet._files("cpu")
    for fd in others + more:
        os.close(fd)
    fcntl.flock(holder, fcntl.LOCK_EX)
    t0 = time.monotonic()
    assert quiet._lock(waiter, fcntl.LOCK_SH, t0 + 0.05) is False
    assert 0.05 <= time.monotonic() - t0 < 2
    os.close(holder)  # its lock goes with it
    assert quiet._lock(waiter, fcntl.LOCK_SH, time.monotonic()) is True
    os.close(waiter)
    assert quiet._lock(None, fcntl.LOCK_SH, time.monotonic() + 1) is False  # no file: nothing held
