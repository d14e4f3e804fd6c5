"""The report's data, exactly, on hand-made trials: each column of the frame, the front with
ties, the leaderboard's order, picking a trial at its boundaries, and export_trial in
process (its weights, its one-line summary, its errors)."""

import math

import optuna
import pytest
import torch
from safetensors.torch import load_file

from cnnsearch import ArchSpec, RecipeError, build
from cnnsearch.export import save_weights
from cnnsearch.exporting import export_trial
from cnnsearch.report import (
    leaderboard,
    pareto_numbers,
    pick_trial,
    trained_study,
    trials_frame,
)
from cnnsearch.storage import set_finished_trial_user_attrs

optuna.logging.set_verbosity(optuna.logging.WARNING)
ARCH = {"input": [1, 8, 8], "num_classes": 3, "blocks": [{"out_channels": 4, "kernel_size": 3}]}
DATA = {"name": "digits", "input_size": [1, 8, 8], "classes": ["a", "b", "c"], "mean": [0.3], "std": [0.2]}


def add(study, *, status="ok", acc=0.9, lat=1.0, state=None, params=1234, **attrs):
    """One trial as the pipeline records it."""
    trial = study.ask()
    base = {"status": status, "arch": ARCH, "latency_ms": lat, "params": params, "flops": 5000}
    if status == "ok":
        base.update(accuracy=acc, train_seconds=2.5, epochs=3, summary="c4k3")
    for k, v in {**base, **attrs}.items():
        trial.set_user_attr(k, v)
    if state is not None:
        study.tell(trial, state=state)
    else:
        trial.set_constraint("infeasible", 0.0 if status == "ok" else 1.0)
        study.tell(trial, [acc if status == "ok" else 0.0, lat])
    return trial.number


def new_study(name="s", metric_names=("accuracy", "latency_ms"), storage=None):
    study = optuna.create_study(directions=["maximize", "minimize"], study_name=name, storage=storage)
    if metric_names:
        study.set_metric_names(list(metric_names))
    return study


def test_each_column_comes_from_its_own_record():
    study = new_study()
    ok = add(study, acc=0.8, lat=0.5, final={"test_accuracy_mean": 0.77, "test_accuracy_std": 0.01})
    limit = add(study, status="limit", infeasible_reason="params 1234 > max_params 1000")
    failed = add(study, status="error", state=optuna.trial.TrialState.FAIL, fail_reason="boom")
    df = trials_frame(study).set_index("trial")
    row = df.loc[ok]
    assert (row["state"], row["status"], row["feasible"], row["pareto"]) == ("COMPLETE", "ok", True, True)
    assert (row["accuracy"], row["test_mean"], row["test_std"]) == (0.8, 0.77, 0.01)
    assert (row["latency_ms"], row["params"], row["flops"], row["train_seconds"], row["epochs"]) == (
        0.5, 1234, 5000, 2.5, 3)
    assert (row["summary"], row["reason"]) == ("c4k3", "")
    row = df.loc[limit]
    assert (row["status"], row["feasible"], row["pareto"]) == ("limit", False, False)
    assert row["reason"] == "params 1234 > max_params 1000"
    assert math.isnan(row["accuracy"]) and math.isnan(row["test_mean"]) and math.isnan(row["train_seconds"])
    assert (row["epochs"], row["summary"]) == (0, "")  # never trained
    row = df.loc[failed]
    assert (row["state"], row["reason"], row["feasible"]) == ("FAIL", "boom", False)
    assert list(df.reset_index().columns[:6]) == ["trial", "state", "status", "feasible", "pareto", "accuracy"]


def test_without_stored_metric_names_the_recipes_objectives_name_the_columns():
    study = new_study(metric_names=None)
    a = add(study, acc=0.9, lat=2.0)
    b = add(study, acc=0.8, lat=1.0)
    add(study, acc=0.7, lat=3.0)  # dominated
    assert set(trials_frame(study).query("pareto")["trial"]) == {a, b}


