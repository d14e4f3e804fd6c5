"""A study's trial taken away: its network written as standalone code, and its trained
weights (finalize's best seed when it was finalized) downloaded from the study's artifact
store. It reads the study (``report.pick_trial``) and writes files, never the study."""

from __future__ import annotations

from pathlib import Path

import optuna

from .artifacts import download_weights
from .export import export_files
from .report import pick_trial, trial_spec


def export_trial(study: optuna.Study, *, which: str, artifacts: str, output: str | Path,
                 class_name: str = "Net", weights: str | Path | None = None) -> tuple[Path, str]:
    """Write the picked trial's network as code (and its weights: finalize's best seed when
    the trial was finalized, else the search's); returns the code's path and one line that
    says what was exported. The code takes raw images when the study stored its data
    description (every study since the test split), else normalised ones."""
    trial = pick_trial(study, which)
    spec = trial_spec(trial)
    data = study.user_attrs.get("data")
    out = export_files(spec, output, class_name=class_name, data=data)
    a = trial.user_attrs
    final = a.get("final")
    if final:
        source = (f"finalized weights (best of {final['seeds']} seeds, {final['epochs']} epochs): test accuracy "
                  f"{final['test_accuracy_mean']:.4f} +- {final['test_accuracy_std']:.4f}")
    else:
        source = f"the search's weights: validation accuracy {a['accuracy']:.4f} (not finalized)"
    if weights:
        download_weights(final["weights"] if final else a["weights"], artifacts, weights,
                         what=f"weights of trial {trial.number}")
    else:
        source = "no weights asked for (--weights FILE); " + source
    raw = "raw images in [0, 1]" if data else "normalised images (a study from before data descriptions)"
    return out, (f"trial {trial.number} {spec.summary}, {a['latency_ms']:.3f} ms, {a['params']:,} params; "
                 f"{source}; takes {raw}")
