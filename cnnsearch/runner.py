"""What ``cnnsearch search`` does around the objective and the worker loop: size the
budget, show progress, and start K local workers when asked."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import optuna
import torch

from .objective import Objective
from .recipe import Recipe
from .storage import open_storage
from .study import INFEASIBLE_CHECK_AFTER, finished_count, open_study, record_data, run_worker
from .trials import status_of


def trial_line(trial: optuna.trial.FrozenTrial) -> str:
    a = trial.user_attrs
    acc, lat = a.get("accuracy"), a.get("latency_ms")
    params = a.get("params")
    text = f"trial {trial.number:>4} {status_of(trial):<13}"
    text += f" acc {acc:.4f}" if acc is not None else " acc    -  "
    text += f"  {lat:8.3f} ms" if lat is not None else "         - ms"
    text += f"  {params:>10,} params" if params is not None else "           - params"
    text += f"  {a.get('summary', '')}"
    why = a.get("infeasible_reason") or a.get("fail_reason")
    return text + (f"  ({why})" if why else "")


def _worker_env(index: int) -> dict[str, str]:
    env = dict(os.environ)
    gpus = torch.cuda.device_count()
    if gpus and "CUDA_VISIBLE_DEVICES" not in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)  # round robin: K > GPUs shares them
    return env


def launch_workers(recipe_path: str | None, recipe: Recipe, *, workers: int, until: int,
                   timeout: float | None) -> int:
    """K worker processes on one study; each prints its finished trials."""
    procs = []
    for i in range(workers):
        cmd = [sys.executable, "-m", "cnnsearch", "search", *([recipe_path] if recipe_path else []),
               "--storage", recipe.storage, "--study", recipe.name, "--until", str(until),
               "--worker-index", str(i), "--quiet"]
        if timeout:
            cmd += ["--timeout", str(timeout)]
        procs.append(subprocess.Popen(cmd, env=_worker_env(i), stdin=subprocess.DEVNULL))
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the workers got the same SIGINT: let them mark their trials
        codes = [p.wait() for p in procs]
        raise
    return max(codes)


def worker_identity(index: int, worker_id: str | None, launched: bool) -> str:
    """``"0"`` for a plain single search (so a fresh study reproduces); otherwise unique to
    this process (index@host:pid), unless the caller names it (``search/worker.sh``)."""
    if worker_id:
        return worker_id
    if index == 0 and not launched:
        return "0"
    return f"{index}@{socket.gethostname()}:{os.getpid()}"


def search(recipe_path: str | None, recipe: Recipe, *, trials: int | None, timeout: float | None,
           workers: int, until: int | None, worker_index: int, quiet: bool,
           worker_id: str | None = None) -> int:
    storage = open_storage(recipe.storage)
    worker = worker_identity(worker_index, worker_id, launched=until is not None)
    study = open_study(recipe, storage, worker=worker)
    done = finished_count(study)
    if until is None:
        until = done + trials if trials else recipe.trials
    if done >= until:
        print(f"study {recipe.name!r} already has {done} finished trials (budget {until}); "
              f"--trials N runs N more")
        return 0
    if workers > 1:
        print(f"study {recipe.name!r}: {workers} workers, {until - done} trials to go ({recipe.storage})")
        code = launch_workers(recipe_path, recipe, workers=min(workers, until - done), until=until,
                              timeout=timeout)
        if code == 0:
            _summary(optuna.load_study(study_name=recipe.name, storage=storage))
        return code

    # the data first: a study whose data now loads differently is refused before any output
    objective = Objective.create(recipe, progress=not quiet and sys.stderr.isatty())  # no nested bars in logs
    objective.run_attrs = {"sampler_seed": study.sampler_seed, "worker": study.worker_identity}
    record_data(study, objective.data.description())
    bar = None
    if not quiet:
        from tqdm.auto import tqdm

        print(f"study {recipe.name!r}: {until - done} trials to go on {recipe.dataset} "
              f"({recipe.storage})")
        bar = tqdm(total=until - done, unit="trial", dynamic_ncols=True)
    prefix = f"[w{worker_index}] " if quiet else ""

    def on_trial(study, trial):
        line = prefix + trial_line(trial)
        if bar is None:
            print(line, flush=True)
        else:
            bar.write(line)
            bar.update(1)

    try:
        run_worker(study, objective, until=until, timeout=timeout, on_trial=on_trial,
                   infeasible_after=min(INFEASIBLE_CHECK_AFTER, recipe.trials),
                   max_consecutive_failures=recipe.max_consecutive_failures)
    finally:
        if bar is not None:
            bar.close()
    if not quiet:
        _summary(study)
    return 0


def _summary(study: optuna.Study) -> None:
    from .report import trials_frame

    df = trials_frame(study)
    counts = df["status"].value_counts().to_dict()
    front = df[df["pareto"]].sort_values("latency_ms")
    print(f"{len(df)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for _, row in front.iterrows():
        print(f"  pareto: trial {row.trial:>4}  acc {row.accuracy:.4f}  {row.latency_ms:.3f} ms  "
              f"{int(row.params):,} params  {row.summary}")
    if front.empty:
        print("no feasible trial has finished training yet")
