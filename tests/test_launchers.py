"""search/'s launchers: worker.sh run from a bare copy of the repository (no .venv, no
install), the Slurm array script run as a Slurm array task would run it, and the Kubernetes
Job manifest's shape; the workers keep their weights in an object store (a real S3 server on
loopback)."""

import os
import shutil
import subprocess
import sys

import optuna
import pytest
import yaml

from tests.conftest import ROOT
from tests.s3_helpers import s3  # noqa: F401  (the fixture)
from tests.study_helpers import write_recipe


def test_the_scripts_parse_and_the_job_runs_worker_sh_with_what_it_needs():
    for script in ("worker.sh", "slurm_array.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "search" / script)]).returncode == 0
        assert os.access(ROOT / "search" / script, os.X_OK)
    job = yaml.safe_load((ROOT / "search" / "k8s_job.yaml").read_text())
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "search/worker.sh" in container["args"][0]
    env = {e["name"] for e in container["env"]}
    assert {"STORAGE", "STUDY", "TRIALS", "ARTIFACTS", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "WORKER_ID"} <= env


@pytest.mark.slow
def test_worker_sh_and_the_slurm_script_from_a_bare_clone(s3, tmp_path):  # noqa: F811
    clone = tmp_path / "clone"
    for part in ("cnnsearch", "search", "spaces"):
        shutil.copytree(ROOT / part, clone / part, ignore=shutil.ignore_patterns("__pycache__"))
    bucket = s3.bucket()
    (clone / "studies").mkdir()
    write_recipe(clone / "studies", name="bare", trials=2, epochs=1)
    url = f"sqlite:///{tmp_path / 'bare.db'}"
    env = {**s3.env(), "PYTHON": sys.executable, "STORAGE": url, "STUDY": "bare", "PYTHONWARNINGS": "ignore",
           "CNNSEARCH_TRAIN_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # the clone's own package, from its root
    first = subprocess.run(["bash", str(clone / "search" / "worker.sh")], capture_output=True, text=True, timeout=600,
                           env={**env, "RECIPE": "studies/bare.toml", "TRIALS": "1",
                                "ARTIFACTS": f"s3://{bucket}/bare"}, stdin=subprocess.DEVNULL)
    assert first.returncode == 0, first.stderr[-2000:]
    # a Slurm array task (the script as sbatch runs it: from its spool, in the submit folder)
    spool = tmp_path / "spool"
    spool.mkdir()
    shutil.copy(clone / "search" / "slurm_array.sh", spool / "slurm_script")
    task = subprocess.run(["bash", str(spool / "slurm_script")], capture_output=True, text=True, timeout=600,
                          env={**env, "TRIALS": "2", "SLURM_SUBMIT_DIR": str(clone), "SLURM_ARRAY_TASK_ID": "3",
                               "SLURM_ARRAY_JOB_ID": "77"}, cwd=spool, stdin=subprocess.DEVNULL)
    assert task.returncode == 0, task.stderr[-2000:]
    trials = optuna.load_study(study_name="bare", storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert trials[1].user_attrs["worker"].startswith("77_3@") and trials[1].user_attrs["sampler_seed"] != 0
    keys = s3.keys(bucket)
    assert {f"bare/{t.user_attrs['weights']}" for t in trials if t.user_attrs.get("status") == "ok"} <= keys
    assert sorted(p.name for p in clone.iterdir()) == ["cnnsearch", "search", "spaces", "studies"]
    assert sorted(p.name for p in (clone / "studies").iterdir()) == ["bare.toml", "space.toml"]  # no folder of weights
