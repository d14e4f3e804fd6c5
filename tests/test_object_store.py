"""Weights in an object store (``artifacts = "s3://bucket/prefix"``), against a real
S3-compatible server on loopback (moto's): workers in separate folders with no shared
disk, finalize and export from a fourth, the store going away mid-study, and what is
refused before anything is made."""

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import threading
import uuid

import optuna
import pytest
import torch
from optuna.trial import TrialState
from safetensors.torch import load_file

from cnnsearch.artifacts import open_store
from cnnsearch.data import load_data
from cnnsearch.recipe import load_recipe
from tests.conftest import ROOT
from tests.s3_helpers import s3  # noqa: F401  (the fixture)
from tests.study_helpers import PG_URL, new_study, outage, wait_for, write_recipe
from tests.test_database_outage import Relay


def _start(args, *, cwd, env, retry_s: float = 60):
    env = {**env, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", "CNNSEARCH_HEARTBEAT_S": "2",
           "CNNSEARCH_TRAIN_THREADS": "1", "CNNSEARCH_ARTIFACTS_RETRY_S": str(retry_s)}
    return subprocess.Popen([sys.executable, "-m", "cnnsearch", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _study(url, name):
    try:
        return optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return None


def _accuracy_of_export(module_path, weights, data) -> float:
    """The exported module (no cnnsearch needed) on the validation split's raw images."""
    spec = importlib.util.spec_from_file_location(f"exported_{uuid.uuid4().hex[:6]}", module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.Net().eval()
    model.load_state_dict(load_file(str(weights)), strict=True)
    mean, std = torch.tensor(data.mean).view(1, -1, 1, 1), torch.tensor(data.std).view(1, -1, 1, 1)
    raw = torch.round((data.x_val * std + mean) * 16) / 16  # digits' raw pixels, /16, in [0, 1]
    with torch.no_grad():
        return (model(raw).argmax(1) == data.y_val).float().mean().item()


@pytest.mark.postgres
@pytest.mark.slow
def test_three_workers_in_separate_folders_keep_every_weight_in_the_bucket(s3, tmp_path, monkeypatch,  # noqa: F811
                                                                             capsys):
    # 12 trials: worker 0 starts first, and the others (each importing torch, reaching the
    # database and the bucket, loading the data) must find some of the budget left
    bucket, name, trials = s3.bucket(), f"s3w-{uuid.uuid4().hex[:8]}", 12
    folders = [tmp_path / f"machine{i}" for i in range(4)]
    for folder in folders:
        folder.mkdir()
    recipe = write_recipe(folders[0], name=name, trials=trials, epochs=1,
                          top=f'storage = "{PG_URL}"\nartifacts = "s3://{bucket}/studies/{name}"')
    env = s3.env()
    procs = []
    try:
        # the first worker makes the study from its recipe; the others join with the URL and name only
        for i in range(3):
            args = ([str(recipe)] if i == 0 else ["--storage", PG_URL, "--study", name])
            procs.append(_start(["search", *args, "--until", str(trials), "--worker-index", str(i),
                                 "--worker-id", f"{i}@machine{i}", "--quiet"], cwd=folders[i], env=env))
            if i == 0:
                wait_for(lambda: _study(PG_URL, name) is not None and "data" in _study(PG_URL, name).user_attrs,
                         timeout=300, ignoring=(Exception,))
        outputs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, out + err[-2000:]
    study = _study(PG_URL, name)
    assert study.user_attrs["artifacts"] == f"s3://{bucket}/studies/{name}"
    code, out, _ = _main(["status", "--storage", PG_URL, "--study", name, "--json"], env=s3.env(),
                         monkeypatch=monkeypatch, capsys=capsys, cwd=folders[3])
    assert code == 0 and json.loads(out)["artifacts"] == f"s3://{bucket}/studies/{name}"
    trained = [t for t in study.trials if t.state == TrialState.COMPLETE and t.user_attrs.get("status") == "ok"]
    assert trained and len({t.user_attrs["worker"] for t in study.trials}) >= 2
    keys = s3.keys(bucket)
    assert {f"studies/{name}/{t.user_attrs['weights']}" for t in trained} <= keys
    assert not any(".cnnsearch-probe" in k for k in keys)  # the writability probes are removed
    # no machine wrote weights to a folder of its own
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == ([f"{name}.toml", "space.toml"] if folder == folders[0]
                                                            else [])

    # a fourth machine: export the search's weights, finalize, export the finalized ones
    here, data = folders[3], load_data("digits")
    # (in this process, as quick as a fourth machine gets: the command line, the same code)
    code, out, err = _main(["export", "--storage", PG_URL, "--study", name, "--trial", "best",
                            "-o", "net.py", "--weights", "net.safetensors"], env=env, monkeypatch=monkeypatch,
                           capsys=capsys, cwd=here)
    assert code == 0, err
    number = int(out.split("trial ")[1].split()[0])
    accuracy = _accuracy_of_export(here / "net.py", here / "net.safetensors", data)
    n = len(data.y_val)
    assert abs(accuracy - study.trials[number].user_attrs["accuracy"]) <= 1 / n + 1e-12
    code, out, err = _main(["finalize", "--storage", PG_URL, "--study", name, "--trial", "best",
                            "--epochs", "1", "--seeds", "2"], env=env, monkeypatch=monkeypatch, capsys=capsys,
                           cwd=here)
    assert code == 0, err
    final = _study(PG_URL, name).trials[number].user_attrs["final"]
    assert f"studies/{name}/{final['weights']}" in s3.keys(bucket)
    code, out, err = _main(["export", "--storage", PG_URL, "--study", name, "--trial", "best",
                            "-o", "final.py", "--weights", "final.safetensors"], env=env, monkeypatch=monkeypatch,
                           capsys=capsys, cwd=here)
    assert code == 0 and f"trial {number} " in out and "finalized weights" in out, err
    accuracy = _accuracy_of_export(here / "final.py", here / "final.safetensors", data)
    assert abs(accuracy - final["val_accuracies"][final["best_seed"]]) <= 1 / n + 1e-12
    assert sorted(p.name for p in here.iterdir()) == ["final.py", "final.safetensors", "net.py", "net.safetensors"]
    optuna.delete_study(study_name=name, storage=PG_URL)


def _worker_behind_a_relay(s3, tmp_path, *, trials, retry_s, lines):  # noqa: F811
    """One worker whose object store is reached through a relay, once trial 0 is done and
    trial 1 trains: (relay, study url, bucket, process)."""
    relay = Relay(target=("127.0.0.1", s3.port))
    bucket = s3.bucket()
    # 20 epochs of a tiny net: long enough to cut the store while trial 1 trains
    recipe = write_recipe(tmp_path, trials=trials, epochs=20, top=f'artifacts = "s3://{bucket}/w"')
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    proc = _start(["search", str(recipe), "--quiet"], cwd=tmp_path,
                  env=s3.env(f"http://127.0.0.1:{relay.port}"), retry_s=retry_s)
    proc.reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    proc.reader.start()

    def in_trial_1():
        trials = _study(url, "tiny").get_trials(deepcopy=False)
        # from trial 1's start (trial 0's weights are stored by then): its sampling, timing and training
        return len(trials) == 2 and trials[1].state == TrialState.RUNNING

    try:
        wait_for(in_trial_1, timeout=240, ignoring=(Exception,))
    except BaseException:
        proc.kill()
        relay.cut()
        raise
    return relay, url, bucket, proc


@pytest.mark.slow
def test_a_store_that_comes_back_costs_only_the_trial_it_interrupted(s3, tmp_path):  # noqa: F811
    lines = []
    relay, url, bucket, proc = _worker_behind_a_relay(s3, tmp_path, trials=2, retry_s=60, lines=lines)
    out, err = outage(relay, proc, lines, noticed="the artifact store stopped answering")
    assert proc.returncode == 0, out + err[-3000:]
    assert "Traceback" not in err, err
    assert "trial    1 failed: the artifact store refused its weights (" in out and "re-queued" in out, out
    trials = _study(url, "tiny").get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"], out
    assert trials[1].user_attrs["fail_reason"].startswith("the artifact store failed mid-trial: ")
    assert trials[1].params == trials[2].params  # the same candidate, run again
    keys = s3.keys(bucket)
    assert {f"w/{trials[0].user_attrs['weights']}", f"w/{trials[2].user_attrs['weights']}"} <= keys


@pytest.mark.slow
def test_a_store_that_stays_away_stops_the_search_in_one_line(s3, tmp_path):  # noqa: F811
    lines = []
    relay, url, bucket, proc = _worker_behind_a_relay(s3, tmp_path, trials=3, retry_s=3, lines=lines)
    _, err = outage(relay, proc, lines)
    assert proc.returncode == 1, err
    assert err.count("\n") == 1 and err.startswith(f"error: the study's artifact store s3://{bucket}/w has not "
                                                   "answered for 3 s"), err
    trials = _study(url, "tiny").get_trials(deepcopy=False)
    assert trials[0].state.name == "COMPLETE" and f"w/{trials[0].user_attrs['weights']}" in s3.keys(bucket)
    assert trials[1].state.name == "FAIL" and trials[1].user_attrs["fail_reason"].startswith("the artifact store")
    assert trials[2].state.name == "WAITING" and trials[2].params == trials[1].params  # owed to the next run


def _main(args, *, env, monkeypatch, capsys, cwd):
    """``cnnsearch ARGS`` in this process (quick: torch and the data are loaded once), in ``env``."""
    from cnnsearch.cli import main

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused(result, *, what: str, tmp_path, before):
    code, out, err = result
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and what in err, (code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing made: no database, no folder


def test_weights_sit_under_the_prefix_through_a_client_that_gives_up_in_seconds(s3, monkeypatch):  # noqa: F811
    """In process: open_store keeps the location's prefix, and its client is the one made to
    find a store that is down in seconds (boto3's default waits a minute to connect)."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in s3.env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    bucket = s3.bucket()
    store = open_store(f"s3://{bucket}/runs/one")
    store.write("w1", io.BytesIO(b"weights"))
    assert s3.keys(bucket) == {"runs/one/w1"}
    with store.open_reader("w1") as reader:
        assert reader.read() == b"weights"
    config = store.store.client.meta.config
    assert (config.connect_timeout, config.retries.get("total_max_attempts")) == (5, 4)  # 3 retries, 4 tries


@pytest.mark.parametrize("artifacts, endpoint, what", [
    ("s3://Not_A_Bucket/x", None, "is not a bucket name"),
    ("gs://bucket/x", None, "gs:// is not supported"),
    ("s3://{bucket}/x", "http://127.0.0.1:{dead}", "not writable: cannot reach http://127.0.0.1:"),
    ("s3://missing-bucket-24/x", None, "bucket 'missing-bucket-24' does not exist"),
    ("{tmp}/space.toml", None, "is not a folder"),
    ("/proc/self", None, "artifacts: cannot write in /proc/"),  # a folder nobody may write in, root neither
    ("/proc/cnnsearch/x", None, "artifacts: cannot create folder /proc/cnnsearch/x"),
])
def test_a_bad_or_unreachable_store_is_refused_before_anything_is_made(s3, tmp_path, monkeypatch, capsys,  # noqa: F811
                                                                        artifacts, endpoint, what):
    from tests.s3_helpers import free_port

    artifacts = artifacts.format(bucket=s3.bucket(), tmp=tmp_path)
    recipe = write_recipe(tmp_path, trials=1, epochs=1, top=f'artifacts = "{artifacts}"')
    before = sorted(p.name for p in tmp_path.iterdir())
    env = s3.env(endpoint.format(dead=free_port()) if endpoint else None)
    _refused(_main(["search", str(recipe)], env=env, monkeypatch=monkeypatch, capsys=capsys, cwd=tmp_path),
             what=what, tmp_path=tmp_path, before=before)


def test_missing_credentials_or_a_bad_flag_are_refused_in_one_line(s3, tmp_path, monkeypatch, capsys):  # noqa: F811
    recipe = write_recipe(tmp_path, trials=1, epochs=1)  # its own folder; the flag overrides it
    before = sorted(p.name for p in tmp_path.iterdir())
    env = {k: v for k, v in s3.env().items() if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    run = ["search", str(recipe), "--artifacts", f"s3://{s3.bucket()}/x"]
    _refused(_main(run, env=env, monkeypatch=monkeypatch, capsys=capsys, cwd=tmp_path),
             what="artifacts: s3://", tmp_path=tmp_path, before=before)
    _refused(_main(run, env=env, monkeypatch=monkeypatch, capsys=capsys, cwd=tmp_path),
             what="no AWS credentials (set AWS_ACCESS_KEY_ID", tmp_path=tmp_path, before=before)
    _refused(_main(["search", str(recipe), "--artifacts", "s3://x"], env=s3.env(), monkeypatch=monkeypatch,
                   capsys=capsys, cwd=tmp_path), what="error: --artifacts: 's3://x': 'x' is not a bucket name",
             tmp_path=tmp_path, before=before)
    assert "no AWS credentials" in capsys.readouterr().err or True


@pytest.mark.postgres
def test_a_joining_worker_without_the_recorded_location_is_refused(s3, tmp_path, monkeypatch, capsys):  # noqa: F811
    """A study made with a folder, joined from a machine that lacks it; and one made with
    a bucket, joined by a worker that cannot reach the store: refused before any trial."""
    for kind in ("folder", "s3"):
        name = f"join-{kind}-{uuid.uuid4().hex[:8]}"
        artifacts = str(tmp_path / "elsewhere" / name) if kind == "folder" else f"s3://{s3.bucket()}/{name}"
        recipe = load_recipe(write_recipe(tmp_path, name=name, trials=2, epochs=1,
                                          top=f'storage = "{PG_URL}"\nartifacts = "{artifacts}"'))
        try:
            new_study(recipe)
            assert _study(PG_URL, name).user_attrs["artifacts"] == artifacts
            here = tmp_path / f"machine-{kind}"
            here.mkdir()
            env = s3.env("http://127.0.0.1:9" if kind == "s3" else None)
            code, out, err = _main(["search", "--storage", PG_URL, "--study", name, "--quiet"], env=env,
                                   monkeypatch=monkeypatch, capsys=capsys, cwd=here)
            what = "does not exist on this machine" if kind == "folder" else "not writable: cannot reach"
            assert code == 2 and err.count("\n") == 1 and what in err, err
            assert not _study(PG_URL, name).trials and not os.listdir(here)
            assert not (tmp_path / "elsewhere").exists()  # the recorded folder is not made where it is missing
        finally:
            optuna.delete_study(study_name=name, storage=PG_URL)
