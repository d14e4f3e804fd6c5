"""What ``cnnsearch search`` does around the objective and the worker loop: size the
budget, show progress, and start K local workers when asked."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from dataclasses import replace

import optuna
import torch

from .artifacts import check_writable, is_url, settle
from .baselines import check_sampler, enqueue_baselines, missing_baselines
from .cli_format import BALANCED_HINT, imbalance
from .data import load_data
from .latency_remote import check_worker
from .objective import Objective
from .recipe import Recipe, check_runnable
from .recovery import process_owner, recover_dead_trials
from .report import SCORE_LABELS, quality_metric
from .storage import check_url, count_trials, open_storage, storage_exists
from .study import (
    INFEASIBLE_CHECK_AFTER,
    check_existing,
    finished_count,
    open_worker,
    record_data,
    resolve_search,
    run_worker,
)
from .trials import FINISHED, status_of


def trial_line(trial: optuna.trial.FrozenTrial, *, by: str = "accuracy") -> str:
    """One finished trial; ``by`` the study's score (``report.quality_metric``)."""
    a = trial.user_attrs
    acc, lat = a.get(by), a.get("latency_ms")
    params = a.get("params")
    name = SCORE_LABELS[by]
    text = f"trial {trial.number:>4} {status_of(trial):<13}"
    text += f" {name} {acc:.4f}" if acc is not None else f" {name}    -  "
    text += f"  {lat:8.3f} ms" if lat is not None else "         - ms"
    text += f"  {params:>10,} params" if params is not None else "           - params"
    text += f"  {a.get('summary', '')}" + (f"  [baseline {a['baseline']}]" if "baseline" in a else "")
    why = a.get("infeasible_reason") or a.get("fail_reason")
    return text + (f"  ({why})" if why else "")


def data_line(data) -> str:
    """'digits: 1x8x8, 10 classes, 1,078 train / 359 val images, 104-112 per class in train'."""
    counts = data.class_counts()
    c, h, w = data.input_shape
    train = counts["train"].values()
    text = (f"{data.name}: {c}x{h}x{w}, {data.num_classes} classes, "
            + " / ".join(f"{sum(v.values()):,} {split}" for split, v in counts.items())
            + f" images, {min(train):,}-{max(train):,} per class in train")
    if imbalance(train):
        text += f" (imbalanced: {BALANCED_HINT})"
    return text


