"""Every limit and every failure status through the objective and run_worker, in process.

Latency is faked (a chosen median, so a limit is crossed or not by construction) and so is
training where a status needs it (diverged, out of memory, a curve of chosen accuracies);
one test trains for real. Each test runs a few trials of an 8x8 network in about a second.
"""

import math
import os
import subprocess
import sys
import textwrap
import time
import warnings

import optuna
import pytest
import torch
from optuna.trial import TrialState

import cnnsearch.objective as objective_mod
from cnnsearch import latency_remote
from cnnsearch.build import build
from cnnsearch.errors import FailingTrials, RecipeError
from cnnsearch.latency import Latency
from cnnsearch.objective import Objective
from cnnsearch.recipe import load_recipe
from cnnsearch.recovery import _alive, _start_time, _stat
from cnnsearch.shapes import check
from cnnsearch.study import (
    AllInfeasible,
    _reason_kind,
    infeasible_summary,
    make_sampler,
    open_study,
    open_worker,
    run_worker,
    sampler_seed,
)
from cnnsearch.train import EpochStats, TrainResult, TrainStatus

# one fixed network: conv 3x3 (1 -> 4 channels, padding 1) on 8x8 digits, then the head
FIXED = """
depth = 1
[block]
out_channels = 4
kernel_size = 3
padding = 1
pool = "none"
[head]
hidden_layers = 0
[train]
lr = 0.005
batch_size = 64
"""

# three 2x2 max pools take 8x8 to 1x1; a 3x3 kernel without padding then has no room
NO_ROOM = """
depth = 4
[block]
out_channels = 4
kernel_size = 3
padding = 0
pool = "max"
[train]
lr = 0.005
batch_size = 64
"""


def recipe_file(tmp_path, *, space=FIXED, seed=0, epochs=1, objectives=None, extra="", name="t"):
    (tmp_path / "space.toml").write_text(textwrap.dedent(space))
    top = f"objectives = {list(objectives)!r}\n".replace("'", '"') if objectives else ""
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nspace = "space.toml"\ndataset = "digits"\ntrials = 4\nseed = {seed}\n{top}'
                    f'[train]\nepochs = {epochs}\ndevice = "cpu"\n' + textwrap.dedent(extra))
    return load_recipe(path)


class FakeMeasure:
    """``measure`` that answers ``median_ms`` and remembers what it was asked."""

    def __init__(self, median_ms=1.0):
        self.median_ms, self.calls = median_ms, []

    def __call__(self, model, input_shape, **kw):
        self.calls.append((tuple(input_shape), kw))
        return Latency(median_ms=self.median_ms, iqr_ms=0.25, runs=30, calls_per_run=1, settled=True,
                       batch_size=kw.get("batch_size", 1), fingerprint={"device": "fake"},
                       runtime=kw.get("runtime", "torch"))


class FakeTrain:
    """``train`` that reports the chosen validation accuracies epoch by epoch (``steps``
    optimizer steps per epoch), honours the epoch callback, and ends with ``status``."""

    def __init__(self, accuracies=(0.5,), status=TrainStatus.OK, detail="", steps=7, restart_after=None):
        self.accuracies, self.status, self.detail, self.steps = list(accuracies), status, detail, steps
        self.restart_after = restart_after  # epochs to run, then start over (an OOM retry)
        self.cfgs = []

    def __call__(self, model, data, cfg, *, on_epoch=None, progress=False):
        self.cfgs.append(cfg)
        result = TrainResult(TrainStatus.OK, device="cpu", batch_size=cfg.batch_size, train_seconds=0.01)
        if self.restart_after:
            for e in range(1, self.restart_after + 1):
                on_epoch(EpochStats(e, 1.0, 1.0, 0.01 * e, 0.0, 0.0, e * self.steps))
        for e, acc in enumerate(self.accuracies, 1):
            stats = EpochStats(e, 1.0, 1.0, acc, 0.0, 0.0, e * self.steps)
            result.epochs.append(stats)
            if on_epoch is not None and on_epoch(stats):
                result.status = TrainStatus.STOPPED
                return result
        if self.status != TrainStatus.OK:
            result.status, result.detail = self.status, self.detail
        return result


def make_objective(recipe, monkeypatch, *, latency_ms=1.0, train=None):
    fake = FakeMeasure(latency_ms)
    monkeypatch.setattr(latency_remote, "measure", fake)  # what objective's time_candidate calls here
    if train is not None:
        monkeypatch.setattr(objective_mod, "train", train)
    return Objective.create(recipe), fake


def study_of(recipe):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=recipe.directions)


def one_trial(recipe, objective, study=None):
    study = study or study_of(recipe)
    study.optimize(objective, n_trials=1, catch=(Exception,))
    return study, study.trials[-1]


def fixed_sizes(recipe):
    objective = Objective.create(recipe)
    spec = objective.space.sample(optuna.trial.FixedTrial({}), input=objective.data.input_shape,
                                  num_classes=objective.data.num_classes)
    return spec, check(spec)


# --- limits ----------------------------------------------------------------------------------


def test_params_over_the_limit_are_rejected_untrained_and_unmeasured(tmp_path, monkeypatch):
    spec, table = fixed_sizes(recipe_file(tmp_path))
    model_params = sum(p.numel() for p in build(spec).parameters())
    assert table.params == model_params  # the table counts what the network holds
    limit = model_params - 10
    recipe = recipe_file(tmp_path, extra=f"[limits]\nmax_params = {limit}\n")
    train = FakeTrain()
    objective, measure = make_objective(recipe, monkeypatch, train=train)
    _, t = one_trial(recipe, objective)
    assert t.state == TrialState.COMPLETE and t.user_attrs["status"] == "limit"
    assert t.user_attrs["infeasible_reason"] == f"params {model_params:,} > limits.max_params {limit:,}"
    assert t.constraints == {"infeasible": pytest.approx(model_params / limit - 1)}
    assert t.values == [0.0, math.inf]  # worst accuracy; latency never measured
    assert t.user_attrs["params"] == model_params and t.user_attrs["flops"] == table.flops
    assert measure.calls == [] and train.cfgs == []
    assert "latency_ms" not in t.user_attrs and "accuracy" not in t.user_attrs


def test_sizes_at_their_limits_pass(tmp_path, monkeypatch):
    spec, table = fixed_sizes(recipe_file(tmp_path))
    recipe = recipe_file(tmp_path, extra=f"[limits]\nmax_params = {table.params}\nmax_flops = {table.flops}\n"
                                         f"max_memory_bytes = {table.peak_activation_bytes}\n")
    objective, _ = make_objective(recipe, monkeypatch, train=FakeTrain())
    _, t = one_trial(recipe, objective)
    assert t.user_attrs["status"] == "ok" and t.constraints == {"infeasible": 0.0}


