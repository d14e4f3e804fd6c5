"""Rules the end-to-end tests reach only in subprocesses, pinned in process: the command and
environment of each local worker, a failed trial re-queued clean, how a device is described,
and a latency server with another thread count refused. Each was a surviving mutant."""

import os
import sys
import warnings
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from cnnsearch import latency_remote, runner
from cnnsearch.errors import RecipeError
from cnnsearch.latency_remote import check_server, describe
from cnnsearch.recovery import MAX_RETRY, requeue_failed


class FakeWorker:
    launched: list = []

    def __init__(self, cmd, env, stdin):
        self.cmd, self.env = cmd, env
        FakeWorker.launched.append(self)

    def wait(self):
        return 3 if self.cmd[self.cmd.index("--worker-index") + 1] == "1" else 0


def test_local_workers_run_the_search_command_on_one_study_and_share_the_cores(monkeypatch):
    FakeWorker.launched = []
    monkeypatch.setattr(runner.subprocess, "Popen", FakeWorker)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(runner.torch.cuda, "device_count", lambda: 0)
    recipe = SimpleNamespace(storage="sqlite:////s.db", name="study", artifacts="s3://b/p")
    code = runner.launch_workers("r.toml", recipe, workers=2, until=9, timeout=60.0)
    assert code == 3  # the worst worker's exit code
    assert [w.cmd for w in FakeWorker.launched] == [
        [sys.executable, "-m", "cnnsearch", "search", "r.toml", "--storage", "sqlite:////s.db", "--study", "study",
         "--until", "9", "--worker-index", str(i), "--quiet", "--artifacts", "s3://b/p", "--timeout", "60.0"]
        for i in range(2)]
    threads = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert all(w.env["CNNSEARCH_TRAIN_THREADS"] == threads for w in FakeWorker.launched)
    assert all("CUDA_VISIBLE_DEVICES" not in w.env for w in FakeWorker.launched)


def test_workers_take_the_listed_gpus_round_robin(monkeypatch, capsys):
    FakeWorker.launched = []
    monkeypatch.setattr(runner.subprocess, "Popen", FakeWorker)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4, 6")
    recipe = SimpleNamespace(storage="sqlite:////s.db", name="study", artifacts="")
    runner.launch_workers(None, recipe, workers=3, until=2, timeout=None)
    assert [w.env["CUDA_VISIBLE_DEVICES"] for w in FakeWorker.launched] == ["4", "6", "4"]
    assert capsys.readouterr().out == "GPUs: w0 -> 4, w1 -> 6, w2 -> 4\n"
    assert "--timeout" not in FakeWorker.launched[0].cmd and "--artifacts" not in FakeWorker.launched[0].cmd


def test_a_failed_trial_is_requeued_without_its_failure():
    study = optuna.create_study(directions=["maximize"])
    trial = study.ask()
    trial.suggest_int("depth", 1, 9)
    for key, value in {"status": "latency_server_down", "fail_reason": "refused", "retry": True,
                       "fingerprint": "abc", "owner": {"pid": 1}}.items():
        trial.set_user_attr(key, value)
    study._storage.set_trial_system_attr(trial._trial_id, "retry_history", [7])  # itself a retry of trial 7
    study.tell(trial, state=TrialState.FAIL)
    failed = study.trials[0]
    assert requeue_failed(study, failed)
    again = study.trials[1]
    assert again.state == TrialState.WAITING and again.params == failed.params
    assert again.user_attrs == {"fingerprint": "abc"} and again.system_attrs["retry_history"] == [7, 0]
    # the caller's trial is left as it was
    assert failed.user_attrs["status"] == "latency_server_down" and failed.system_attrs["retry_history"] == [7]
    assert MAX_RETRY >= 1


def test_a_device_is_described_by_its_runtime_and_threads():
    identity = {"name": "Xeon", "device": "cpu", "cpus": 2, "os": "Linux", "arch": "x86_64",
                "runtime": "onnxruntime", "onnxruntime": "1.20.1", "torch": "2.9", "threads": 2}
    assert describe(identity) == "Xeon (cpu, 2 cores, Linux/x86_64, onnxruntime 1.20.1, 2 thread(s))"
    bare = {"name": "Xeon", "torch": "2.9"}
    assert describe(bare) == "Xeon (cpu, ? cores, torch 2.9, ? thread(s))"


def test_a_server_timing_with_other_threads_is_refused(monkeypatch):
    monkeypatch.setattr(latency_remote, "call", lambda server, path, timeout: {"threads": 2})
    latency = SimpleNamespace(server="http://127.0.0.1:9", threads=1)
    with pytest.raises(RecipeError) as err:
        check_server(latency)
    assert str(err.value) == ("latency.threads: 1, but the server at http://127.0.0.1:9 times with 2 thread(s) "
                              "(its --threads): make them equal")
    check_server(SimpleNamespace(server="http://127.0.0.1:9", threads=2))  # equal: accepted


