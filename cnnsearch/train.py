"""Brief training of a candidate: fast on a GPU, practical and reproducible on a CPU.

The trainer receives a built model and an ``ImageData`` and owns nothing else. The whole
dataset sits on the training device and batches are index slices, so there is no
DataLoader, no collate and no host-device copy per batch; uint8 data (photo folders,
torchvision sets) stays uint8 there and ``ImageData.prepare`` normalises each batch.
Convolutions run channels_last (faster on CUDA and on CPUs); on CUDA it adds bf16 autocast
and cudnn.benchmark. A non-finite loss ends training as ``diverged``; an
out-of-memory error in training frees memory and starts again from the same initial
weights at half the batch (once), then ends as ``oom``; one in evaluation only halves the
evaluation batch, which changes no result. Neither raises.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageData, augment
from .hparams import OPTIMIZERS, TrainConfig
from .interrupt import check as check_interrupt
from .quiet import TrainingSlot, device_key

__all__ = ["EpochStats", "Evaluation", "TrainConfig", "TrainResult", "TrainStatus", "evaluate", "evaluate_metrics",
           "resolve_device", "train"]


class TrainStatus(StrEnum):
    OK = "ok"
    STOPPED = "stopped"  # by the epoch callback
    DIVERGED = "diverged"
    OOM = "oom"


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float  # wall time of this epoch's training and evaluation
    train_seconds: float = 0.0  # the training part alone (what images_per_s divides by)
    steps: int = 0  # optimizer steps so far (epochs x steps per epoch): progress across batch sizes
    val_balanced_accuracy: float = 0.0  # mean recall over the classes present in validation


@dataclass
class TrainResult:
    status: TrainStatus
    epochs: list[EpochStats] = field(default_factory=list)
    device: str = ""  # always set by train(): no default that could pass for a real one
    batch_size: int = 0  # what was actually used (halved after an OOM retry)
    train_seconds: float = 0.0
    images_per_s: float = 0.0  # training images per second, evaluation excluded
    paused_s: float = 0.0  # stood aside while a local worker timed a network: in no epoch
    detail: str = ""

    @property
    def accuracy(self) -> float:
        """Validation accuracy after the last completed epoch (0 when none completed)."""
        return self.epochs[-1].val_accuracy if self.epochs else 0.0

    @property
    def balanced_accuracy(self) -> float:
        """Validation balanced accuracy after the last completed epoch (0 when none completed)."""
        return self.epochs[-1].val_balanced_accuracy if self.epochs else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy}


class Evaluation(NamedTuple):
    loss: float  # mean cross-entropy
    accuracy: float
    balanced_accuracy: float  # mean recall over the classes present in the labels (scikit-learn's)


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # no weight decay on biases and norm parameters, as usual for CNNs
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    # one fused kernel per step on CUDA (a small net's step is otherwise launch-bound); the
    # multi-tensor (foreach) form on CPUs, where fused kernels are not faster
    impl = {"fused": True} if decay and decay[0].is_cuda else {"foreach": True}
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True, **impl)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, **impl)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, **impl)
    raise ValueError(f"optimizer {cfg.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
             autocast: bool = False, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
             ) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over x, y in eval mode: ``evaluate_metrics``'s first two."""
    loss, accuracy, _ = evaluate_metrics(model, x, y, batch_size, autocast, prepare)
    return loss, accuracy


@torch.no_grad()
def evaluate_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024,
                     autocast: bool = False, prepare: Callable[[torch.Tensor], torch.Tensor] | None = None
                     ) -> Evaluation:
    """Loss, accuracy and balanced accuracy over x, y in eval mode; one host sync at the end.
    ``prepare`` makes each batch what the network takes (``ImageData.prepare``: uint8
    pixels normalised on the device); without it the batches go in as they are.

    Out of memory halves the batch and starts over, down to one image: evaluation has no
    state, so the batch size changes nothing but memory (a network that trains at its
    batch must not be called out of memory by a larger evaluation batch)."""
    return Evaluation(*_evaluate_fitting(model, x, y, batch_size, autocast, prepare=prepare)[:3])