def test_flops_over_the_limit_are_rejected(tmp_path, monkeypatch):
    _, table = fixed_sizes(recipe_file(tmp_path))
    limit = table.flops // 2
    recipe = recipe_file(tmp_path, objectives=["accuracy", "flops", "params", "latency_ms"],
                         extra=f"[limits]\nmax_flops = {limit}\nmax_params = {table.params}\n")
    train = FakeTrain()
    objective, measure = make_objective(recipe, monkeypatch, train=train)
    _, t = one_trial(recipe, objective)
    assert t.state == TrialState.COMPLETE and t.user_attrs["status"] == "limit"
    assert t.user_attrs["infeasible_reason"] == f"flops {table.flops:,} > limits.max_flops {limit:,}"
    assert t.constraints == {"infeasible": pytest.approx(table.flops / limit - 1)}
    # sizes known before the rejection are its objective values; latency was never measured
    assert t.values == [0.0, table.flops, table.params, math.inf]
    assert measure.calls == [] and train.cfgs == []


def test_params_are_checked_before_flops(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, extra="[limits]\nmax_params = 1\nmax_flops = 1\n")
    objective, _ = make_objective(recipe, monkeypatch, train=FakeTrain())
    _, t = one_trial(recipe, objective)
    assert t.user_attrs["infeasible_reason"].startswith("params ")
    assert "limits.max_params 1" in t.user_attrs["infeasible_reason"]


def test_a_tiny_overshoot_still_counts_as_infeasible(tmp_path, monkeypatch):
    """The constraint is positive however small the overshoot (samplers read > 0 as infeasible)."""
    _, table = fixed_sizes(recipe_file(tmp_path))
    recipe = recipe_file(tmp_path, extra="[limits]\nmax_latency_ms = 1.0\n")
    objective, _ = make_objective(recipe, monkeypatch, latency_ms=1.0 + 1e-13, train=FakeTrain())
    _, t = one_trial(recipe, objective)
    assert t.user_attrs["status"] == "limit" and 0 < t.constraints["infeasible"] <= 1e-9 * 1.0001
    assert t.constraints["infeasible"] == pytest.approx(1e-9)


def test_latency_over_the_limit_is_measured_but_never_trained(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, objectives=["accuracy", "params", "latency_ms"],
                         extra="[limits]\nmax_latency_ms = 0.5\n")
    _, table = fixed_sizes(recipe)
    train = FakeTrain()
    objective, measure = make_objective(recipe, monkeypatch, latency_ms=2.0, train=train)
    _, t = one_trial(recipe, objective)
    assert t.state == TrialState.COMPLETE and t.user_attrs["status"] == "limit"
    reason = t.user_attrs["infeasible_reason"]
    assert reason.startswith("latency 2.000 ms > limits.max_latency_ms 0.5")
    assert t.constraints == {"infeasible": pytest.approx(2.0 / 0.5 - 1)}
    assert t.values == [0.0, table.params, 2.0]
    assert t.user_attrs["latency_ms"] == 2.0 and t.user_attrs["latency_iqr_ms"] == 0.25
    assert len(measure.calls) == 1 and train.cfgs == []
    assert "accuracy" not in t.user_attrs and "curve" not in t.user_attrs


def test_latency_at_the_limit_trains(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, extra="[limits]\nmax_latency_ms = 2.0\n")
    train = FakeTrain([0.25])
    objective, _ = make_objective(recipe, monkeypatch, latency_ms=2.0, train=train)
    _, t = one_trial(recipe, objective)
    assert t.user_attrs["status"] == "ok" and len(train.cfgs) == 1 and t.values == [0.25, 2.0]


def test_latency_is_measured_as_the_recipe_says_and_once_per_architecture(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, extra='[latency]\nbatch_size = 3\nthreads = 2\ndevice = "cpu"\n')
    objective, measure = make_objective(recipe, monkeypatch, train=FakeTrain())
    study, _ = one_trial(recipe, objective)
    one_trial(recipe, objective, study)  # the same (fixed) architecture again
    assert len(measure.calls) == 1
    shape, kw = measure.calls[0]
    assert shape == (1, 8, 8)
    assert (kw["device"], kw["batch_size"], kw["threads"], kw["runtime"]) == ("cpu", 3, 2, "torch")
    latency = study.trials[1].user_attrs["latency"]
    assert latency["batch_size"] == 3 and "median_ms" not in latency and "iqr_ms" not in latency
    assert latency["runs"] == 30 and latency["settled"] is True


# --- shapes, divergence, out of memory, exceptions --------------------------------------------


def test_a_network_without_room_is_a_shape_rejection_with_its_reason(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, space=NO_ROOM, objectives=["accuracy", "params"])
    train = FakeTrain()
    objective, measure = make_objective(recipe, monkeypatch, train=train)
    _, t = one_trial(recipe, objective)
    assert t.state == TrialState.COMPLETE and t.user_attrs["status"] == "shape"
    assert "blocks[2].conv" in t.user_attrs["infeasible_reason"]
    assert t.constraints == {"infeasible": 1.0} and t.values == [0.0, math.inf]
    assert "params" not in t.user_attrs and measure.calls == [] and train.cfgs == []
    assert t.user_attrs["arch"]["blocks"] and t.user_attrs["summary"]  # what was rejected


@pytest.mark.parametrize(("train_status", "status"), [(TrainStatus.DIVERGED, "diverged"), (TrainStatus.OOM, "oom")])
def test_diverged_and_out_of_memory_trainings_are_infeasible_with_their_curve(tmp_path, monkeypatch, train_status,
                                                                              status):
    recipe = recipe_file(tmp_path, epochs=3)
    train = FakeTrain([0.3, 0.4], status=train_status, detail=f"{status} in epoch 3", steps=5)
    objective, _ = make_objective(recipe, monkeypatch, latency_ms=1.5, train=train)
    _, t = one_trial(recipe, objective)
    assert t.state == TrialState.COMPLETE and t.user_attrs["status"] == status
    assert t.user_attrs["infeasible_reason"] == f"{status} in epoch 3"
    assert t.constraints == {"infeasible": 1.0} and t.values == [0.0, 1.5]  # worst accuracy, whatever the curve said
    assert t.user_attrs["curve"] == [0.3, 0.4] and t.user_attrs["epochs"] == 2
    assert t.user_attrs["accuracy"] == 0.4 and t.user_attrs["steps_per_epoch"] == 5
    assert "weights" not in t.user_attrs