def test_pareto_keeps_ties_and_ignores_infeasible_trials():
    study = new_study()
    a = add(study, acc=0.9, lat=1.0)
    b = add(study, acc=0.9, lat=1.0)  # a tie: both stay
    slow = add(study, acc=0.9, lat=1.5)  # dominated by a and b
    c = add(study, acc=0.8, lat=0.5)
    add(study, status="limit", lat=0.1)  # would dominate on latency, but infeasible
    df = trials_frame(study)
    assert pareto_numbers(df, ["accuracy", "latency_ms"], ["maximize", "minimize"]) == {a, b, c}
    assert pareto_numbers(df, ["accuracy", "latency_ms"], ["minimize", "maximize"]) == {slow, c}


def test_leaderboard_ranks_feasible_trials_front_then_accuracy_then_latency():
    study = new_study()
    front_fast = add(study, acc=0.8, lat=0.5)
    front_best = add(study, acc=0.9, lat=1.0)
    slow_tie = add(study, acc=0.7, lat=3.0)
    fast_tie = add(study, acc=0.7, lat=2.0)
    add(study, status="limit")
    board = leaderboard(trials_frame(study))
    assert board["trial"].tolist() == [front_best, front_fast, fast_tie, slow_tie]
    assert board["rank"].tolist() == [1, 2, 3, 4]
    assert list(board.columns[:2]) == ["rank", "trial"]


def test_pick_best_breaks_accuracy_ties_by_latency_and_fastest_allows_one_point():
    study = new_study()
    add(study, acc=0.95, lat=2.0)
    tie = add(study, acc=0.95, lat=1.5)
    one_point = add(study, acc=0.94, lat=1.0)  # exactly 0.01 below the best: still "as good"
    add(study, acc=0.9, lat=0.5)  # on the front, but more than a point below
    assert pick_trial(study, "best").number == tie
    assert pick_trial(study, "fastest").number == one_point


def test_pick_by_number_at_both_ends():
    study = new_study("numbers")
    first = add(study, acc=0.9, lat=1.0, weights="w0")
    last = add(study, acc=0.8, lat=0.5, weights="w1")
    assert pick_trial(study, str(first)).number == first == 0
    assert pick_trial(study, str(last)).number == last
    for bad in ("-1", "2"):
        with pytest.raises(RecipeError, match=f"study 'numbers' has no trial {bad}"):
            pick_trial(study, bad)
    with pytest.raises(RecipeError, match="got 'x1'"):
        pick_trial(study, "x1")
    no_weights = add(study, acc=0.99, lat=0.1)
    with pytest.raises(RecipeError, match=rf"trial {no_weights} has no trained network \(ok\)"):
        pick_trial(study, str(no_weights))
    with pytest.raises(RecipeError, match="study 'empty' has no finished feasible trial"):
        pick_trial(new_study("empty"), "fastest")


def test_trained_study_keeps_directions_names_and_only_feasible_trials():
    study = new_study()
    kept = [add(study, acc=0.9, lat=1.0), add(study, acc=0.5, lat=0.2)]
    add(study, status="limit")
    add(study, status="error", state=optuna.trial.TrialState.FAIL)
    copy = trained_study(study)
    assert copy.directions == study.directions and copy.metric_names == ["accuracy", "latency_ms"]
    assert [t.user_attrs["accuracy"] for t in copy.trials] == [study.trials[n].user_attrs["accuracy"] for n in kept]
    assert trained_study(new_study(metric_names=None)).metric_names is None


