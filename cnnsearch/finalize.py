"""Train the chosen network properly, once the search is over.

The search trains each candidate briefly and selects on validation accuracy, so the
validation score of the winner is optimistic: it is what chose it. ``finalize`` retrains
the chosen trial's architecture and hyperparameters from scratch, longer (3x the recipe's
epochs by default), with several seeds, and scores each once on the held-out test split,
which nothing in the search ever read. The seed whose weights are kept is chosen on
validation accuracy; test accuracy is only reported. The result goes on the trial as
``user_attrs["final"]`` and the best seed's weights become an artifact of the study.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import torch

from .artifacts import ArtifactsLost, upload
from .build import build
from .data import load_data
from .errors import CnnSearchError, FailingTrials
from .export import save_weights
from .recipe import Recipe
from .report import pick_trial, trial_spec
from .storage import require_rdb_for_finished_trials, set_finished_trial_user_attrs
from .study import check_data, check_recipe
from .train import TrainStatus, evaluate_metrics, resolve_device, train

DEFAULT_SEEDS = 3
EPOCHS_FACTOR = 3  # default final training: this many times the search's epochs


def finalize(study: optuna.Study, recipe: Recipe, *, which: str = "best", epochs: int | None = None,
             seeds: int = DEFAULT_SEEDS, progress: bool = False,
             on_seed: Callable[[int, float, float, float], None] | None = None) -> tuple[int, dict]:
    """Retrain trial ``which`` (best, fastest or a number) with ``seeds`` seeds (0, 1, ...)
    for ``epochs``; return (trial number, the ``final`` dict also stored on the trial).
    ``on_seed(seed, test_accuracy, val_accuracy, seconds)`` follows each seed."""
    if seeds < 1 or (epochs is not None and epochs < 1):
        raise CnnSearchError("--seeds and --epochs must be at least 1")
    check_recipe(study, recipe)  # the same data, split and training as the search's, or nothing
    require_rdb_for_finished_trials(study)  # before any training: the result must be storable
    trial = pick_trial(study, which)
    spec = trial_spec(trial)
    epochs = epochs or EPOCHS_FACTOR * recipe.train.epochs
    device = resolve_device(recipe.train.device)
    data = load_data(recipe.dataset, **recipe.data)
    check_data(study, data.description())  # same split and statistics as the search and the export
    data = data.to(device)
    # the hyperparameters the search trained this trial with: the tuned ones from its params,
    # the ones the space fixes (never suggested, so not in params) from the space
    # (a study made before fixed values left the parameters has the recipe's batch size in
    # them too: the recipe's value is what trained, and wins here as it did there)
    space = recipe.load_space()
    tests, balanced, vals, best = [], [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            t0 = time.perf_counter()
            torch.manual_seed(seed)
            model = build(spec)
            cfg = recipe.train_config(optuna.trial.FixedTrial(dict(trial.params)), seed=seed, device=str(device),
                                      epochs=epochs, space=space)
            result = train(model, data, cfg, progress=progress)
            if result.status != TrainStatus.OK:
                raise CnnSearchError(f"trial {trial.number}, seed {seed}: training ended {result.status} "
                                     f"({result.detail}); nothing was recorded")
            _, test_acc, test_balanced = evaluate_metrics(model, data.x_test, data.y_test,
                                                          autocast=device.type == "cuda", prepare=data.prepare)
            tests.append(test_acc)
            balanced.append(test_balanced)
            vals.append(result.accuracy)
            if best is None or result.accuracy > vals[best]:  # chosen on validation: test is only scored
                best = seed
                save_weights(model, Path(tmp) / "best.safetensors")
            if on_seed is not None:
                on_seed(seed, test_acc, result.accuracy, time.perf_counter() - t0)
        try:
            weights = upload(recipe.artifacts, Path(tmp) / "best.safetensors", study)
        except ArtifactsLost as exc:
            raise FailingTrials(f"artifacts: {recipe.artifacts}: the finalized weights could not be stored "
                                f"({exc.reason}); nothing was recorded") from None
    final = _final(epochs=epochs, tests=tests, balanced=balanced, vals=vals, best=best, weights=weights)
    set_finished_trial_user_attrs(study, trial, {"final": final})
    return trial.number, final


def _final(*, epochs: int, tests: list[float], balanced: list[float], vals: list[float], best: int,
           weights: str) -> dict:
    """What finalize records on the trial (``user_attrs["final"]``) and reports: the spread
    is the sample standard deviation over the seeds (0 for one seed)."""
    return {
        "epochs": epochs,
        "seeds": len(tests),
        "test_accuracies": tests,
        "test_accuracy_mean": statistics.fmean(tests),
        "test_accuracy_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
        "test_balanced_accuracies": balanced,  # mean recall per class: what accuracy hides on imbalanced data
        "test_balanced_accuracy_mean": statistics.fmean(balanced),
        "val_accuracies": vals,
        "best_seed": best,
        "weights": weights,
    }