def test_an_exception_is_a_fail_with_its_type_and_a_bounded_reason(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path)

    def broken(*args, **kwargs):
        raise ValueError("x" * 1000)

    objective, _ = make_objective(recipe, monkeypatch, train=broken)
    _, t = one_trial(recipe, objective)
    assert t.state == TrialState.FAIL
    assert t.user_attrs["status"] == "error"
    assert t.user_attrs["fail_reason"] == ("ValueError: " + "x" * 1000)[:500]
    assert t.user_attrs["params"] > 0 and t.user_attrs["latency_ms"] == 1.0  # what came before is kept


def test_ctrl_c_is_not_recorded_as_an_error(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    objective, _ = make_objective(recipe, monkeypatch, train=interrupted)
    study = study_of(recipe)
    with pytest.raises(KeyboardInterrupt):
        study.optimize(objective, n_trials=1)
    (t,) = study.trials
    assert "fail_reason" not in t.user_attrs and t.user_attrs.get("status") != "error"
    assert t.user_attrs["latency_ms"] == 1.0  # what it had done is recorded


# --- a trained trial's record -----------------------------------------------------------------


def test_a_trained_trial_records_everything_and_its_weights(tmp_path, monkeypatch):
    from optuna.artifacts import FileSystemArtifactStore, download_artifact
    from safetensors.torch import load_file

    recipe = recipe_file(tmp_path, epochs=2, objectives=["accuracy", "latency_ms", "params", "flops"])
    spec, table = fixed_sizes(recipe)
    objective, _ = make_objective(recipe, monkeypatch, latency_ms=0.75)
    objective.run_attrs = {"sampler_seed": 17, "worker": "w1"}
    seen = []
    objective.on_epoch = lambda *args: seen.append(args)
    _, t = one_trial(recipe, objective)
    a = t.user_attrs
    assert t.state == TrialState.COMPLETE and a["status"] == "ok" and t.constraints == {"infeasible": 0.0}
    assert t.values == [a["accuracy"], 0.75, table.params, table.flops]
    assert a["arch"] == spec.to_dict() and a["summary"] == spec.summary
    assert a["fingerprint"] == recipe.fingerprint()
    assert a["versions"]["torch"] == torch.__version__ and a["versions"]["optuna"] == optuna.__version__
    assert set(a["versions"]) == {"cnnsearch", "torch", "optuna", "python"}
    assert a["sampler_seed"] == 17 and a["worker"] == "w1"
    assert a["params"] == table.params and a["flops"] == table.flops
    assert len(a["curve"]) == 2 and a["accuracy"] == a["curve"][-1] and a["epochs"] == 2
    assert 0.0 < a["accuracy"] <= 1.0 and a["train_seconds"] > 0 and a["device"] == "cpu"
    n_train = len(objective.data.y_train)
    assert a["steps_per_epoch"] == n_train // 64
    assert [(s[0], s[1], s[2], s[3]) for s in seen] == [(0, 1, 2, a["curve"][0]), (0, 2, 2, a["curve"][1])]
    assert all(s[4] >= 0 for s in seen)
    assert all(objective.timings[k] > 0 for k in ("build", "latency", "train"))
    path = tmp_path / "w.safetensors"
    download_artifact(artifact_store=FileSystemArtifactStore(recipe.artifacts), artifact_id=a["weights"],
                      file_path=str(path))
    assert load_file(path).keys() == build(spec).state_dict().keys()


def test_each_trial_starts_from_the_seed_the_recipe_and_its_number_give(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, seed=3)
    spec, _ = fixed_sizes(recipe)
    train = FakeTrain()  # leaves the weights as built
    objective, _ = make_objective(recipe, monkeypatch, train=train)
    saved = []
    monkeypatch.setattr(objective_mod, "save_weights", lambda model, path: saved.append(
        {k: v.clone() for k, v in model.state_dict().items()}) or path.write_bytes(b"x"))
    study, _ = one_trial(recipe, objective)
    one_trial(recipe, objective, study)
    for number, weights in enumerate(saved):
        seed = 3 * 1_000_003 + number
        torch.manual_seed(seed)
        expected = build(spec).state_dict()
        assert all(torch.equal(weights[k], expected[k]) for k in expected)
        assert train.cfgs[number].seed == seed
    assert any(not torch.equal(saved[0][k], saved[1][k]) for k in saved[0])  # each trial its own start


def test_training_follows_the_recipe(tmp_path, monkeypatch):
    recipe_file(tmp_path)  # the space
    path = tmp_path / "b.toml"
    path.write_text('name = "b"\nspace = "space.toml"\ndataset = "digits"\n[train]\nepochs = 3\ndevice = "cpu"\n'
                    'batch_size = 32\naugment = true\n')
    recipe = load_recipe(path)
    train = FakeTrain([0.1, 0.2, 0.3])
    objective, _ = make_objective(recipe, monkeypatch, train=train)
    one_trial(recipe, objective)
    (cfg,) = train.cfgs
    assert (cfg.epochs, cfg.batch_size, cfg.augment, cfg.device, cfg.lr) == (3, 32, True, "cpu", 0.005)
    plain = FakeTrain()
    objective, _ = make_objective(recipe_file(tmp_path, name="p"), monkeypatch, train=plain)
    one_trial(objective.recipe, objective)
    assert plain.cfgs[0].batch_size == 64 and plain.cfgs[0].augment is False  # the space's batch size


def test_a_restarted_training_keeps_only_its_last_curve(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, epochs=2)
    train = FakeTrain([0.6, 0.7], restart_after=2)  # two epochs, an OOM, then two again at half the batch
    objective, _ = make_objective(recipe, monkeypatch, train=train)
    _, t = one_trial(recipe, objective)
    assert t.user_attrs["curve"] == [0.6, 0.7]


def test_a_retried_trial_records_its_new_owner_first(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path)
    writes = []
    real = objective_mod.set_user_attrs
    monkeypatch.setattr(objective_mod, "set_user_attrs", lambda trial, attrs: writes.append(dict(attrs)) or
                        real(trial, attrs))
    objective, _ = make_objective(recipe, monkeypatch, train=FakeTrain())
    objective.run_attrs = {"owner": {"pid": 42}, "worker": "0"}
    _, t = one_trial(recipe, objective)
    assert writes[0] == {"owner": {"pid": 42}}
    assert t.user_attrs["owner"] == {"pid": 42}
    plain, _ = make_objective(recipe, monkeypatch, train=FakeTrain())
    writes.clear()
    one_trial(recipe, plain)
    assert all("owner" not in w for w in writes)


# --- early stopping through the objective -----------------------------------------------------

ES = "[early_stopping]\nenabled = true\nrungs = [0.5]\nkeep = 0.2\n"


def peer(recipe, *, curve=(1.0, 1.0, 1.0, 1.0), status="ok", steps=7, **changed):
    attrs = {"curve": list(curve), "latency_ms": 0.0, "params": 0, "flops": 0, "steps_per_epoch": steps,
             "fingerprint": recipe.fingerprint(), "status": status, **changed}
    return optuna.trial.create_trial(values=[1.0, 0.0], user_attrs=attrs)


def with_peers(recipe, peers):
    study = study_of(recipe)
    for p in peers:
        study.add_trial(p)
    return study


def test_a_dominated_trial_is_stopped_at_its_rung_and_pruned(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, epochs=4, extra=ES)
    study = with_peers(recipe, [peer(recipe) for _ in range(4)])
    train = FakeTrain([0.1, 0.2, 0.3, 0.4])
    objective, _ = make_objective(recipe, monkeypatch, train=train)
    _, t = one_trial(recipe, objective, study)
    assert t.state == TrialState.PRUNED and t.user_attrs["status"] == "early_stopped"
    assert t.user_attrs["curve"] == [0.1, 0.2] and t.user_attrs["epochs"] == 2  # rung 0.5 x 4 epochs
    assert t.user_attrs["steps_per_epoch"] == 7 and "weights" not in t.user_attrs


@pytest.mark.parametrize(("objectives", "compared_on"), [(None, "latency_ms"), (["accuracy"], "nothing known")])
def test_a_stopped_trial_says_what_it_was_compared_on(tmp_path, monkeypatch, objectives, compared_on):
    recipe = recipe_file(tmp_path, epochs=4, objectives=objectives, extra=ES)
    study = optuna.create_study(directions=recipe.directions)
    for _ in range(4):
        study.add_trial(optuna.trial.create_trial(values=[1.0, 0.0][:len(recipe.directions)],
                                                  user_attrs=peer(recipe).user_attrs))
    objective, _ = make_objective(recipe, monkeypatch, train=FakeTrain([0.1, 0.2, 0.3, 0.4]))
    with pytest.raises(optuna.TrialPruned) as raised:
        objective(study.ask())
    assert str(raised.value) == (f"stopped after epoch 2 of 4: an earlier trial as small on {compared_on} led by "
                                 f">= {recipe.early_stopping.margin}, and it was not in the top 20% of its peers")


@pytest.mark.parametrize("change", [
    {"status": "diverged"}, {"status": "oom"}, {"status": "limit"}, {"fingerprint": "other"}, {"curve": []},
    {"steps_per_epoch": 0}, {"latency_ms": None},
])
def test_only_finished_comparable_trials_are_peers(tmp_path, monkeypatch, change):
    recipe = recipe_file(tmp_path, epochs=4, extra=ES)
    peers = [peer(recipe, **change) for _ in range(4)]
    if change == {"latency_ms": None}:
        for p in peers:
            del p.user_attrs["latency_ms"]
    study = with_peers(recipe, peers)
    objective, _ = make_objective(recipe, monkeypatch, train=FakeTrain([0.1, 0.2, 0.3, 0.4]))
    _, t = one_trial(recipe, objective, study)
    assert t.state == TrialState.COMPLETE and t.user_attrs["status"] == "ok"


def test_early_stopped_trials_are_peers_too(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, epochs=4, extra=ES)
    study = with_peers(recipe, [peer(recipe, status="early_stopped", curve=(1.0, 1.0)) for _ in range(4)])
    objective, _ = make_objective(recipe, monkeypatch, train=FakeTrain([0.1, 0.2, 0.3, 0.4]))
    _, t = one_trial(recipe, objective, study)
    assert t.state == TrialState.PRUNED


def test_nothing_is_stopped_without_accuracy_among_the_objectives(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, epochs=4, objectives=["latency_ms", "params"], extra=ES)
    study = optuna.create_study(directions=recipe.directions)
    for _ in range(4):
        study.add_trial(optuna.trial.create_trial(values=[0.0, 0.0], user_attrs=peer(recipe).user_attrs))
    train = FakeTrain([0.1, 0.2, 0.3, 0.4])
    objective, _ = make_objective(recipe, monkeypatch, train=train)
    _, t = one_trial(recipe, objective, study)
    assert t.state == TrialState.COMPLETE and t.user_attrs["epochs"] == 4


def test_nothing_is_stopped_with_early_stopping_off(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, epochs=4, extra=ES.replace("true", "false"))
    study = with_peers(recipe, [peer(recipe) for _ in range(4)])
    objective, _ = make_objective(recipe, monkeypatch, train=FakeTrain([0.1, 0.2, 0.3, 0.4]))
    _, t = one_trial(recipe, objective, study)
    assert t.state == TrialState.COMPLETE and t.user_attrs["epochs"] == 4


def test_a_trial_is_compared_only_at_its_rungs(tmp_path, monkeypatch):
    """Peers that lead only at epoch 3 (not a rung of 4 epochs at 0.5) stop nothing."""
    recipe = recipe_file(tmp_path, epochs=4, extra=ES)
    study = with_peers(recipe, [peer(recipe, curve=(0.0, 0.0, 1.0, 1.0)) for _ in range(4)])
    objective, _ = make_objective(recipe, monkeypatch, train=FakeTrain([0.1, 0.2, 0.3, 0.4]))
    _, t = one_trial(recipe, objective, study)
    assert t.state == TrialState.COMPLETE


def test_the_margin_and_keep_of_the_recipe_decide(tmp_path, monkeypatch):
    # peers at 0.25 lead a trial at 0.2 by 0.05: a margin of 0.1 spares it
    margin = recipe_file(tmp_path, epochs=4, extra=ES + "margin = 0.1\n", name="m")
    study = with_peers(margin, [peer(margin, curve=(0.25,) * 4) for _ in range(4)])
    objective, _ = make_objective(margin, monkeypatch, train=FakeTrain([0.1, 0.2, 0.3, 0.4]))
    assert one_trial(margin, objective, study)[1].state == TrialState.COMPLETE
    # one peer ahead of four: keep = 0.2 of 2 points stops it, keep = 0.6 does not
    keep = recipe_file(tmp_path, epochs=4, extra=ES.replace("0.2", "0.6"), name="k")
    study = with_peers(keep, [peer(keep)])
    objective, _ = make_objective(keep, monkeypatch, train=FakeTrain([0.1, 0.2, 0.3, 0.4]))
    assert one_trial(keep, objective, study)[1].state == TrialState.COMPLETE
    stop = recipe_file(tmp_path, epochs=4, extra=ES, name="s")
    study = with_peers(stop, [peer(stop)])
    objective, _ = make_objective(stop, monkeypatch, train=FakeTrain([0.1, 0.2, 0.3, 0.4]))
    assert one_trial(stop, objective, study)[1].state == TrialState.PRUNED


def test_the_pruned_message_says_where_and_why(tmp_path, monkeypatch):
    recipe = recipe_file(tmp_path, epochs=4, extra=ES + "margin = 0.05\n")
    study = with_peers(recipe, [peer(recipe) for _ in range(4)])
    objective, _ = make_objective(recipe, monkeypatch, train=FakeTrain([0.1, 0.2, 0.3, 0.4]))
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned) as info:
        objective(trial)
    message = str(info.value)
    assert "after epoch 2 of 4" in message and "latency_ms" in message and "0.05" in message and "20%" in message


