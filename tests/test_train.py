"""The brief trainer: accurate, reproducible, and failures reported, never raised."""

import pytest
import torch

from cnnsearch import ArchSpec, build
from cnnsearch.data import load_data
from cnnsearch.latency import measure
from cnnsearch.train import TrainConfig, train

DIGITS_NET = ArchSpec.from_dict({
    "input": [1, 8, 8], "num_classes": 10,
    "blocks": [{"out_channels": 32, "kernel_size": 3, "padding": 1, "norm": "batch", "pool": "max"},
               {"out_channels": 64, "kernel_size": 3, "padding": 1, "pool": "max"}],
    "head": {"hidden": [64]},
})


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", seed=0)


def run(digits, **cfg):
    torch.manual_seed(0)
    model = build(DIGITS_NET)
    return model, train(model, digits, TrainConfig(**{"epochs": 5, "batch_size": 64, "device": "cpu", **cfg}))


def test_digits_reaches_95_percent_in_5_epochs_on_cpu(digits):
    _, result = run(digits)
    assert result.status == "ok" and len(result.epochs) == 5
    assert result.accuracy >= 0.95, result.epochs
    assert result.images_per_s > 0 and result.train_seconds > 0


def test_same_seed_same_result_twice(digits):
    _, a = run(digits, epochs=2, optimizer="sgd", lr=0.05, label_smoothing=0.1)
    _, b = run(digits, epochs=2, optimizer="sgd", lr=0.05, label_smoothing=0.1)
    assert [e.val_accuracy for e in a.epochs] == [e.val_accuracy for e in b.epochs]
    assert [e.train_loss for e in a.epochs] == [e.train_loss for e in b.epochs]


def test_epoch_callback_stops_early(digits):
    seen = []
    torch.manual_seed(0)
    result = train(build(DIGITS_NET), digits, TrainConfig(epochs=5, device="cpu"),
                   on_epoch=lambda stats: seen.append(stats.epoch) or stats.epoch == 2)
    assert result.status == "stopped" and seen == [1, 2] and len(result.epochs) == 2


def test_huge_lr_diverges_without_raising(digits):
    _, result = run(digits, epochs=3, optimizer="sgd", lr=1e6)
    assert result.status == "diverged" and "non-finite" in result.detail
    assert len(result.epochs) < 3


class _OOMOnce(torch.nn.Module):
    """Wraps a model; its forward fails like a CUDA allocation for batches above `limit`."""

    def __init__(self, model, limit):
        super().__init__()
        self.model, self.limit, self.failures = model, limit, 0

    def forward(self, x):
        if self.training and len(x) > self.limit:
            self.failures += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(x)


def test_oom_retries_once_at_half_the_batch(digits):
    torch.manual_seed(0)
    model = _OOMOnce(build(DIGITS_NET), limit=64)
    result = train(model, digits, TrainConfig(epochs=1, batch_size=128, device="cpu"))
    assert result.status == "ok" and result.batch_size == 64 and model.failures == 1


def test_oom_twice_is_reported_not_raised(digits):
    torch.manual_seed(0)
    model = _OOMOnce(build(DIGITS_NET), limit=16)
    result = train(model, digits, TrainConfig(epochs=1, batch_size=128, device="cpu"))
    assert result.status == "oom" and "batch size 64" in result.detail and model.failures == 2


def test_other_errors_propagate(digits):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise ValueError("a real bug")

    with pytest.raises(ValueError, match="a real bug"):
        train(Broken(), digits, TrainConfig(epochs=1, device="cpu"))


def test_latency_protocol_fields():
    model = build(DIGITS_NET)
    lat = measure(model, DIGITS_NET.input, threads=1, time_cap_s=1.0)
    assert lat.median_ms > 0 and lat.iqr_ms >= 0 and lat.runs >= 30
    assert lat.fingerprint["threads"] == 1 and lat.fingerprint["torch"] == torch.__version__
    assert lat.calls_per_run >= 1 and lat.batch_size == 1
    assert model.training  # the meter restores the mode it found
    bigger = build(ArchSpec.from_dict({**DIGITS_NET.to_dict(), "blocks": [
        {"out_channels": 256, "kernel_size": 3, "padding": 1}] * 3}))
    assert measure(bigger, DIGITS_NET.input, time_cap_s=1.0).median_ms > lat.median_ms


def test_latency_takes_a_machine_wide_lock(tmp_path):
    import fcntl
    import os
    import tempfile
    import threading

    from cnnsearch.latency import measure

    model = build(DIGITS_NET)
    path = os.path.join(tempfile.gettempdir(), "cnnsearch-latency-cpu.lock")
    done = threading.Event()
    with open(path, "a") as held:  # another worker is timing right now
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: (measure(model, DIGITS_NET.input, time_cap_s=0.2), done.set()))
        worker.start()
        assert not done.wait(1.0)  # it waits for the lock instead of timing alongside
        fcntl.flock(held, fcntl.LOCK_UN)
    worker.join(timeout=30)
    assert done.is_set()
    assert measure(model, DIGITS_NET.input, time_cap_s=0.2, lock=False).median_ms > 0
