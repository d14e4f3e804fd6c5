"""Where a trial's time goes, and how busy a study keeps the device: one short study, run as
a user runs it (``cnnsearch search --workers K``), taken apart from what its trials record.

Prints one JSON line with
- ``trials_per_min``: finished trials per minute of the study's wall time (start-up included);
- ``train_images_per_s_sum``: training images per second, all workers together, over the
  span from the first trial's start to the last one's end;
- ``single_model_peak_images_per_s``: the trainer benchmark's epoch-2+ figure on the same
  device (``benchmarks/trainer.py``), measured in this run: what one model alone reaches;
- ``gpu_busy``: mean GPU utilisation 0-1 over the study (nvidia-smi every 0.5 s; null on a CPU);
- ``phases``: mean seconds per trained trial in each phase (``user_attrs["phases"]``: sample,
  check, build, latency, train_setup, paused (standing aside while a sibling timed),
  first_epoch, later_epochs, evaluation, weights, storage) plus ``ask_tell`` (Optuna's ask and tell and the sampler: the trial's span less
  the phases the objective timed);
- ``outside_training_share``: the share of a trial's span outside its epochs (training and
  evaluation), and ``fixed_cost_share``, that share less the latency measurement (the
  product, not overhead); ``phases_median`` and ``fixed_cost_share_median``: the same for
  the median trial, without each process's one-off start-up costs;
- ``latency_tau_vs_quiet``: Kendall tau between the latencies recorded in the study and a
  quiet re-timing of the same networks after it (interleaved, best of two passes).

    python benchmarks/trial_anatomy.py [--device cpu|cuda] [--workers K] [--trials N] [--n N]
                                       [--epochs E] [--dataset digits|shapes]

Defaults: on a CPU the embedded digits demo's recipe (small-images space, 6 epochs, one
worker); on a GPU the GPU kit's study (compact space, shapes 32x32, n 20,000, 5 epochs).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import fmean, median

import optuna
import torch
from scipy.stats import kendalltau

from cnnsearch import ArchSpec, build
from cnnsearch.latency import measure

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("sample", "check", "build", "latency", "train_setup", "paused", "first_epoch", "later_epochs",
          "evaluation", "weights", "storage")
TRAINING = ("first_epoch", "later_epochs", "evaluation")


def recipe_text(*, dataset: str, device: str, trials: int, n: int, epochs: int) -> str:
    if dataset == "digits":
        data, space = 'dataset = "digits"', "small-images.toml"
    else:
        data, space = f'dataset = "shapes"\n[data]\nn = {n}\nsize = 32\nclasses = 6', "compact.toml"
    return f"""name = "anatomy"
space = "{ROOT / 'spaces' / space}"
objectives = ["accuracy", "latency_ms"]
trials = {trials}
seed = 0
sampler = "tpe"
{data}
[train]
epochs = {epochs}
device = "{device}"
[latency]
device = "{device}"
[early_stopping]
enabled = false  # as the figures were measured: every trial trains every epoch
"""


def peak_images_per_s(device: str, n: int) -> float | None:
    """benchmarks/trainer.py's epochs 2+ figure: the compact 1M-parameter net on a GPU, the
    small tutorial-sized one on a CPU."""
    model = "compact1m" if device.startswith("cuda") else "small"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "trainer.py"), "--device", device, "--model",
                          model, "--n", str(n), "--epochs", "3"], capture_output=True, text=True, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]).get("cnnsearch_images_per_s_after_epoch1") if lines else None


class GpuBusy:
    """nvidia-smi's utilization.gpu every 0.5 s while the study runs (None without a GPU)."""

    def __init__(self, enabled: bool):
        self.samples: list[float] = []
        self.proc = None
        if enabled and shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                          "-lms", "500"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.split(",")[0]) / 100)
            except ValueError:
                pass

    def stop(self) -> float | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        return round(fmean(self.samples), 3) if self.samples else None