# --- run_worker's budget and stop rules -------------------------------------------------------


def scripted(kinds):
    """An objective whose n-th trial is kinds[n]: 'ok', 'limit', 'shape' or 'fail'."""
    from cnnsearch.trials import CONSTRAINT

    def objective(trial):
        kind = kinds[min(trial.number, len(kinds) - 1)]
        if kind == "fail":
            trial.set_user_attr("fail_reason", f"RuntimeError: trial {trial.number}")
            raise RuntimeError(f"trial {trial.number}")
        if kind == "ok":
            trial.set_user_attr("status", "ok")
            trial.set_constraint(CONSTRAINT, 0.0)
            return [0.5, 1.0]
        trial.set_user_attr("status", kind)
        reason = "params 9 > limits.max_params 3" if kind == "limit" else "blocks[1].conv: no room"
        trial.set_user_attr("infeasible_reason", reason)
        trial.set_constraint(CONSTRAINT, 1.0)
        return [0.0, math.inf]

    return objective


def worker_study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize"])


def test_the_worker_stops_at_its_budget_and_reports_each_trial():
    study, seen = worker_study(), []
    run_worker(study, scripted(["ok"]), until=3, on_trial=lambda s, t: seen.append((s is study, t.number, t.state)))
    assert len(study.trials) == 3 and seen == [(True, n, TrialState.COMPLETE) for n in range(3)]
    run_worker(study, scripted(["ok"]), until=3)  # nothing owed
    assert len(study.trials) == 3
    run_worker(study, scripted(["ok"]), until=5)
    assert len(study.trials) == 5