def _evaluate_fitting(model, x, y, batch_size, autocast, between=None, prepare=None
                      ) -> tuple[float, float, float, int]:
    """``evaluate_metrics``, and the batch size that fitted (the trainer keeps it for later
    epochs); ``between`` runs before each batch (the trainer's pause for a local timing)."""
    while True:
        try:
            return (*_evaluate(model, x, y, batch_size, autocast, between, prepare), batch_size)
        except Exception as exc:
            if not _is_oom(exc) or batch_size <= 1:
                raise
            if x.is_cuda:
                torch.cuda.empty_cache()  # pragma: no mutate (GPU only: hands freed blocks back)
            batch_size //= 2


def _evaluate(model, x, y, batch_size, autocast, between=None, prepare=None) -> tuple[float, float, float]:
    was_training = model.training
    model.eval()
    try:
        loss = torch.zeros((), device=x.device)
        # per class: [images, correctly classified], counted on the device. A comparison with
        # the class numbers, not bincount: CUDA's bincount reads its input's range to the host
        hits = None
        for i in range(0, len(x), batch_size):
            if between is not None:
                between()
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            if prepare is not None:
                xb = prepare(xb)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
                out = model(xb)
            loss += F.cross_entropy(out.float(), yb, reduction="sum")
            if hits is None:
                classes = torch.arange(out.shape[1], device=x.device)
                hits = classes.new_zeros((2, len(classes)))  # int64, on the data's device as classes is
            member = yb[:, None] == classes  # (batch, classes)
            hits[0] += member.sum(0)
            hits[1] += (member & (out.argmax(1) == yb)[:, None]).sum(0)
    finally:
        model.train(was_training)
    total = loss.item() / len(x)
    counts, correct = hits.tolist() if hits is not None else ([], [])
    recalls = [c / n for n, c in zip(counts, correct) if n]
    return total, sum(correct) / len(x), sum(recalls) / len(recalls) if recalls else 0.0


def train(model: nn.Module, data: ImageData, config: TrainConfig | None = None, *,
          on_epoch: Callable[[EpochStats], bool] | None = None, progress: bool = False) -> TrainResult:
    """Train ``model`` in place on ``data``; ``on_epoch(stats)`` returning True stops early."""
    cfg = config or TrainConfig()
    device = resolve_device(cfg.device)
    batch = cfg.batch_size
    # the weights as built: a retry after an out-of-memory error starts from these, not from
    # the half-trained ones (which would give the retried trial extra training over its peers)
    initial = copy.deepcopy(model.state_dict())
    for attempt in (0, 1):
        try:
            return _train(model, data, cfg, device, batch, on_epoch, progress)
        except Exception as exc:
            if not _is_oom(exc):
                raise
            detail = f"out of memory at batch size {batch}"
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if attempt == 0 and batch > 1:
                batch //= 2
                model.load_state_dict(initial)
                continue
            return TrainResult(TrainStatus.OOM, device=str(device), batch_size=batch, detail=detail)
    raise AssertionError("unreachable")  # pragma: no mutate (never reached: both attempts return or raise)


