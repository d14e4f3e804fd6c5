"""The trainer's observable contract on tiny synthetic data: exact reproducibility with dropout
and batch norm, eval mode at evaluation, the documented optimizer, learning-rate schedule and
weight-decay groups actually applied, losses averaged as documented, timing fields, and
out-of-memory / divergence handling."""

import copy
import time
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnsearch.data import ImageData
from cnnsearch.train import TrainConfig, _is_oom, resolve_device, train


def tiny_data(n_train=64, n_val=24, seed=0, shape=(1, 4, 4), classes=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_val, *shape, generator=g)
    y = torch.randint(0, classes, (n_train + n_val,), generator=g)
    return ImageData("tiny", x[:n_train], y[:n_train], x[n_train:], y[n_train:], None, None,
                     tuple(str(c) for c in range(classes)), (0.0,) * shape[0], (1.0,) * shape[0])


def conv_net(dropout=0.5, classes=3, channels=1):
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(dropout),
                         nn.Flatten(), nn.Linear(64, classes))


def linear_net(classes=3):
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, classes))


def cfg(**kw):
    return TrainConfig(**{"epochs": 2, "batch_size": 16, "device": "cpu", "lr": 0.05, **kw})


# ---------------------------------------------------------------- reproducibility


def test_seeded_training_with_dropout_and_batch_norm_reproduces_exactly():
    data = tiny_data()
    torch.manual_seed(0)
    start = conv_net()
    runs = []
    for seed, outside in ((3, 11), (3, 99), (4, 11)):
        model = copy.deepcopy(start)
        torch.manual_seed(outside)  # whatever the global RNG state, the config's seed decides
        result = train(model, data, cfg(seed=seed, augment=True, optimizer="sgd"))
        runs.append((model.state_dict(), [(e.train_loss, e.val_loss, e.val_accuracy) for e in result.epochs]))
    (a, curve_a), (b, curve_b), (c, curve_c) = runs
    assert curve_a == curve_b
    assert all(torch.equal(a[k], b[k]) for k in a)  # weights and batch-norm statistics alike
    assert curve_c != curve_a and not torch.equal(a["0.weight"], c["0.weight"])


def test_evaluation_is_in_eval_mode_and_training_mode_is_kept():
    data = tiny_data()
    torch.manual_seed(0)
    model = conv_net(dropout=0.9)
    result = train(model, data, cfg(epochs=1))
    assert model.training
    model.eval()
    with torch.no_grad():
        out = model(data.x_val)
    assert result.epochs[-1].val_loss == pytest.approx(F.cross_entropy(out, data.y_val).item(), rel=1e-5)
    assert result.epochs[-1].val_accuracy == (out.argmax(1) == data.y_val).float().mean().item()


# ---------------------------------------------------------------- losses and statistics


@pytest.mark.parametrize("batch", [16, 64])  # 4 steps an epoch, and a single one
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_losses_are_the_means_over_the_epoch_and_the_validation_set(smoothing, batch):
    """lr 0 keeps the weights: the epoch's mean training loss is then the loss over every
    image used (equal batches, the ragged rest dropped), whatever the order."""
    data = tiny_data(n_train=64)
    model = linear_net()
    expected_model = copy.deepcopy(model)
    started = time.perf_counter()
    result = train(model, data, cfg(lr=0.0, epochs=2, label_smoothing=smoothing, batch_size=batch))
    elapsed = time.perf_counter() - started
    steps = 64 // batch
    with torch.no_grad():
        train_loss = F.cross_entropy(expected_model(data.x_train), data.y_train, label_smoothing=smoothing)
        val_out = expected_model(data.x_val)
    for e, stats in enumerate(result.epochs, 1):
        assert stats.epoch == e and stats.steps == steps * e
        assert stats.train_loss == pytest.approx(train_loss.item(), rel=1e-5)
        assert stats.val_loss == pytest.approx(F.cross_entropy(val_out, data.y_val).item(), rel=1e-5)
        assert stats.val_accuracy == pytest.approx((val_out.argmax(1) == data.y_val).float().mean().item())
        assert elapsed >= stats.seconds >= stats.train_seconds > 0  # this epoch's wall time
    assert result.accuracy == result.epochs[-1].val_accuracy
    assert result.status == "ok" and result.device == "cpu" and result.batch_size == batch
    assert result.train_seconds == pytest.approx(sum(e.train_seconds for e in result.epochs))
    assert result.images_per_s == pytest.approx(2 * steps * batch / result.train_seconds)


