"""Rules the end-to-end tests reach only in subprocesses, pinned in process: the command and
environment of each local worker, a failed trial re-queued clean, how a device is described,
and a latency server with another thread count refused. Each was a surviving mutant."""

import os
import sys
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
                       "fingerprint": "abc"}.items():
        trial.set_user_attr(key, value)
    study.tell(trial, state=TrialState.FAIL)
    failed = study.trials[0]
    assert requeue_failed(study, failed)
    again = study.trials[1]
    assert again.state == TrialState.WAITING and again.params == failed.params
    assert again.user_attrs == {"fingerprint": "abc"}
    assert failed.user_attrs["status"] == "latency_server_down"  # the caller's trial is left as it was
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