def _warmup_then_decay(opt: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The peak learning rate reached linearly over the first 10% of the steps, then decayed
    linearly to 0 at the last step (a schedule that ends inside the brief budget)."""
    warmup = max(1, total_steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (total_steps - s) / (total_steps - warmup + 1))))


def _progress_bar(total_steps: int):
    from tqdm.auto import tqdm

    # pragma: no mutate start (display only)
    return tqdm(total=total_steps, unit="step", leave=False, desc="train", position=1, dynamic_ncols=True)
    # pragma: no mutate end


def _epoch(model, data, x_train: torch.Tensor, order: torch.Tensor, *, batch: int, steps: int,
           opt: torch.optim.Optimizer, sched, cfg: TrainConfig, gen: torch.Generator, between_steps, bar) -> torch.Tensor:
    """One epoch's ``steps`` optimizer steps over ``order``; the summed loss, on the device
    (read once per epoch: no host sync per step)."""
    device = x_train.device
    model.train()
    loss_sum = torch.zeros((), device=device)  # pragma: no mutate (device=: the same tensor on a CPU; a GPU run needs it)
    for step in range(steps):
        check_interrupt()  # a Ctrl-C whose KeyboardInterrupt something swallowed
        between_steps()
        idx = order[step * batch:(step + 1) * batch]
        xb, yb = data.prepare(x_train[idx]), data.y_train[idx]  # normalised, then augmented
        if cfg.augment:
            xb = augment(xb, gen)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(xb)
        loss = F.cross_entropy(out.float(), yb, label_smoothing=cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)  # pragma: no mutate (zeroed or dropped gradients: the same step, a speed choice)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.detach()
        if bar is not None:
            bar.update(1)  # pragma: no mutate (display only)
    return loss_sum


def _train(model, data, cfg, device, batch, on_epoch, progress) -> TrainResult:
    torch.manual_seed(cfg.seed)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True  # pragma: no mutate (GPU only: cudnn's autotuning, speed not results)
    memory = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory)
    data = data.to(device)
    x_train = data.x_train.contiguous(memory_format=memory)
    x_val = data.x_val.contiguous(memory_format=memory)
    n = len(x_train)
    batch = max(1, min(batch, n))
    steps_per_epoch = n // batch  # drop the ragged last batch: fixed shapes, stable BN statistics
    total_steps = max(1, steps_per_epoch * cfg.epochs)
    opt = _optimizer(model, cfg)
    sched = _warmup_then_decay(opt, total_steps)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    result = TrainResult(TrainStatus.OK, device=str(device), batch_size=batch)
    bar = _progress_bar(total_steps) if progress else None
    train_time = 0.0
    eval_batch = cfg.eval_batch_size  # halved for good once it runs out of memory
    # steps pause while a local worker times a network (quiet.py); on a GPU the queued
    # kernels finish first
    slot = TrainingSlot(device_key(device), drain=torch.cuda.synchronize if cuda else None).open()
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            paused = slot.paused_s
            order = torch.randperm(n, device=device, generator=gen)
            loss_sum = _epoch(model, data, x_train, order, batch=batch, steps=steps_per_epoch, opt=opt, sched=sched,
                              cfg=cfg, gen=gen, between_steps=slot.between_steps, bar=bar)
            train_loss = loss_sum.item() / max(1, steps_per_epoch)  # the epoch's one host sync
            if cuda:
                torch.cuda.synchronize()
            epoch_train = time.perf_counter() - t0 - (slot.paused_s - paused)  # not the pauses
            train_time += epoch_train
            if not math.isfinite(train_loss):
                result.status, result.detail = TrainStatus.DIVERGED, f"non-finite training loss in epoch {epoch}"
                break
            val_loss, val_acc, val_balanced, eval_batch = _evaluate_fitting(
                model, x_val, data.y_val, eval_batch, cuda, slot.between_steps, data.prepare)
            stats = EpochStats(epoch, train_loss, val_loss, val_acc,
                               time.perf_counter() - t0 - (slot.paused_s - paused), epoch_train,
                               epoch * steps_per_epoch, val_balanced)
            result.epochs.append(stats)
            if bar is not None:
                bar.set_postfix(acc=f"{val_acc:.3f}", loss=f"{train_loss:.3f}")  # pragma: no mutate (display only)
            if on_epoch is not None and on_epoch(stats):
                result.status = TrainStatus.STOPPED
                break
    finally:
        slot.close()
        result.paused_s = slot.paused_s
        if bar is not None:
            bar.close()
    result.train_seconds = train_time
    done_steps = steps_per_epoch * (len(result.epochs) + (result.status == TrainStatus.DIVERGED))
    result.images_per_s = done_steps * batch / train_time if train_time else 0.0
    model.to(memory_format=torch.contiguous_format)
    return result