def test_failed_trials_do_not_count_against_the_budget():
    study = worker_study()
    run_worker(study, scripted(["fail", "ok", "fail", "ok"]), until=2)
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL,
                                               TrialState.COMPLETE]


@pytest.mark.parametrize("queued, until, finished", [
    (1, 2, 2),  # the re-queued trial fills the budget
    (2, 2, 3),  # the budget met while a re-queued trial waits: the worker runs it before stopping
    (1, 1, 2),  # the budget already met when the worker starts (a resumed run after recovery)
    (12, 1, 13),  # more owed than the loop's spare room: every one still runs
])
def test_a_requeued_trial_is_run_even_when_the_budget_is_met(queued, until, finished):
    study = worker_study()
    run_worker(study, scripted(["ok"]), until=1)
    for _ in range(queued):
        study.enqueue_trial({})
    run_worker(study, scripted(["ok"]), until=until)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * finished


@pytest.mark.parametrize("kind", ["limit", "shape"])
def test_all_rejected_stops_after_infeasible_after_trials_and_says_why(kind):
    study = worker_study()
    with pytest.raises(AllInfeasible) as info:
        run_worker(study, scripted([kind]), until=50, infeasible_after=4)
    assert len(study.trials) == 4
    why = "limits.max_params" if kind == "limit" else "blocks[1].conv"
    assert "all 4 candidates so far were infeasible" in str(info.value) and f"{why} (4)" in str(info.value)


def test_the_infeasible_guard_reads_the_trials_only_until_a_feasible_one(monkeypatch):
    """The guard reads every trial: once a feasible trial is seen it is not run again, so
    a long study does not read its whole history after each trial."""
    from cnnsearch import study as study_module

    guard, calls = study_module._Watch._all_infeasible_guard, []
    monkeypatch.setattr(study_module._Watch, "_all_infeasible_guard",
                        lambda self, study: calls.append(len(study.trials)) or guard(self, study))
    run_worker(worker_study(), scripted(["limit", "limit", "ok", "limit"]), until=6, infeasible_after=5)
    assert calls == [1, 2]  # after each of the two rejected trials; none after the feasible one


def test_a_feasible_trial_anywhere_disarms_the_infeasible_guard():
    study = worker_study()
    run_worker(study, scripted(["limit", "ok", "limit"]), until=8, infeasible_after=3)
    assert len(study.trials) == 8
    study = worker_study()  # a feasible trial from before this worker started counts too
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0], constraints={"infeasible": 0.0}))
    run_worker(study, scripted(["limit"]), until=6, infeasible_after=2)
    assert len(study.trials) == 6


def test_a_trained_but_infeasible_trial_is_no_rejection():
    """Diverged trials were trained: the guard is for candidates the recipe rules out."""
    from cnnsearch.trials import CONSTRAINT

    def diverging(trial):
        trial.set_user_attr("status", "diverged")
        trial.set_constraint(CONSTRAINT, 1.0)
        return [0.0, 1.0]

    study = worker_study()
    run_worker(study, diverging, until=5, infeasible_after=2)
    assert len(study.trials) == 5


def test_a_complete_trial_is_feasible_unless_its_constraint_says_otherwise():
    """A trial added by hand (study.add_trial) records no constraint: it counts as feasible,
    on the front and against the infeasible guard."""
    from cnnsearch.trials import CONSTRAINT, is_feasible

    create = optuna.trial.create_trial
    assert is_feasible(create(values=[0.5, 1.0]))
    assert is_feasible(create(values=[0.5, 1.0], constraints={CONSTRAINT: 0.0}))
    assert not is_feasible(create(values=[0.5, 1.0], constraints={CONSTRAINT: 1e-9}))
    assert not is_feasible(create(state=TrialState.PRUNED, constraints={CONSTRAINT: 0.0}))

def test_consecutive_failures_stop_the_worker_with_the_last_reason():
    study = worker_study()
    with pytest.raises(FailingTrials) as info:
        run_worker(study, scripted(["fail"]), until=20, max_consecutive_failures=3)
    assert len(study.trials) == 3
    assert "3 trials in a row failed" in str(info.value) and "RuntimeError: trial 2" in str(info.value)


def test_a_success_resets_the_failure_count():
    study = worker_study()
    run_worker(study, scripted(["fail", "fail", "ok", "fail", "fail", "ok"]), until=3, max_consecutive_failures=3)
    assert len(study.trials) == 7


def test_the_failure_count_does_not_stop_below_its_threshold():
    study = worker_study()
    with pytest.raises(FailingTrials):
        run_worker(study, scripted(["fail", "fail", "ok", "fail"]), until=20, max_consecutive_failures=2)
    assert len(study.trials) == 2