def test_a_worker_asks_the_study_s_server_for_its_device(monkeypatch):
    asked = []
    monkeypatch.setattr(latency_remote, "call", lambda server, path, timeout: asked.append((server, path, timeout))
                        or {"name": "Pi", "cpus": 4, "runtime": "onnxruntime", "threads": 1})
    latency = SimpleNamespace(server="http://10.0.0.2:8765")
    assert latency_remote.worker_device(latency) == {"name": "Pi", "cpus": 4, "runtime": "onnxruntime", "threads": 1}
    assert asked == [("http://10.0.0.2:8765", "/device", 10.0)]


def test_a_refusal_names_the_server_only_where_there_is_one():
    mine = {"name": "Xeon", "cpus": 2, "runtime": "torch", "torch": "2.9", "threads": 1}
    theirs = {**mine, "name": "Epyc"}
    study = SimpleNamespace(study_name="s", user_attrs={"latency_device": {"device": theirs}})
    text = latency_remote.refusal(study, mine, "")
    assert text.startswith("latency: study 's' is timed on Epyc (cpu, 2 cores, torch 2.9, 1 thread(s)), but this")
    assert " via " not in text and "serve that machine with `cnnsearch latency-server`" in text
    study.user_attrs["latency_device"]["server"] = "http://h:1"
    assert " via http://h:1, but this worker" in latency_remote.refusal(study, mine, "")
    assert latency_remote.refusal(SimpleNamespace(study_name="s", user_attrs={"latency_device": {"device": mine}}),
                                  mine, "") is None


def test_a_figure_from_another_device_names_the_server_it_came_through():
    mine = {"name": "Xeon", "cpus": 2, "runtime": "torch", "torch": "2.9", "threads": 1}
    theirs = {**mine, "name": "Epyc"}
    study = SimpleNamespace(study_name="s", user_attrs={"latency_device": {"device": theirs, "server": "http://h:1"}})
    lat = SimpleNamespace(fingerprint=mine)
    assert latency_remote.settle_device(study, lat, "http://h:2", mine, 3) == mine  # the study's device: kept
    with pytest.raises(latency_remote.OtherDevice) as raised:
        latency_remote.settle_device(study, lat, "http://h:2", theirs, 3)
    assert " via http://h:1, but this worker's figures would come from Xeon" in str(raised.value)
    assert " thread(s)) via http://h:2; one front holds one device's figures" in str(raised.value)


def test_a_trial_line_tags_baselines_and_gives_the_reason_it_failed():
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    for key, value in {"accuracy": 0.5, "latency_ms": 1.25, "params": 1234, "summary": "c4k3",
                       "baseline": "resnet", "status": "failed", "fail_reason": "out of memory"}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.FAIL)
    line = runner.trial_line(study.trials[0])
    assert line == ("trial    0 failed        acc 0.5000     1.250 ms       1,234 params  c4k3  [baseline resnet]"
                    "  (out of memory)")


def test_only_a_plain_single_search_is_worker_0():
    assert runner.worker_identity(0, None, False) == "0"
    assert runner.worker_identity(0, None, True).startswith("0@")
    assert runner.worker_identity(1, None, False).startswith("1@")
    assert runner.worker_identity(3, "node7", True) == "node7"