def test_augment_changes_what_the_net_sees():
    data = tiny_data(n_train=64)
    plain = train(linear_net(), data, cfg(lr=0.0, epochs=1)).epochs[0].train_loss
    seen = [train(linear_net(), data, cfg(lr=0.0, epochs=1, augment=True)).epochs[0].train_loss for _ in range(2)]
    assert seen[0] == seen[1] != pytest.approx(plain, rel=1e-4)


def test_augmentation_draws_from_the_seed_alone_not_from_torchs_global_generator():
    """Code that draws from torch's global generator between epochs (an on_epoch callback, a
    timing in the same process) leaves the augmentation, and so the run, as it was."""
    def drawing(stats):
        torch.rand(3)  # another user of the global generator
        return False  # never stops the run

    data = tiny_data(n_train=64)
    runs = [[e.train_loss for e in train(linear_net(), data, cfg(epochs=3, augment=True), on_epoch=on_epoch).epochs]
            for on_epoch in (None, drawing)]
    assert runs[0] == runs[1]


# ---------------------------------------------------------------- optimizer and schedule


@pytest.fixture
def steps():
    """Every optimizer step the trainer takes: (optimizer, [(lr, weight_decay, params) per group])."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(
        (opt, [(g["lr"], g["weight_decay"], list(g["params"])) for g in opt.param_groups])))
    yield seen
    handle.remove()


@pytest.mark.parametrize(("n_train", "batch", "epochs", "total", "warmup"), [
    (64, 16, 10, 40, 4),  # 4 steps an epoch
    (64, 20, 12, 36, 3),  # 3 steps an epoch: the ragged last batch of 4 is dropped
    (64, 16, 3, 12, 1),   # under 20 steps: one warm-up step
])
def test_learning_rate_warms_up_over_a_tenth_then_decays_linearly_to_zero(steps, n_train, batch, epochs, total,
                                                                         warmup):
    peak = 0.01
    train(linear_net(), tiny_data(n_train=n_train), cfg(lr=peak, epochs=epochs, batch_size=batch))
    lrs = [groups[0][0] for _, groups in steps]
    assert len(lrs) == total
    assert lrs[:warmup] == pytest.approx([peak * (s + 1) / warmup for s in range(warmup)])
    decay = lrs[warmup - 1:]
    drop = peak / (total - warmup + 1)  # the slope that reaches 0 one step after the last
    assert decay == pytest.approx([peak - drop * i for i in range(len(decay))])


def test_batch_is_clamped_to_the_training_set(steps):
    result = train(linear_net(), tiny_data(n_train=40), cfg(batch_size=1000, epochs=3))
    assert result.batch_size == 40 and len(steps) == 3
    result = train(linear_net(), tiny_data(n_train=10, n_val=4), cfg(batch_size=1, epochs=1))
    assert result.batch_size == 1 and len(steps) == 3 + 10


@pytest.mark.parametrize(("name", "kind"), [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam),
                                            ("adamw", torch.optim.AdamW)])
def test_optimizer_and_weight_decay_on_weights_only(steps, name, kind):
    torch.manual_seed(0)
    model = conv_net()
    train(model, tiny_data(), cfg(optimizer=name, weight_decay=0.03, momentum=0.7, lr=0.02, epochs=1))
    opt, groups = steps[0]
    assert type(opt) is kind
    decayed = {id(p) for lr, wd, params in groups if wd == 0.03 for p in params}
    free = {id(p) for lr, wd, params in groups if wd == 0.0 for p in params}
    assert decayed == {id(p) for p in model.parameters() if p.ndim > 1}  # conv and linear weights
    assert free == {id(p) for p in model.parameters() if p.ndim == 1}  # biases, batch-norm affine
    assert all(lr == pytest.approx(0.02) for lr, _, _ in groups)  # one warm-up step: the peak
    for group in opt.param_groups:
        assert group["foreach"] is True and not group.get("fused")  # multi-tensor kernels on a CPU
        if name == "sgd":
            assert group["momentum"] == 0.7 and group["nesterov"] is True


def test_the_data_is_moved_once_to_the_device_training_runs_on(monkeypatch):
    moves = []
    real = ImageData.to
    monkeypatch.setattr(ImageData, "to", lambda data, device: moves.append(device) or real(data, device))
    train(linear_net(), tiny_data(), cfg(epochs=2))
    assert moves == [torch.device("cpu")]


def test_on_a_gpu_each_optimizer_step_is_one_fused_kernel(monkeypatch):
    """No GPU here: parameters that say they are on one, and optimizers that record what
    they are asked for."""
    from cnnsearch.train import _optimizer

    for kind in ("SGD", "Adam", "AdamW"):
        monkeypatch.setattr(torch.optim, kind, lambda groups, **options: options)
    weight, bias = SimpleNamespace(ndim=2, is_cuda=True), SimpleNamespace(ndim=1, is_cuda=True)
    model = SimpleNamespace(parameters=lambda: iter([weight, bias]))
    for name in ("sgd", "adam", "adamw"):
        options = _optimizer(model, cfg(optimizer=name))
        assert options["fused"] is True and "foreach" not in options


def test_one_weight_matrix_only(steps):
    train(linear_net(), tiny_data(), cfg(epochs=1, optimizer="adamw"))
    assert type(steps[0][0]) is torch.optim.AdamW


def test_weight_decay_shrinks_the_weights():
    data = tiny_data()
    norms = []
    for wd in (0.0, 5.0):
        model = linear_net()
        train(model, data, cfg(optimizer="adamw", weight_decay=wd, lr=0.05, epochs=3))
        norms.append((model[1].weight.norm().item(), model[1].bias.norm().item()))
    assert norms[1][0] < 0.7 * norms[0][0]


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="'lion'.*adamw, adam, sgd"):
        train(linear_net(), tiny_data(), cfg(optimizer="lion"))


def test_default_config_and_progress_bar(capsys):
    result = train(linear_net(), tiny_data(n_train=32))
    assert result.status == "ok" and len(result.epochs) == TrainConfig().epochs
    assert train(linear_net(), tiny_data(), cfg(epochs=1), progress=True).status == "ok"


# ---------------------------------------------------------------- memory layout


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_as_configured_and_contiguous_after(channels_last):
    torch.manual_seed(0)
    model = conv_net(channels=2)
    layouts = []
    model[0].register_forward_pre_hook(lambda m, args: layouts.append(
        (args[0].is_contiguous(memory_format=torch.channels_last), m.weight.is_contiguous(
            memory_format=torch.channels_last), args[0].is_contiguous())))
    train(model, tiny_data(shape=(2, 4, 4)), cfg(epochs=1, channels_last=channels_last))
    assert layouts and all(x == w == channels_last and c != channels_last for x, w, c in layouts)
    assert model[0].weight.is_contiguous()


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


# ---------------------------------------------------------------- failures


class Fails(nn.Module):
    """A linear net whose training forward fails for batches larger than `limit`, or turns
    non-finite from training step `nan_from` on."""

    def __init__(self, limit=10**9, error=None, nan_from=None):
        super().__init__()
        self.net, self.limit, self.error, self.nan_from = linear_net(), limit, error, nan_from
        self.sizes, self.calls = [], 0

    def forward(self, x):
        if self.training:
            self.sizes.append(len(x))
            self.calls += 1
            if len(x) > self.limit:
                raise self.error
            if self.nan_from is not None and self.calls >= self.nan_from:
                return self.net(x) * float("nan")
        return self.net(x)


@pytest.mark.parametrize("message", ["CUDA error: out of memory",
                                     "DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"])
def test_out_of_memory_messages_retry_at_half_the_batch(message):
    model = Fails(limit=8, error=RuntimeError(message))
    result = train(model, tiny_data(), cfg(batch_size=16, epochs=1))
    assert result.status == "ok" and result.batch_size == 8 and set(model.sizes) == {16, 8}


def test_out_of_memory_twice_reports_the_halved_batch():
    model = Fails(limit=4, error=torch.cuda.OutOfMemoryError("CUDA out of memory"))
    result = train(model, tiny_data(), cfg(batch_size=16, epochs=1))
    assert result.status == "oom" and result.batch_size == 8 and "batch size 8" in result.detail
    assert model.sizes == [16, 8] and result.device == "cpu" and result.epochs == []


def test_out_of_memory_at_batch_two_and_one():
    model = Fails(limit=1, error=torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert train(model, tiny_data(), cfg(batch_size=2, epochs=1)).status == "ok"
    assert model.sizes[:2] == [2, 1]
    model = Fails(limit=0, error=torch.cuda.OutOfMemoryError("CUDA out of memory"))
    result = train(model, tiny_data(), cfg(batch_size=1, epochs=1))
    assert result.status == "oom" and result.batch_size == 1 and model.sizes == [1]  # nothing to halve


class FailsLate(nn.Module):
    """A conv net with batch norm whose training forward runs out of memory for batches
    larger than `limit` once `after` steps have trained; and whose evaluation forward does
    for batches larger than `eval_limit`."""

    def __init__(self, limit=10**9, after=0, eval_limit=10**9):
        super().__init__()
        torch.manual_seed(5)
        self.net, self.limit, self.after, self.eval_limit = conv_net(dropout=0.0), limit, after, eval_limit
        self.calls, self.eval_sizes = 0, []

    def forward(self, x):
        if self.training:
            self.calls += 1
            if len(x) > self.limit and self.calls > self.after:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        else:
            self.eval_sizes.append(len(x))
            if len(x) > self.eval_limit:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return self.net(x)


def test_out_of_memory_mid_training_retries_from_the_initial_weights():
    """A retry trains from the weights as built, so the retried run equals a fresh run at
    the halved batch: not the half-trained model trained again (extra training its peers lack)."""
    data = tiny_data()
    retried = FailsLate(limit=8, after=6)  # 1.5 epochs at batch 16, then out of memory
    fresh = FailsLate()
    assert all(torch.equal(a, b) for a, b in zip(retried.state_dict().values(), fresh.state_dict().values()))
    result = train(retried, data, cfg(batch_size=16, epochs=3))
    expected = train(fresh, data, cfg(batch_size=8, epochs=3))
    assert result.status == "ok" and result.batch_size == 8 and retried.calls > 6
    assert [e.val_accuracy for e in result.epochs] == [e.val_accuracy for e in expected.epochs]
    assert [e.train_loss for e in result.epochs] == [e.train_loss for e in expected.epochs]
    a, b = retried.state_dict(), fresh.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # weights and batch-norm statistics alike


def test_out_of_memory_in_evaluation_halves_the_evaluation_batch_only():
    data = tiny_data()
    model = FailsLate(eval_limit=5)  # trains fine; evaluation fits 5 images at a time
    result = train(model, data, cfg(batch_size=16, epochs=2, eval_batch_size=24))
    expected = train(FailsLate(), data, cfg(batch_size=16, epochs=2))
    assert result.status == "ok" and result.batch_size == 16  # the training batch is untouched
    assert [e.val_accuracy for e in result.epochs] == [e.val_accuracy for e in expected.epochs]
    assert [e.val_loss for e in result.epochs] == pytest.approx([e.val_loss for e in expected.epochs], rel=1e-6)
    assert {24, 12, 6, 3} <= set(model.eval_sizes) and max(s for s in model.eval_sizes if s <= 5) == 3
    assert model.eval_sizes.count(24) == 1  # the batch that fits is kept: epoch 2 does not run out again


def test_out_of_memory_in_evaluation_of_one_image_is_reported():
    result = train(FailsLate(eval_limit=0), tiny_data(), cfg(batch_size=16, epochs=1))
    assert result.status == "oom"


@pytest.mark.parametrize("error", [RuntimeError("mat1 and mat2 shapes cannot be multiplied"),
                                   RuntimeError("out of patience"), MemoryError("out of memory")])
def test_other_errors_are_raised_not_retried(error):
    model = Fails(limit=0, error=error)
    with pytest.raises(type(error)):
        train(model, tiny_data(), cfg(batch_size=16, epochs=1))
    assert model.sizes == [16]
    assert not _is_oom(error)


def test_divergence_ends_training_and_counts_the_epoch_it_happened_in():
    model = Fails(nan_from=6)  # 4 steps an epoch: epoch 2 goes non-finite
    result = train(model, tiny_data(), cfg(batch_size=16, epochs=4))
    assert result.status == "diverged" and "epoch 2" in result.detail
    assert len(result.epochs) == 1 and model.calls == 8
    assert result.images_per_s == pytest.approx(2 * 4 * 16 / result.train_seconds)


def test_stopping_callback_sees_each_epoch():
    seen = []
    result = train(linear_net(), tiny_data(), cfg(epochs=4), on_epoch=lambda s: seen.append(s.epoch) or s.epoch == 3)
    assert result.status == "stopped" and seen == [1, 2, 3] and len(result.epochs) == 3
    assert result.to_dict()["accuracy"] == result.epochs[-1].val_accuracy
    assert result.to_dict()["status"] == "stopped"


def test_no_epoch_trained_reports_no_speed():
    """Zero epochs (a budget spent before the first): nothing timed, so no images/s rather
    than a division by zero or a made-up figure."""
    result = train(linear_net(), tiny_data(), cfg(epochs=0))
    assert (result.status, result.epochs, result.train_seconds, result.images_per_s) == ("ok", [], 0.0, 0.0)
    assert result.accuracy == 0.0