@pytest.fixture
def weighted_study(tmp_path):
    """A study whose trial 0 has real weights in a file-system artifact store."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    study = new_study("w", storage=f"sqlite:///{tmp_path / 'w.db'}")  # finalize's records need an RDB
    torch.manual_seed(3)
    model = build(ArchSpec.from_dict(ARCH))
    save_weights(model, tmp_path / "w.safetensors")
    trial = study.ask()
    artifact = upload_artifact(artifact_store=FileSystemArtifactStore(str(artifacts)),
                               file_path=str(tmp_path / "w.safetensors"), study_or_trial=trial)
    for k, v in {"status": "ok", "arch": ARCH, "accuracy": 0.875, "latency_ms": 0.25, "params": 1234567,
                 "flops": 1, "weights": artifact}.items():
        trial.set_user_attr(k, v)
    trial.set_constraint("infeasible", 0.0)
    study.tell(trial, [0.875, 0.25])
    return study, str(artifacts), model


def test_export_trial_writes_the_trials_weights_and_says_what_it_wrote(weighted_study, tmp_path):
    study, artifacts, model = weighted_study
    out, line = export_trial(study, which="best", artifacts=artifacts, output=tmp_path / "m.py",
                             weights=tmp_path / "m.safetensors")
    assert out == tmp_path / "m.py" and out.read_text().startswith('"""')
    got = load_file(tmp_path / "m.safetensors")
    assert got.keys() == model.state_dict().keys()
    assert all(torch.equal(got[k], v) for k, v in model.state_dict().items())
    assert line.startswith("trial 0 ") and "0.250 ms" in line and "1,234,567 params" in line
    assert "the search's weights: validation accuracy 0.8750 (not finalized)" in line
    assert line.endswith("takes normalised images (a study from before data descriptions)")  # no data description
    # again, to the same files: replaced, not refused
    export_trial(study, which="0", artifacts=artifacts, output=tmp_path / "m.py", weights=tmp_path / "m.safetensors")


def test_export_trial_prefers_finalized_weights_and_raw_images(weighted_study, tmp_path):
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    study, artifacts, _ = weighted_study
    study.set_user_attr("data", DATA)
    trial = study.trials[0]
    torch.manual_seed(4)  # finalize's weights differ from the search's
    final_model = build(ArchSpec.from_dict(ARCH))
    save_weights(final_model, tmp_path / "final.safetensors")
    final = upload_artifact(artifact_store=FileSystemArtifactStore(artifacts),
                            file_path=str(tmp_path / "final.safetensors"), study_or_trial=study)
    set_finished_trial_user_attrs(study, trial, {"final": {
        "seeds": 3, "epochs": 12, "test_accuracy_mean": 0.91234, "test_accuracy_std": 0.00456, "weights": final}})
    study = optuna.load_study(study_name="w", storage=f"sqlite:///{tmp_path / 'w.db'}")  # as export, later
    out, line = export_trial(study, which="best", artifacts=artifacts, output=tmp_path / "m.py")
    assert "finalized weights (best of 3 seeds, 12 epochs): test accuracy 0.9123 +- 0.0046" in line
    assert line.endswith("takes raw images in [0, 1]")
    assert "no weights asked for (--weights FILE)" in line and not (tmp_path / "m.safetensors").exists()
    namespace = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)  # the code carries its classes
    assert list(namespace["Net"].classes) == ["a", "b", "c"]
    out, _ = export_trial(study, which="best", artifacts=artifacts, output=tmp_path / "d.py", class_name="Digits",
                          weights=tmp_path / "d.safetensors")
    got = load_file(tmp_path / "d.safetensors")
    assert all(torch.equal(got[k], v) for k, v in final_model.state_dict().items())
    namespace = {}
    exec(compile(out.read_text(), str(out), "exec"), namespace)
    assert "Digits" in namespace and "Net" not in namespace


def test_export_trial_names_missing_weights(weighted_study, tmp_path):
    study, _, _ = weighted_study
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    with pytest.raises(RecipeError, match=f"weights of trial 0 are not in {empty}"):
        export_trial(study, which="0", artifacts=str(empty), output=tmp_path / "m.py",
                     weights=tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_numbers_never_recorded_are_float_nan_columns():
    """A trial added by hand (no sizes, no training): its numeric columns are float NaN, so
    plots and comparisons treat them as missing, not as Python objects."""
    study = new_study()
    study.add_trial(optuna.trial.create_trial(values=[0.5, 1.0], user_attrs={"status": "ok"}))
    df = trials_frame(study)
    for column in ("accuracy", "test_mean", "test_std", "latency_ms", "params", "flops", "train_seconds"):
        assert df[column].dtype == float and math.isnan(df.loc[0, column]), column
    assert df.loc[0, "epochs"] == 0 and df.loc[0, "summary"] == "" and df.loc[0, "reason"] == ""