def auto_workers() -> int:
    """``--workers auto``: two workers per GPU (one trains while the other's trial is in its
    fixed costs: sampling, latency, evaluation, storage), else one per four host cores (a
    small network's training gains little past four threads). Local workers never time a
    network while another trains (quiet.py), so sharing costs no latency soundness."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus:
        return 2 * gpus
    return max(1, len(os.sched_getaffinity(0)) // 4)


def _worker_env(index: int, workers: int) -> dict[str, str]:
    env = dict(os.environ)
    # K local workers share the CPU cores for training instead of each taking all of them
    env["CNNSEARCH_TRAIN_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))
    # round robin over this machine's GPUs, or over those CUDA_VISIBLE_DEVICES already lists
    # (a scheduler's share): K > GPUs shares them
    listed = [g.strip() for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    gpus = listed or [str(i) for i in range(torch.cuda.device_count())]
    if gpus and "CUDA_VISIBLE_DEVICES" in os.environ and not listed:
        gpus = []  # set but empty: no GPU for this job
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
    return env


def launch_workers(recipe_path: str | None, recipe: Recipe, *, workers: int, until: int,
                   timeout: float | None) -> int:
    """K worker processes on one study; each prints its finished trials."""
    procs = []
    envs = [_worker_env(i, workers) for i in range(workers)]
    gpus = [env.get("CUDA_VISIBLE_DEVICES") for env in envs]
    if any(gpus):  # which worker got which GPU (the scheduler's ids)
        print("GPUs: " + ", ".join(f"w{i} -> {g}" for i, g in enumerate(gpus)),
              flush=True)
    for i in range(workers):
        cmd = [sys.executable, "-m", "cnnsearch", "search", *([recipe_path] if recipe_path else []),
               "--storage", recipe.storage, "--study", recipe.name, "--until", str(until),
               "--worker-index", str(i), "--quiet", *(["--artifacts", recipe.artifacts] if recipe.artifacts else [])]
        if timeout:
            cmd += ["--timeout", str(timeout)]
        procs.append(subprocess.Popen(cmd, env=envs[i], stdin=subprocess.DEVNULL))
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
           worker_id: str | None = None, artifacts: str | None = None) -> int:
    """``cnnsearch search``: check, open or create the study, then run this worker (or
    launch ``workers`` local ones) until the study holds ``until`` finished trials (None: the
    recipe's budget, or ``trials`` more). Returns the exit code."""
    check_runnable(recipe)  # before the study is created or opened
    if os.environ.get("CNNSEARCH_TRAIN_THREADS", "").isdigit():  # set by launch_workers
        torch.set_num_threads(max(1, int(os.environ["CNNSEARCH_TRAIN_THREADS"])))
    prefix = f"[w{worker_index}] " if quiet else ""
    ready = _prepare(recipe, trials=trials, until=until, workers=workers, quiet=quiet, prefix=prefix,
                     artifacts=artifacts)
    if isinstance(ready, int):
        return ready
    recipe, storage, objective, description = ready
    seat = open_worker(recipe, storage, worker=worker_identity(worker_index, worker_id, launched=until is not None))
    study = seat.study
    if description is not None:
        record_data(study, description)
    if study.user_attrs.get("artifacts", recipe.artifacts) != recipe.artifacts:  # another worker made it first
        recipe = replace(recipe, artifacts=study.user_attrs["artifacts"])
        check_writable(recipe.artifacts, create=False)
        if objective is not None:
            objective.recipe = recipe
    _enqueue(study, recipe, prefix)
    done = finished_count(study)
    owed = count_trials(study, (optuna.trial.TrialState.WAITING,))
    if until is None:
        until = done + trials if trials else recipe.trials
    if done >= until and not owed:  # another worker finished the budget meanwhile
        return _budget_met(recipe, done, until)
    to_go = max(until - done, owed)  # an owed trial (re-queued, a baseline) is one of the budget's
    if workers > 1:
        print(f"study {recipe.name!r}: {workers} workers, {to_go} trials to go ({recipe.storage})")
        code = launch_workers(recipe_path, recipe, workers=min(workers, to_go), until=until, timeout=timeout)
        if code == 0:
            study = optuna.load_study(study_name=recipe.name, storage=storage)
            _retime_front(study, recipe)
            _summary(study)
        return code
    objective.run_attrs = {"sampler_seed": seat.sampler_seed, "worker": seat.worker,
                           "owner": process_owner()}
    objective.fingerprint = study.user_attrs["fingerprint"]  # the study's, fixed when it was made
    _run_here(study, recipe, objective, done=done, until=until, to_go=to_go, timeout=timeout, quiet=quiet,
              prefix=prefix)
    if not quiet:  # a worker among many leaves it to whoever launched them
        _retime_front(study, recipe)
        _summary(study)
    return 0


def _prepare(recipe: Recipe, *, trials: int | None, until: int | None, workers: int, quiet: bool, prefix: str,
             artifacts: str | None) -> int | tuple:
    """Everything checked before a study is created or joined: an exit code when there is
    nothing to do, else (recipe with its artifacts settled, the open storage or None,
    this worker's Objective or None, the data description to record or None)."""
    # an existing study first, read and checked before any data loads: a changed recipe is
    # refused at once, and dead workers' trials are failed and re-queued (owed) before the
    # budget is judged, so that none stays RUNNING for every later run; a met budget loads nothing
    storage = open_storage(recipe.storage) if storage_exists(recipe.storage) else None
    existing = check_existing(storage, recipe) if storage is not None else None
    recipe = resolve_search(existing, recipe)  # its sampler and early stopping: the study's, where unwritten
    check_sampler(recipe.sampler, recipe.baselines)  # baselines need a sampler that takes them
    # the study's recorded artifacts location, whatever this machine's recipe computes
    recipe = replace(recipe, artifacts=settle(existing.user_attrs.get("artifacts") if existing else None,
                                              recipe.artifacts, given=artifacts, made=existing is not None))
    if existing is not None:
        check_worker(existing, recipe.latency)  # one front, one device: another device's worker is refused
        for number, why in recover_dead_trials(existing):
            print(f"{prefix}trial {number:>4} failed: {why}", flush=True)
        done = finished_count(existing)
        budget = until if until is not None else done + trials if trials else recipe.trials
        # a baseline not yet run is owed like a re-queued trial (enqueued once the data is checked)
        owed = count_trials(existing, (optuna.trial.TrialState.WAITING,)) + len(
            missing_baselines(existing, recipe.baselines))
        if done >= budget and not owed:
            return _budget_met(recipe, done, budget)
    # where the weights go, checked before the study is made or a worker trains (a probe
    # written and removed): at once for an existing study or a bucket; a recorded folder
    # missing here (another machine, no shared disk) is refused, not made (SQLite excepted:
    # the database is on this machine's disk)
    early = existing is not None or is_url(recipe.artifacts)
    if early:
        check_writable(recipe.artifacts, create=existing is None or "artifacts" not in existing.user_attrs
                       or recipe.storage.startswith("sqlite"))
    # then the data, before anything is created: a recipe whose data cannot load leaves no
    # study behind (nor a database file), and data that now loads differently is refused. A
    # launcher of K workers loads it only for a study that has no data description yet.
    objective, description = None, None
    if workers == 1:
        objective = Objective.create(recipe, progress=not quiet and sys.stderr.isatty())  # no nested bars in logs
        description = objective.data.description()
    elif existing is None or "data" not in existing.user_attrs:
        description = load_data(recipe.dataset, **recipe.data).description()
    if not early:  # a new folder is made only once the data has loaded
        check_url(recipe.storage)  # a SQLite path that cannot be a database: refused before the folder is made
        check_writable(recipe.artifacts, create=True)
    return recipe, storage or open_storage(recipe.storage), objective, description


def _run_here(study: optuna.Study, recipe: Recipe, objective: Objective, *, done: int, until: int, to_go: int,
              timeout: float | None, quiet: bool, prefix: str) -> None:
    """This process's trials until the study holds ``until``, with progress: a live bar for
    a person watching, else plain lines with elapsed time and an estimate of the rest."""
    bar = None
    if not quiet:
        print(f"study {recipe.name!r}: {to_go} trials to go on {recipe.dataset} "
              f"({recipe.storage})", flush=True)
        print(data_line(objective.data), flush=True)
    if not quiet and sys.stderr.isatty():  # a person watching: a live bar
        from tqdm.auto import tqdm

        bar = tqdm(total=to_go, unit="trial", dynamic_ncols=True)
    else:  # a log, CI, a worker: plain lines only, with elapsed time and an estimate of the rest
        objective.on_epoch = _epoch_line(prefix)
    started = time.monotonic()

    def on_trial(study, trial):
        line = prefix + trial_line(trial, by=quality_metric(recipe.objectives))
        if bar is None:  # progress of the whole study (every worker's trials), not this worker's
            now_done = count_trials(study, FINISHED)
            elapsed = time.monotonic() - started
            rate = max(now_done - done, 1) / elapsed
            eta = max(0, until - now_done) / rate
            print(f"{line}  [{now_done}/{until}, {_duration(elapsed)} elapsed, ETA {_duration(eta)}]", flush=True)
        else:
            bar.write(line)
            bar.update(1)

    try:
        run_worker(study, objective, until=until, timeout=timeout, on_trial=on_trial,
                   on_note=lambda line: print(prefix + line, flush=True),
                   infeasible_after=min(INFEASIBLE_CHECK_AFTER, recipe.trials),
                   max_consecutive_failures=recipe.max_consecutive_failures)
    finally:
        if bar is not None:
            bar.close()


def _enqueue(study: optuna.Study, recipe: Recipe, prefix: str) -> None:
    added = enqueue_baselines(study, recipe.baselines, url=recipe.storage)
    if added:
        print(f"{prefix}baselines to run first: {', '.join(added)}", flush=True)


def _budget_met(recipe: Recipe, done: int, budget: int) -> int:
    print(f"study {recipe.name!r} already has {done} finished trials (budget {budget}); --trials N runs N more")
    return 0


def _retime_front(study: optuna.Study, recipe: Recipe) -> None:
    """Best effort: the search has succeeded whatever happens here."""
    try:
        changes = remeasure_front(study, recipe)
    except Exception as exc:  # a storage that cannot annotate finished trials, an old arch, ...
        print(f"note: the Pareto front was not re-timed ({type(exc).__name__}: {exc})", file=sys.stderr)
        return
    if changes:
        worst = max(abs(new / old - 1) for _, old, new in changes)
        print(f"re-measured the latency of the {len(changes)} Pareto-optimal trial(s), interleaved: "
              f"largest change {worst:.1%} (stored as latency_remeasured_ms)")


def remeasure_front(study: optuna.Study, recipe: Recipe, *, passes: int = 2) -> list[tuple[int, float, float]]:
    """Time every Pareto-optimal trial again, interleaved (each pass times each member once,
    so a slow moment of the machine touches all alike), and store the best figure beside the
    first as ``latency_remeasured_ms``: the front's own latencies, measured side by side.
    Returns (trial, first, re-measured) per member."""
    from .build import build
    from .latency_remote import device_identity, time_candidate
    from .report import trials_frame
    from .spec import ArchSpec
    from .storage import set_finished_trial_user_attrs

    if "latency_ms" not in recipe.objectives:
        return []
    df = trials_frame(study)
    trials = study.get_trials(deepcopy=False)
    front = [trials[int(n)] for n in df.loc[df["pareto"], "trial"]
             if "arch" in trials[int(n)].user_attrs]  # trials added by hand carry no network
    models = [(t, build(ArchSpec.from_dict(t.user_attrs["arch"]))) for t in front]
    best: dict[int, float] = {}
    recorded = study.user_attrs.get("latency_device", {}).get("device")
    for _ in range(passes):
        for t, model in models:
            lat = time_candidate(model, tuple(t.user_attrs["arch"]["input"]), recipe.latency)
            if recorded is not None and device_identity(lat.fingerprint) != recorded:
                return []  # another device answers now (the server's board changed): its figures stay out
            best[t.number] = min(best.get(t.number, math.inf), lat.median_ms)
    for t, _ in models:
        set_finished_trial_user_attrs(study, t, {"latency_remeasured_ms": best[t.number]})
    return [(t.number, t.user_attrs["latency_ms"], best[t.number]) for t, _ in models]


LONG_TRIAL_S = 10.0  # trials past this get a line per epoch in logs


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _epoch_line(prefix: str):
    def on_epoch(number: int, epoch: int, epochs: int, accuracy: float, seconds: float) -> None:
        if seconds >= LONG_TRIAL_S:
            print(f"{prefix}trial {number:>4} epoch {epoch}/{epochs}: val acc {accuracy:.4f} "
                  f"({_duration(seconds)} into the trial)", flush=True)
    return on_epoch


def _summary(study: optuna.Study) -> None:
    from .report import trials_frame

    df = trials_frame(study)
    by = quality_metric(study.metric_names)
    counts = df["status"].value_counts().to_dict()
    front = df[df["pareto"]].sort_values("latency_ms")
    print(f"{len(df)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for _, row in front.iterrows():
        print(f"  pareto: trial {row.trial:>4}  {SCORE_LABELS[by]} {row[by]:.4f}  "
              f"{row.latency_ms:.3f} ms  "
              f"{int(row.params):,} params  {row.summary}")
    if front.empty:
        print("no feasible trial has finished training yet")