def quiet_retiming(trials: list, device: str) -> tuple[list[float], list[float]]:
    """(in-study, quiet) latency per distinct network, the quiet one interleaved, best of two."""
    by_arch = {}
    for t in trials:
        by_arch.setdefault(json.dumps(t.user_attrs["arch"], sort_keys=True), t)
    models = [(t, build(ArchSpec.from_dict(t.user_attrs["arch"]))) for t in by_arch.values()]
    best = {}
    for _ in range(2):
        for t, model in models:
            lat = measure(model, tuple(t.user_attrs["arch"]["input"]), device=device)
            best[t.number] = min(best.get(t.number, float("inf")), lat.median_ms)
    return [t.user_attrs["latency_ms"] for t, _ in models], [best[t.number] for t, _ in models]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--n", type=int, default=20000, help="images in the shapes set")
    parser.add_argument("--epochs", type=int, default=None, help="default: 6 on digits, 5 on shapes")
    parser.add_argument("--dataset", choices=["digits", "shapes"], default=None,
                        help="default: shapes on a GPU, digits on a CPU")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    dataset = args.dataset or ("shapes" if gpu else "digits")
    epochs = args.epochs or (6 if dataset == "digits" else 5)

    peak = peak_images_per_s(args.device, args.n if gpu else min(args.n, 4000))
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "anatomy.toml"
        recipe.write_text(recipe_text(dataset=dataset, device=args.device, trials=args.trials, n=args.n,
                                      epochs=epochs))
        busy = GpuBusy(gpu)
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "cnnsearch", "search", str(recipe), "--workers",
                              str(args.workers), "--quiet"], capture_output=True, text=True, cwd=tmp,
                             env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.perf_counter() - t0
        gpu_busy = busy.stop()
        if run.returncode != 0:
            print(json.dumps({"benchmark": "trial_anatomy", "error": run.stderr.strip()[-500:]}))
            sys.exit(1)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name="anatomy", storage=f"sqlite:///{tmp}/anatomy.db")
        trials = study.get_trials(deepcopy=False)
        trained = [t for t in trials if t.user_attrs.get("status") == "ok" and "phases" in t.user_attrs]
        finished = [t for t in trials if t.state.is_finished()]
        span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
        images = sum(t.user_attrs.get("train_images", 0) for t in trials)
        spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trained]
        per_trial = [{"paused": 0.0, **t.user_attrs["phases"],
                      "ask_tell": s - sum(t.user_attrs["phases"].get(p, 0.0) for p in PHASES)}
                     for s, t in zip(spans, trained)]
        phases = {p: round(fmean(x[p] for x in per_trial), 4) for p in (*PHASES, "ask_tell")}
        # the median trial: without the one-off costs of each process's first trial (torch
        # imports torch._dynamo, ~2.5 s, when it builds its first optimizer)
        typical = {p: round(median(x[p] for x in per_trial), 4) for p in (*PHASES, "ask_tell")}
        trial_s = fmean(spans)
        outside = trial_s - sum(phases[p] for p in TRAINING)
        typical_s = median(spans)
        typical_fixed = sum(typical[p] for p in (*PHASES, "ask_tell") if p not in (*TRAINING, "latency"))
        in_study, quiet = quiet_retiming(trained, args.device)
    tau = kendalltau(in_study, quiet).statistic if len(in_study) > 1 else None
    print(json.dumps({
        "benchmark": "trial_anatomy",
        "device": args.device,
        "device_name": torch.cuda.get_device_name(0) if gpu else "cpu",
        "dataset": dataset,
        "workers": args.workers,
        "trials": len(finished),
        "trained": len(trained),
        "epochs": epochs,
        "wall_s": round(wall, 2),
        "trials_per_min": round(60 * len(finished) / wall, 2),
        "train_images_per_s_sum": round(images / span) if span else None,
        "single_model_peak_images_per_s": peak,
        "gpu_busy": gpu_busy,
        "trial_s": round(trial_s, 4),
        "phases": phases,
        "outside_training_share": round(outside / trial_s, 4),
        "fixed_cost_share": round((outside - phases["latency"]) / trial_s, 4),
        "typical_trial_s": round(typical_s, 4),
        "phases_median": typical,
        "fixed_cost_share_median": round(typical_fixed / typical_s, 4),
        "latency_tau_vs_quiet": round(tau, 3) if tau is not None else None,
        "latency_networks": len(in_study),
    }))


if __name__ == "__main__":
    main()