def test_a_rejection_between_failures_resets_the_count():
    study = worker_study()
    run_worker(study, scripted(["fail", "limit", "fail", "ok"]), until=3, max_consecutive_failures=2,
               infeasible_after=50)
    assert len(study.trials) == 5


def test_the_default_guards():
    study = worker_study()
    with pytest.raises(FailingTrials):
        run_worker(study, scripted(["fail"]), until=50)
    assert len(study.trials) == 5
    study = worker_study()
    with pytest.raises(AllInfeasible):
        run_worker(study, scripted(["limit"]), until=50)
    assert len(study.trials) == 20


def test_the_timeout_ends_the_worker():
    import time

    def slow(trial):
        time.sleep(0.2)
        return scripted(["ok"])(trial)

    study = worker_study()
    run_worker(study, slow, until=50, timeout=0.3)
    # each trial sleeps 0.2 s: a second starts by 0.3 s on a quiet machine, a third never
    assert len(study.trials) in (1, 2)


def test_reason_kinds_and_the_summary():
    assert _reason_kind("params 12,345 > limits.max_params 3,000") == "limits.max_params"
    assert _reason_kind("latency 2.000 ms > limits.max_latency_ms 1.0") == "limits.max_latency_ms"
    assert _reason_kind("blocks[1].conv: kernel 5 is larger: than 4") == "blocks[1].conv"
    assert _reason_kind("x > 3: odd") == "x > 3"

    def t(reason, state=TrialState.COMPLETE):
        attrs = {"infeasible_reason": reason} if reason else {}
        return optuna.trial.create_trial(state=state, values=[0.0] if state == TrialState.COMPLETE else None,
                                         user_attrs=attrs)

    trials = ([t("params 9 > limits.max_params 3")] * 3 + [t("flops 9 > limits.max_flops 3")] * 2
              + [t("blocks[0].conv: no")] * 4 + [t("stem: x")] + [t(None)] * 5
              + [t("params 9 > limits.max_params 3", TrialState.PRUNED)] * 9)
    assert infeasible_summary(trials) == "? (5); blocks[0].conv (4); limits.max_params (3)"


# --- opening a study, samplers, owners --------------------------------------------------------


@pytest.mark.parametrize(("name", "cls"), [("tpe", optuna.samplers.TPESampler),
                                           ("nsga2", optuna.samplers.NSGAIISampler),
                                           ("gp", optuna.samplers.GPSampler),
                                           ("random", optuna.samplers.RandomSampler)])
def test_each_sampler_is_seeded(name, cls):
    def draws(seed):
        study = optuna.create_study(sampler=make_sampler(name, seed))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        return [t.params["x"] for t in study.trials]

    assert type(make_sampler(name, 1)) is cls
    assert draws(5) == draws(5) != draws(6)


def test_tpe_is_multivariate_and_grouped():
    tpe = make_sampler("tpe", 0)
    assert tpe._multivariate and tpe._group  # conditional spaces (depth decides which blocks exist)


def test_an_unknown_sampler_is_named():
    with pytest.raises(RecipeError, match="'cmaes'"):
        make_sampler("cmaes", 0)


def test_sampler_seeds():
    assert sampler_seed(7, 0, "0") == 7
    derived = {sampler_seed(7, 0, "1"), sampler_seed(7, 3, "0"), sampler_seed(8, 3, "0"), sampler_seed(7, 3, "1")}
    assert len(derived) == 4 and 7 not in derived
    assert all(0 <= s < 2**32 for s in derived) and sampler_seed(7, 3, "1") == sampler_seed(7, 3, "1")


def test_open_study_creates_then_resumes_with_another_seed(tmp_path):
    recipe = recipe_file(tmp_path, seed=11, objectives=["accuracy", "params"])
    storage = optuna.storages.InMemoryStorage()
    seat = open_worker(recipe, storage)
    study = seat.study
    assert seat.sampler_seed == 11 and seat.worker == "0"
    assert type(study.sampler).__name__ == "EvolutionSampler"  # the default
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == ["accuracy", "params"]
    assert study.user_attrs["recipe"]["seed"] == 11
    second = open_worker(recipe, storage, worker="2")
    assert second.worker == "2" and second.sampler_seed == sampler_seed(11, 0, "2")
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0]))
    resumed = open_worker(recipe, storage)
    assert resumed.worker == f"0@{os.uname().nodename}:{os.getpid()}"
    assert resumed.sampler_seed == sampler_seed(11, 1, resumed.worker) != 11


