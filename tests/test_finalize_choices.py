"""finalize's choices with seeds that differ on purpose: a scripted trainer and evaluator
give each seed a validation and a test accuracy whose orders disagree, so a rule that
picks by test accuracy, or reports the population standard deviation, cannot pass."""

import statistics

import pytest
import torch
from safetensors.torch import load_file

from cnnsearch import finalize as finalize_module
from cnnsearch.artifacts import download_weights
from cnnsearch.cli import main
from cnnsearch.errors import CnnSearchError
from cnnsearch.finalize import finalize
from cnnsearch.recipe import load_recipe
from cnnsearch.results import open_study
from cnnsearch.train import EpochStats, Evaluation, TrainResult, TrainStatus
from tests.study_helpers import write_recipe

# per seed: validation accuracy (what chooses) and test accuracy (only scored); the orders
# disagree: seed 2 is best on validation, seed 0 on test
VAL = [0.80, 0.70, 0.90, 0.85]
TEST = [0.95, 0.60, 0.75, 0.65]
BALANCED = [0.90, 0.55, 0.70, 0.60]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("final")
    path = write_recipe(folder, trials=1, epochs=1)
    assert main(["search", str(path), "--quiet"]) == 0
    return load_recipe(path)


class Seeds(list):
    """The seeds trained, in order, with ``calls``."""


@pytest.fixture
def scripted(monkeypatch):
    seeds = Seeds()
    seeds.calls = []  # (epochs, progress, the data's device) of each training
    seeds.autocast = []  # of each test evaluation

    def train(model, data, cfg, progress=None):
        seeds.append(cfg.seed)
        seeds.calls.append((cfg.epochs, progress, data.x_train.device.type))
        with torch.no_grad():  # the weights say which seed trained them
            for p in model.parameters():
                p.fill_(float(cfg.seed))
        stats = EpochStats(1, 0.1, 0.2, VAL[cfg.seed], 0.01)
        return TrainResult(TrainStatus.OK, epochs=[stats], device="cpu", batch_size=cfg.batch_size)

    def evaluate_metrics(model, x, y, **kwargs):
        seeds.autocast.append(kwargs.get("autocast"))
        seed = int(next(model.parameters()).flatten()[0].item())
        return Evaluation(0.3, TEST[seed], BALANCED[seed])

    monkeypatch.setattr(finalize_module, "train", train)
    monkeypatch.setattr(finalize_module, "evaluate_metrics", evaluate_metrics)
    return seeds


def test_the_kept_seed_is_the_best_on_validation_not_on_test(recipe, scripted, tmp_path):
    study = open_study(recipe.storage, recipe.name)
    number, final = finalize(study, recipe, which="0", seeds=4, epochs=1)
    assert scripted == [0, 1, 2, 3]
    assert final["best_seed"] == 2 != max(range(4), key=TEST.__getitem__)
    # the kept weights are seed 2's: the one validation chose
    download_weights(final["weights"], recipe.artifacts, tmp_path / "w.safetensors", what="weights")
    assert all(float(t.flatten()[0]) == 2.0 for t in load_file(tmp_path / "w.safetensors").values())
    assert final["val_accuracies"] == VAL and final["test_accuracies"] == TEST
    assert final["test_balanced_accuracies"] == BALANCED
    assert final["test_balanced_accuracy_mean"] == statistics.fmean(BALANCED)


def test_the_spread_is_the_sample_standard_deviation_and_recorded_as_reported(recipe, scripted):
    study = open_study(recipe.storage, recipe.name)
    number, final = finalize(study, recipe, which="0", seeds=4, epochs=1)
    assert final["test_accuracy_mean"] == statistics.fmean(TEST)
    assert final["test_accuracy_std"] == pytest.approx(statistics.stdev(TEST), abs=1e-12)
    assert abs(final["test_accuracy_std"] - statistics.pstdev(TEST)) > 0.01  # the two rules differ here
    stored = open_study(recipe.storage, recipe.name).trials[number].user_attrs["final"]
    assert stored == final  # exactly what it reports


def test_a_tie_on_validation_keeps_the_first_seed(recipe, scripted, monkeypatch):
    monkeypatch.setattr(f"{__name__}.VAL", [0.8, 0.8, 0.7, 0.6])
    study = open_study(recipe.storage, recipe.name)
    _, final = finalize(study, recipe, which="0", seeds=4, epochs=1)
    assert final["best_seed"] == 0


def test_what_is_recorded_says_how_long_and_how_many_seeds(recipe, scripted):
    study = open_study(recipe.storage, recipe.name)
    _, final = finalize(study, recipe, which="0", seeds=2, epochs=1)
    assert (final["epochs"], final["seeds"], final["best_seed"]) == (1, 2, 0)
    assert final["test_accuracy_std"] == pytest.approx(statistics.stdev(TEST[:2]), abs=1e-12)  # two seeds: a spread
    _, final = finalize(study, recipe, which="0", seeds=1, epochs=1)
    assert (final["seeds"], final["test_accuracy_std"]) == (1, 0.0)  # one seed: no spread, not an error