def test_a_trial_whose_weights_the_store_refused_fails_is_requeued_and_the_store_is_waited_for(monkeypatch, tmp_path):
    """The store went away mid-trial: the trial fails with the store's reason, its candidate
    is queued again, the worker says so in one line and waits for that store, and such
    failures count towards the limit of failures in a row."""
    from cnnsearch import study as study_module
    from cnnsearch.artifacts import ArtifactsLost
    from cnnsearch.errors import FailingTrials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    waited = []
    monkeypatch.setattr(study_module, "wait_for_store",
                        lambda location, exc, *, on_note=None: waited.append((location, exc, on_note)))
    notes = []
    watch = study_module._Watch(until=5, infeasible_after=3, max_failures=2, on_trial=None, on_note=notes.append)
    study = optuna.create_study(directions=["maximize", "minimize"], storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask({"width": optuna.distributions.IntDistribution(1, 8)})
    exc = ArtifactsLost("s3://bucket/w", "connection refused")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        watch.artifacts_lost(study, trial, exc)
    # told FAIL as such: not left to Optuna's "the value None could not be cast" fallback
    assert not [w for w in caught if "could not be cast" in str(w.message)]
    failed, again = study.get_trials(deepcopy=False)
    assert failed.state == TrialState.FAIL and again.state == TrialState.WAITING
    assert failed.user_attrs["fail_reason"] == "the artifact store failed mid-trial: connection refused"
    assert failed.user_attrs["status"] == "error"
    assert again.params == failed.params
    assert notes == ["trial    0 failed: the artifact store refused its weights (connection refused); re-queued"]
    assert waited == [("s3://bucket/w", exc, watch.on_note)] and watch.failures == 1
    with pytest.raises(FailingTrials, match=r"^2 trials in a row failed; the last: the artifact store failed "
                                            r"mid-trial \(connection refused\)$"):
        watch.artifacts_lost(study, None, exc)  # no trial was running: nothing to fail, the store still waited for
    assert len(waited) == 2 and len(notes) == 1


def _worker_run(tmp_path, monkeypatch, first_call):
    """run_worker on a two-trial study whose objective does ``first_call`` on its first call
    and succeeds after: the trials and the worker's notes."""
    from cnnsearch import study as study_module

    monkeypatch.setattr(study_module, "wait_for_store", lambda location, exc, *, on_note=None: None)
    calls = []

    def objective(trial):
        trial.suggest_int("width", 1, 8)
        calls.append(trial.number)
        if len(calls) == 1:
            first_call(trial)
        return [0.5, 1.0]

    study = optuna.create_study(directions=["maximize", "minimize"], storage=f"sqlite:///{tmp_path / 's.db'}",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    notes = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial
    try:
        study_module.run_worker(study, objective, until=2, on_note=notes.append)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return study.get_trials(deepcopy=False), notes


def test_a_worker_fails_and_requeues_the_trial_whose_weights_the_store_refused(tmp_path, monkeypatch):
    from cnnsearch.artifacts import ArtifactsLost

    def refused(trial):
        raise ArtifactsLost("s3://bucket/w", "connection refused")

    trials, notes = _worker_run(tmp_path, monkeypatch, refused)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params  # the candidate, run again
    assert notes == ["trial    0 failed: the artifact store refused its weights (connection refused); re-queued"]


def test_a_worker_requeues_a_trial_that_failed_for_a_reason_outside_its_candidate(tmp_path, monkeypatch):
    def server_down(trial):
        trial.set_user_attr("retry", "the latency server")
        raise ConnectionError("refused")

    trials, notes = _worker_run(tmp_path, monkeypatch, server_down)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].params == trials[0].params
    assert notes == ["trial    0: re-queued (the latency server failed)"]


def test_an_interrupted_trial_failed_when_the_database_drops_again_or_another_error_comes(monkeypatch, tmp_path):
    """The database going again while the trial is re-queued: the trial stays failed, said
    not re-queued; any other error there is a bug, and is raised."""
    import sqlalchemy

    from cnnsearch import recovery

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    lost = sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))

    def drops(*args):
        raise lost

    monkeypatch.setattr(recovery, "_retry", drops)
    trial = study.ask()
    assert recovery.fail_interrupted_trial(study, trial, lost) == (trial.number, False)
    assert study.trials[trial.number].state == TrialState.FAIL

    def breaks(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(recovery, "_retry", breaks)
    with pytest.raises(RuntimeError, match="a bug"):
        recovery.fail_interrupted_trial(study, study.ask(), lost)


def test_a_worker_s_device_names_the_runtime_that_times_it():
    from cnnsearch.latency_remote import worker_device

    for runtime in ("torch", "onnxruntime"):
        latency = SimpleNamespace(server=None, device="cpu", threads=1, runtime=runtime)
        mine = worker_device(latency)
        assert mine["runtime"] == runtime and mine["device"] == "cpu"
        assert ("torch" in mine) == (runtime == "torch")  # a server has no torch: not compared there


def test_a_trial_whose_heartbeat_stopped_is_failed_retried_and_named(tmp_path):
    """Another host's dead worker: its trial's last heartbeat is long past the grace period.
    The storage's retry callback re-queues it, and recover_dead_trials says which and why."""
    import sqlite3

    from cnnsearch.recovery import recover_dead_trials
    from cnnsearch.storage import open_storage

    db = tmp_path / "h.db"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=open_storage(f"sqlite:///{db}", heartbeat_s=1), study_name="h")
    trial = study.ask({"x": optuna.distributions.IntDistribution(0, 9)})
    trial.set_user_attr("owner", {"host": "elsewhere", "pid": 7})
    study._storage.record_heartbeat(trial._trial_id)
    con = sqlite3.connect(db)
    with con:  # its worker stopped beating an hour ago
        con.execute("UPDATE trial_heartbeats SET heartbeat = datetime(heartbeat, '-1 hour')")
    con.close()
    assert recover_dead_trials(study) == [(trial.number, "its worker stopped sending heartbeats; re-queued")]
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert study.get_trials()[1].params == trial.params
    assert "owner" not in study.get_trials()[1].user_attrs  # the retry is not the dead worker's
    assert recover_dead_trials(study) == []  # said once, not again on the next look