def test_open_study_refuses_other_objectives_and_another_recipe(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    recipe = recipe_file(tmp_path)
    open_study(recipe, storage).set_user_attr("data", {"classes": 10})  # trained or not: no longer empty
    with pytest.raises(RecipeError, match="objectives"):
        open_study(recipe_file(tmp_path, objectives=["accuracy", "latency_ms", "params"]), storage)
    with pytest.raises(RecipeError, match="train.epochs: 1 -> 2"):
        open_study(recipe_file(tmp_path, epochs=2), storage)
    optuna.create_study(study_name="bare", storage=storage, directions=["maximize", "minimize"])
    bare = open_study(recipe_file(tmp_path, name="bare"), storage)  # not made by cnnsearch: adopted
    assert bare.metric_names == ["accuracy", "latency_ms"] and "recipe" in bare.user_attrs


def test_the_sampler_of_the_recipe_is_used(tmp_path):
    path = tmp_path / "r.toml"
    (tmp_path / "space.toml").write_text(FIXED)
    path.write_text('name = "r"\nspace = "space.toml"\nsampler = "nsga2"\n[train]\ndevice = "cpu"\n')
    study = open_study(load_recipe(path), optuna.storages.InMemoryStorage())
    assert isinstance(study.sampler, optuna.samplers.NSGAIISampler)


def test_a_live_owner_a_dead_owner_and_a_reused_pid():
    me = {"pid": os.getpid(), "start": _start_time(os.getpid())}
    assert me["start"] is not None and _alive(me)
    assert _alive({"pid": os.getpid()})  # no start time recorded: the pid decides
    assert not _alive({"pid": os.getpid(), "start": me["start"] + 1})  # another process got the pid
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not _alive({"pid": child.pid, "start": 1})
    assert _alive({"pid": "not a pid"}) and _alive({"pid": 2**80})  # cannot judge: leave it be
    assert _start_time(child.pid) is None


def test_a_killed_worker_its_launcher_has_not_reaped_yet_is_dead():
    """``--workers K`` waits for its children in order: a later one killed stays a zombie
    until then, and signal 0 still reaches it."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        owner = {"pid": child.pid, "start": _start_time(child.pid)}
        deadline = time.monotonic() + 60
        while _stat(child.pid)[0] != "Z" and time.monotonic() < deadline:  # exited, not reaped
            time.sleep(0.05)
        os.kill(child.pid, 0)  # no error: the pid is still taken
        assert _start_time(child.pid) == owner["start"] and not _alive(owner)
    finally:
        child.wait()


# --- who owns a trial, and recovering a dead local worker's -----------------------------------


def test_the_process_owner_names_this_process():
    import socket

    from cnnsearch.recovery import process_owner

    owner = process_owner()
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    with open(f"/proc/{os.getpid()}/stat") as f:
        start = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22 of proc(5): starttime
    assert owner == {"host": socket.gethostname(), "pid": os.getpid(), "start": start, "boot": boot,
                     "pidns": os.stat("/proc/self/ns/pid").st_ino}
    assert _start_time(2**22 + 12345) is None  # no such process


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def running_trial(study, owner, *, age_s=10.0, x=0.25, system_attrs=None):
    from datetime import datetime, timedelta

    t = optuna.trial.create_trial(state=TrialState.RUNNING, params={"x": x},
                                  distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
                                  user_attrs={"owner": owner} if owner is not None else {},
                                  system_attrs=system_attrs or {})
    t.datetime_start = datetime.now() - timedelta(seconds=age_s)
    study.add_trial(t)
    return study.trials[-1]


def test_a_dead_local_worker_s_trial_is_failed_and_requeued(tmp_path):
    from cnnsearch.recovery import process_owner, recover_dead_local_trials
    from cnnsearch.storage import open_storage

    recipe = recipe_file(tmp_path)
    study = open_study(recipe, open_storage(f"sqlite:///{tmp_path / 'r.db'}"))
    here = process_owner()
    pid = dead_pid()
    # left alone: another host, another boot, another pid namespace, a live owner, no owner,
    # a retry taken a moment ago that still carries its dead owner (queued by an older
    # cnnsearch); each is passed over, not the end of the look
    others = [running_trial(study, {**here, "pid": pid, key: "elsewhere"}) for key in ("host", "boot", "pidns")]
    others += [running_trial(study, here), running_trial(study, None), running_trial(study, "who"),
               running_trial(study, {**here, "pid": pid}, age_s=0.0, system_attrs={"failed_trial": 0})]
    # and a retry an older cnnsearch queued with its dead owner: waiting, no one runs it yet
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params={"x": 0.75}, distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
        user_attrs={"owner": {**here, "pid": pid, "start": 1}}, system_attrs={"failed_trial": 0, "retry_history": [0]}))
    queued = study.trials[-1]
    dead = running_trial(study, {**here, "pid": pid, "start": 1}, age_s=0.0)  # its own trial: judged at once
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert recover_dead_local_trials(study) == [(dead.number, "its worker on this host died; re-queued")]
    # told FAIL as such: not left to Optuna's "the value None could not be cast" fallback
    assert not [w for w in caught if "could not be cast" in str(w.message)]
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[dead.number].user_attrs["fail_reason"] == f"its worker (pid {pid}) died mid-trial"
    assert all(trials[t.number].state == TrialState.RUNNING for t in others)
    assert trials[queued.number].state == TrialState.WAITING
    (retry,) = [t for t in trials if t.state == TrialState.WAITING and t.number > dead.number]
    assert retry.params == {"x": 0.25} and "fail_reason" not in retry.user_attrs
    # nor its dead owner: once a live worker takes it, before it records itself, the retry
    # must not pass for the dead worker's trial
    assert "owner" not in retry.user_attrs
    assert recover_dead_local_trials(study) == []  # once


def test_a_worker_recovers_a_dead_local_worker_s_trial_after_each_of_its_own():
    """The others meeting the budget leave nothing RUNNING: a worker on this host killed
    mid-trial is seen after the next trial anyone here finishes, not only by the next run."""
    from cnnsearch.recovery import process_owner

    study, notes, seen = worker_study(), [], []
    dead = running_trial(study, {**process_owner(), "pid": dead_pid(), "start": 1})
    run_worker(study, scripted(["ok"]), until=1, on_note=notes.append,
               on_trial=lambda s, t: seen.append(t.number))
    # the dead worker's trial, this worker's own (the budget), then the retry, owed
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert study.trials[2].params == dead.params and seen == [1, 2]
    assert notes == [f"trial {dead.number:>4} failed: its worker on this host died; re-queued"]


def test_a_dead_worker_s_trial_whose_fail_is_refused_is_passed_over():
    """A storage that refuses the FAIL (a trial finished meanwhile): that trial is left, and
    the look goes on to the next dead one."""
    from cnnsearch.recovery import process_owner, recover_dead_local_trials

    study = optuna.create_study()
    owner = {**process_owner(), "pid": dead_pid(), "start": 1}
    first, second = running_trial(study, owner), running_trial(study, owner)
    tell = study.tell

    def the_other_worker_first(number, **kwargs):
        if number == first.number:
            tell(number, **kwargs)  # the other worker's FAIL; ours is then refused
        return tell(number, **kwargs)

    study.tell = the_other_worker_first
    assert [n for n, _ in recover_dead_local_trials(study)] == [second.number]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.WAITING]


def test_a_dead_worker_s_trial_is_failed_and_requeued_under_the_study_lock(tmp_path, monkeypatch):
    """Optuna checks that a trial runs, then writes its FAIL; SQLite takes no row lock, so
    two workers recovering at once could both pass the check and re-queue it twice. The
    FAIL and the retry are made under the study's lock: the second worker finds it finished."""
    from contextlib import contextmanager

    from cnnsearch import recovery
    from cnnsearch.storage import open_storage

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'r.db'}"), study_name="r")
    dead = running_trial(study, {**recovery.process_owner(), "pid": dead_pid(), "start": 1})
    lock, retry, tell, held, seen = recovery._lock, recovery._retry, study.tell, [], []

    @contextmanager
    def watched(study):
        with lock(study):
            held.append(1)
            yield
            held.pop()

    monkeypatch.setattr(recovery, "_lock", watched)
    monkeypatch.setattr(recovery, "_retry", lambda *a, **k: seen.append(("retry", bool(held))) or retry(*a, **k))
    study.tell = lambda *a, **k: seen.append(("tell", bool(held))) or tell(*a, **k)
    assert [n for n, _ in recovery.recover_dead_local_trials(study)] == [dead.number]
    assert seen == [("tell", True), ("retry", True)]
    assert (tmp_path / "r.db.r.lock").exists()  # SQLite's study lock: a file lock beside the database