@pytest.mark.parametrize("seeds, epochs", [(0, 1), (1, 0)])
def test_no_seed_or_no_epoch_is_refused_before_any_training(recipe, scripted, seeds, epochs):
    study = open_study(recipe.storage, recipe.name)
    with pytest.raises(CnnSearchError, match=r"^--seeds and --epochs must be at least 1$"):
        finalize(study, recipe, which="0", seeds=seeds, epochs=epochs)
    assert scripted == []


class _Moved:
    """Data that records where it was asked to move and stays on the CPU (no GPU here)."""

    def __init__(self, data, moves):
        self.data, self.moves = data, moves

    def description(self):
        return self.data.description()

    def to(self, device):
        self.moves.append(torch.device(device).type)
        return self.data


@pytest.mark.parametrize("device", ["meta", "cuda"])
def test_by_default_three_times_the_search_s_epochs_without_progress_bars_on_the_resolved_device(
        recipe, scripted, monkeypatch, device):
    """Autocast on a GPU only; the data moved to the device training runs on."""
    moves, load = [], finalize_module.load_data
    monkeypatch.setattr(finalize_module, "load_data", lambda *a, **k: _Moved(load(*a, **k), moves))
    monkeypatch.setattr(finalize_module, "resolve_device", lambda name: torch.device(device))
    study = open_study(recipe.storage, recipe.name)
    _, final = finalize(study, recipe, which="0", seeds=1)
    assert recipe.train.epochs == 1 and final["epochs"] == 3 and type(final["epochs"]) is int
    assert scripted.calls == [(3, False, "cpu")] and moves == [device]
    assert scripted.autocast == [device == "cuda"]


def test_a_seed_whose_training_fails_stops_finalize_in_one_line_recording_nothing(recipe, scripted, monkeypatch):
    def fails(model, data, cfg, progress=None):
        return TrainResult(TrainStatus.DIVERGED, epochs=[], device="cpu", batch_size=cfg.batch_size,
                           detail="loss nan at epoch 1")

    monkeypatch.setattr(finalize_module, "train", fails)
    study = open_study(recipe.storage, recipe.name)
    before = study.trials[0].user_attrs.get("final")
    with pytest.raises(CnnSearchError, match=r"^trial 0, seed 0: training ended diverged \(loss nan at epoch 1\); "
                                             r"nothing was recorded$"):
        finalize(study, recipe, which="0", seeds=2, epochs=1)
    assert open_study(recipe.storage, recipe.name).trials[0].user_attrs.get("final") == before


def test_the_space_is_read_once_not_once_a_seed(recipe, scripted, monkeypatch):
    from cnnsearch import recipe as recipe_module

    reads = []
    parse = recipe_module.parse_space
    monkeypatch.setattr(recipe_module, "parse_space", lambda *a, **k: reads.append(1) or parse(*a, **k))
    counts = []
    for seeds in (1, 3):
        reads.clear()
        finalize(open_study(recipe.storage, recipe.name), recipe, which="0", seeds=seeds, epochs=1)
        counts.append(len(reads))
    assert counts[0] == counts[1] > 0 and scripted == [0, 0, 1, 2]  # more seeds, no more reads


def test_each_seed_is_reported_as_it_ends_with_its_test_and_validation_accuracy_and_seconds(
        recipe, scripted, monkeypatch):
    from types import SimpleNamespace

    ticks = iter([100.0, 102.5, 200.0, 201.0])  # each seed's start and end
    monkeypatch.setattr(finalize_module, "time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    seen = []
    study = open_study(recipe.storage, recipe.name)
    finalize(study, recipe, which="0", seeds=2, epochs=1, on_seed=lambda *args: seen.append(args))
    assert seen == [(0, TEST[0], VAL[0], 2.5), (1, TEST[1], VAL[1], 1.0)]


def test_a_store_that_refuses_the_finalized_weights_stops_finalize_in_one_line(recipe, scripted, monkeypatch):
    from cnnsearch.artifacts import ArtifactsLost
    from cnnsearch.errors import FailingTrials

    def refuse(*args, **kwargs):
        raise ArtifactsLost(str(recipe.artifacts), "the bucket is gone")

    monkeypatch.setattr(finalize_module, "upload", refuse)
    study = open_study(recipe.storage, recipe.name)
    before = study.trials[0].user_attrs.get("final")
    message = (f"artifacts: {recipe.artifacts}: the finalized weights could not be stored (the bucket is gone); "
               "nothing was recorded")
    with pytest.raises(FailingTrials) as caught:
        finalize(study, recipe, which="0", seeds=1, epochs=1)
    assert str(caught.value) == message
    assert open_study(recipe.storage, recipe.name).trials[0].user_attrs.get("final") == before