def test_a_worker_s_first_lines_are_flushed_one_by_one_before_any_trial(tmp_path, monkeypatch):
    """What a log tailed live shows at once: the study and its data, each line flushed as it
    is written, before the first trial (which may take minutes) starts."""
    import io

    from cnnsearch.data import load_data
    from cnnsearch.recipe import load_recipe
    from tests.study_helpers import write_recipe

    class Recorder(io.StringIO):
        def __init__(self):
            super().__init__()
            self.flushed = []

        def flush(self):
            self.flushed.append(self.getvalue())

    recipe = load_recipe(write_recipe(tmp_path, trials=2, epochs=1))
    data = load_data("digits")
    out = Recorder()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(runner, "run_worker", lambda *a, **k: out.flushed.append("trials"))
    runner._run_here(None, recipe, SimpleNamespace(data=data), done=0, until=2, to_go=2, timeout=None,
                     quiet=False, prefix="")
    first = f"study {recipe.name!r}: 2 trials to go on digits ({recipe.storage})\n"
    assert out.flushed[:3] == [first, first + runner.data_line(data) + "\n", "trials"]
    assert runner.data_line(data).startswith("digits: 1x8x8, 10 classes")


def test_a_resumed_worker_s_estimate_counts_only_the_trials_it_saw_finish(tmp_path, monkeypatch, capsys):
    """Two trials were done before this worker started; one more finished 10 s in: 0.1
    trials/s, so the 3 left to 6 take 30 s (counting the earlier two would say 6 s)."""
    from cnnsearch.recipe import load_recipe
    from tests.study_helpers import write_recipe
    from tests.test_report_frame import add, new_study

    recipe = load_recipe(write_recipe(tmp_path, trials=6, epochs=1))
    study = new_study()
    add(study, acc=0.9, lat=1.0)
    clock = iter([100.0, 110.0])
    monkeypatch.setattr(runner, "time", SimpleNamespace(monotonic=lambda: next(clock)))  # the runner's clock only
    monkeypatch.setattr(runner, "count_trials", lambda study, states: 3)
    monkeypatch.setattr(runner, "run_worker", lambda *a, on_trial, **k: on_trial(study, study.trials[0]))
    runner._run_here(study, recipe, SimpleNamespace(), done=2, until=6, to_go=4, timeout=None, quiet=True,
                     prefix="[w0] ")
    line = capsys.readouterr().out.strip()
    assert line.startswith("[w0] ") and line.endswith("  [3/6, 10 s elapsed, ETA 30 s]")


def test_a_launcher_starts_no_more_workers_than_trials_and_re_times_the_front_of_its_study(tmp_path, monkeypatch):
    """3 workers asked for 2 trials: 2 launched. The launcher loads no Objective (its workers
    do), records the data of a new study, then re-times the front of the study it made."""
    from cnnsearch.recipe import load_recipe
    from tests.study_helpers import write_recipe

    path = write_recipe(tmp_path, trials=2, epochs=1)
    recipe = load_recipe(path)
    launched, retimed = [], []
    monkeypatch.setattr(runner, "launch_workers", lambda *a, workers, **k: launched.append(workers) or 0)
    monkeypatch.setattr(runner, "_retime_front", lambda study, recipe: retimed.append(study))
    monkeypatch.setattr(runner, "_summary", lambda study: None)
    assert runner.search(str(path), recipe, trials=None, timeout=None, workers=3, until=None, worker_index=0,
                         quiet=True) == 0
    assert launched == [2]
    assert [s.study_name for s in retimed] == [recipe.name] and "data" in retimed[0].user_attrs


@pytest.mark.parametrize("quiet, tty, bars", [(False, True, True), (True, True, False), (False, False, False)])
def test_a_single_worker_shows_epoch_bars_only_to_a_person_watching(tmp_path, monkeypatch, quiet, tty, bars):
    from cnnsearch.recipe import load_recipe
    from tests.study_helpers import write_recipe

    class Stop(Exception):
        pass

    asked = []

    def create(recipe, *, progress):
        asked.append(progress)
        raise Stop

    recipe = load_recipe(write_recipe(tmp_path, trials=2, epochs=1))
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    monkeypatch.setattr(runner.Objective, "create", create)
    with pytest.raises(Stop):
        runner._prepare(recipe, trials=None, until=None, workers=1, quiet=quiet, prefix="", artifacts=None)
    assert asked == [bars] and type(asked[0]) is bool