def test_recovery_on_a_storage_without_heartbeats_names_this_host_s_dead_trials(monkeypatch):
    """In memory (no heartbeat, no retry callback): the local look alone. Optuna's
    "experimental" warnings are silenced, and only they: another still reaches the caller."""
    from cnnsearch.recovery import process_owner, recover_dead_trials

    study = optuna.create_study()
    dead = running_trial(study, {**process_owner(), "pid": dead_pid(), "start": 1})
    monkeypatch.setattr(optuna.storages, "fail_stale_trials", lambda study: warnings.warn("the storage's own", stacklevel=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert recover_dead_trials(study) == [(dead.number, "its worker on this host died; re-queued")]
    assert [str(w.message) for w in caught] == ["the storage's own"]


def test_recovery_without_a_finished_trial_annotation_still_requeues(tmp_path):
    """An in-memory storage cannot annotate finished trials: the FAIL and the retry stand."""
    from cnnsearch.recovery import process_owner, recover_dead_local_trials

    study = optuna.create_study()
    pid = dead_pid()
    dead = running_trial(study, {**process_owner(), "pid": pid, "start": 1})
    assert [n for n, _ in recover_dead_local_trials(study)] == [dead.number]
    assert study.trials[0].state == TrialState.FAIL and study.trials[1].state == TrialState.WAITING


# --- the data a study was trained on ----------------------------------------------------------


def test_the_data_description_is_stored_once_and_then_enforced():
    from cnnsearch.study import check_data, record_data

    study = optuna.create_study()
    desc = {"input": [1, 8, 8], "classes": 10, "mean": 0.5}
    record_data(study, desc)
    assert study.user_attrs["data"] == desc
    record_data(study, dict(desc))  # the same again: fine
    with pytest.raises(RecipeError) as info:
        record_data(study, {**desc, "classes": 9, "extra": 1})
    assert "classes, extra changed" in str(info.value) and repr(study.study_name) in str(info.value)
    assert study.user_attrs["data"] == desc
    check_data(study, desc)



def test_a_photo_folder_whose_statistics_alone_changed_is_told_why():
    """Photos are resized and centre-cropped since e70af05, not squashed: a folder study made
    before sees other pixel statistics, and the refusal says why; anything else changed
    (or another dataset) gets no such hint."""
    from cnnsearch.study import check_data

    stored = {"name": "folder:/photos", "classes": ["a", "b"], "mean": [0.5], "std": [0.2]}

    def refusal(stored, described):
        study = optuna.create_study()
        study.set_user_attr("data", stored)
        with pytest.raises(RecipeError) as info:
            check_data(study, described)
        return str(info.value)

    hint = "(photos are now resized on their short side and centre-cropped, not squashed"
    for changed in ({"mean": [0.4]}, {"std": [0.3]}, {"mean": [0.4], "std": [0.3]}):
        assert hint in refusal(stored, {**stored, **changed})
    assert hint not in refusal(stored, {**stored, "mean": [0.4], "classes": ["a"]})
    assert hint not in refusal({**stored, "name": "digits"}, {**stored, "name": "digits", "mean": [0.4]})
    assert hint not in refusal({"mean": [0.5]}, {"mean": [0.4]})  # no name stored: no folder

def test_a_study_with_trials_but_no_data_description_is_refused():
    from cnnsearch.study import check_data, record_data

    study = optuna.create_study()
    check_data(study, {"classes": 10})  # new and empty: nothing to compare
    study.add_trial(optuna.trial.create_trial(value=1.0))
    with pytest.raises(RecipeError, match="older cnnsearch") as raised:
        record_data(study, {"classes": 10})
    assert str(raised.value).endswith("give the recipe a new name or another storage")  # the way out
    assert "data" not in study.user_attrs


def test_a_failure_without_a_recorded_reason_says_so():
    def raising(trial):
        raise RuntimeError("not recorded")

    with pytest.raises(FailingTrials) as raised:
        run_worker(worker_study(), raising, until=5, max_consecutive_failures=2)
    assert str(raised.value).endswith(": no reason recorded")


def test_failed_trials_among_the_rejections_keep_the_infeasible_guard_quiet():
    """The guard needs every completed trial rejected; a FAIL is not a completed trial, so
    it neither counts nor blocks: three rejections stop the worker, with the count of three."""
    study = worker_study()
    with pytest.raises(AllInfeasible, match="all 3 candidates"):
        run_worker(study, scripted(["limit", "fail", "limit", "limit"]), until=50, infeasible_after=3)
    assert len(study.trials) == 4


def test_a_start_time_is_read_past_a_process_name_with_a_parenthesis():
    child = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                              "open('/proc/self/comm', 'w').write('x) 1 2 3 4 5 6')\n"
                              "print(flush=True); time.sleep(30)"], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()
        with open(f"/proc/{child.pid}/comm") as f:
            assert f.read().startswith("x) ")
        with open("/proc/uptime") as f:
            now_ticks = float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK")
        start = _start_time(child.pid)
        # started after this test process and before now
        assert start is not None and _start_time(os.getpid()) <= start <= now_ticks + 1
    finally:
        child.kill()
        child.wait()


def test_open_study_checks_the_directions_of_a_study_it_did_not_make(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    bare = optuna.create_study(study_name="t", storage=storage, directions=["minimize"])
    bare.set_metric_names(["latency_ms"])
    with pytest.raises(RecipeError) as info:
        open_study(recipe_file(tmp_path), storage)
    assert "'t'" in str(info.value) and "latency_ms" in str(info.value)
    recipe = recipe_file(tmp_path, name="u", objectives=["latency_ms", "accuracy"])  # minimised first
    study = open_study(recipe, storage)
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE, optuna.study.StudyDirection.MAXIMIZE]
    assert open_study(recipe, storage).study_name == "u"


class _PublicOnly:
    """A study as an Optuna without the private ``_get_trials`` shows it."""

    def __init__(self, study):
        self.study = study

    def get_trials(self, *, deepcopy=True, states=None):
        return self.study.get_trials(deepcopy=deepcopy, states=states)


class _OtherSignature(_PublicOnly):
    def _get_trials(self, deepcopy, states):  # no use_cache: TypeError
        raise AssertionError("not this one")


@pytest.mark.parametrize("wrapper", [_PublicOnly, _OtherSignature])
def test_peers_come_from_a_public_read_where_optunas_private_cache_is_missing(wrapper):
    """An Optuna without ``Study._get_trials`` (or with another signature): the finished
    trials are read through the public API instead, with the same result."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0]))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED, intermediate_values={1: 0.1}))
    running = study.ask()
    assert [t.number for t in objective_mod._finished_trials(wrapper(study))] == [0, 2]
    assert [t.number for t in objective_mod._finished_trials(study)] == [0, 2]  # the private read agrees
    assert running.number == 3
