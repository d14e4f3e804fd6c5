"""Training hyperparameters: the one place their names, defaults and allowed values live.

``TrainConfig`` is what the trainer takes. A search space may tune the ``SEARCHABLE``
ones (and falls back to these defaults where it is silent); a recipe's ``[train]`` section
sets the rest. No torch here, so spaces and recipes validate without importing it.
"""

from __future__ import annotations

from dataclasses import dataclass

OPTIMIZERS = ("adamw", "adam", "sgd")  # in the order error messages list them


@dataclass
class TrainConfig:
    epochs: int = 5
    lr: float = 3e-3  # peak learning rate: linear warm-up over 10% of steps, then linear decay to 0
    batch_size: int = 128
    weight_decay: float = 5e-4  # on weights only: biases and norm parameters get none
    optimizer: str = "adamw"  # one of OPTIMIZERS; sgd is Nesterov with momentum
    momentum: float = 0.9  # sgd only
    label_smoothing: float = 0.0
    augment: bool = False  # random crop (pad 2) + horizontal flip, on the device
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    channels_last: bool = True  # NHWC: faster convolutions with cuDNN and with oneDNN on CPUs
    eval_batch_size: int = 1024

    @classmethod
    def from_params(cls, params: dict, **overrides) -> TrainConfig:
        known = {k: v for k, v in params.items() if k in cls.__dataclass_fields__}
        return cls(**{**known, **overrides})


# What a search space's [train] table may tune; Optuna parameter names are these keys.
SEARCHABLE = ("lr", "batch_size", "weight_decay", "optimizer", "label_smoothing", "momentum")


def searchable_defaults() -> dict:
    """The value of each SEARCHABLE hyperparameter when a space leaves it out."""
    return {k: getattr(TrainConfig, k) for k in SEARCHABLE}
