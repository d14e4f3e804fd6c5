"""The end-of-search re-timing of the front, in process with a scripted timer: the best of
the passes is stored as latency_remeasured_ms and announced; a device other than the
study's keeps its figures out. Subprocess studies covered this; mutation testing could not."""

from types import SimpleNamespace

import optuna

from cnnsearch import latency_remote, runner
from cnnsearch.latency_remote import device_identity
from tests.test_report_frame import add, new_study

FP = {"name": "Xeon", "device": "cpu", "cpus": 2, "runtime": "torch", "torch": "2.9", "threads": 1}
RECIPE = SimpleNamespace(objectives=["accuracy", "latency_ms"], latency=SimpleNamespace())


def scripted(monkeypatch, figures, fingerprint=FP):
    times = iter(figures)
    monkeypatch.setattr(latency_remote, "time_candidate",
                        lambda model, shape, latency: SimpleNamespace(median_ms=next(times), fingerprint=fingerprint))


def stored(tmp_path) -> list[dict]:
    """The trials' attributes as the database holds them (a study object caches finished trials)."""
    return [t.user_attrs for t in optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 's.db'}").trials]


def front_study(tmp_path):
    study = new_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    add(study, acc=0.9, lat=2.0)
    add(study, acc=0.8, lat=1.0)
    return study


def test_the_front_s_best_re_timing_is_stored_and_announced(tmp_path, monkeypatch, capsys):
    study = front_study(tmp_path)
    scripted(monkeypatch, [3.0, 1.5, 2.5, 1.2])  # two passes over trials 0 and 1, interleaved
    runner._retime_front(study, RECIPE)
    assert [a["latency_remeasured_ms"] for a in stored(tmp_path)] == [2.5, 1.2]
    assert capsys.readouterr().out == ("re-measured the latency of the 2 Pareto-optimal trial(s), interleaved: "
                                       "largest change 25.0% (stored as latency_remeasured_ms)\n")


def test_another_device_s_re_timing_is_kept_out(tmp_path, monkeypatch):
    study = front_study(tmp_path)
    study.set_user_attr("latency_device", {"device": device_identity({**FP, "name": "Epyc"})})
    scripted(monkeypatch, [1.0] * 4)
    assert runner.remeasure_front(study, RECIPE) == []
    assert all("latency_remeasured_ms" not in a for a in stored(tmp_path))
    study.set_user_attr("latency_device", {"device": device_identity(FP)})
    scripted(monkeypatch, [1.0] * 4)
    assert runner.remeasure_front(study, RECIPE) == [(0, 2.0, 1.0), (1, 1.0, 1.0)]


def test_a_study_without_a_feasible_trial_says_so(tmp_path, capsys):
    study = new_study()
    add(study, status="over_limit", acc=0.0, lat=1.0)
    runner._summary(study)
    assert capsys.readouterr().out.splitlines() == ["1 trials: 1 over_limit", "no feasible trial has finished training yet"]
