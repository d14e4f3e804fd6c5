"""``cnnsearch report``: one self-contained HTML file (plotly.js inlined, no network) with
the Pareto plot, history, importances, leaderboards and the best networks' shape tables,
plus each study's trials as CSV."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

import optuna
import pandas as pd

from .cli_format import human
from .plots import history_figure, importance_figure, pareto_figure
from .report import leaderboard, pareto_axis, quality_metric, shown_latency, trial_spec, trials_frame
from .shapes import check

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.5rem 0 1rem; }
th, td { padding: 0.2rem 0.6rem; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f6f6f6; } td.text, th.text { text-align: left; font-family: monospace; }
.muted { color: #777; }
"""

BOARD_COLUMNS = ["rank", "trial", "val_accuracy", "val_balanced_accuracy", "test_final", "latency_ms", "latency_from", "params", "flops", "train_seconds",
                 "pareto", "summary", "baseline"]


def _table(df: pd.DataFrame, text_columns: tuple[str, ...] = ("summary", "baseline")) -> str:
    head = "".join(f'<th class="{"text" if c in text_columns else ""}">{html.escape(c)}</th>' for c in df.columns)
    rows = []
    for record in df.itertuples(index=False):
        cells = []
        for column, value in zip(df.columns, record):
            if isinstance(value, float):
                value = f"{value:.4f}" if column in ("val_accuracy", "val_balanced_accuracy") else f"{value:.3f}"
            elif isinstance(value, bool):
                value = "*" if value else ""
            elif isinstance(value, int) and column in ("params", "flops"):
                value = f"{value:,}"
            cells.append(f'<td class="{"text" if column in text_columns else ""}">{html.escape(str(value))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _shape_table(trial: optuna.trial.FrozenTrial) -> str:
    table = check(trial_spec(trial))
    df = pd.DataFrame([{"layer": r.name, "op": r.op, "output": "x".join(map(str, r.shape)),
                        "params": r.params, "FLOPs": human(r.flops)} for r in table.rows])
    a = trial.user_attrs
    caption = (f"trial {trial.number}: {html.escape(table.spec.summary)} &mdash; accuracy {a['accuracy']:.4f}, "
               f"{a['latency_ms']:.3f} ms, {table.params:,} params, {human(table.flops)} FLOPs, "
               f"spatial {html.escape(table.spatial_chain)}")
    return f"<h4>{caption}</h4>" + _table(df, text_columns=("layer", "op", "output"))


def study_labels(studies: list[optuna.Study]) -> list[str]:
    """Each study's name, made unique where two share one (the same recipe name in two
    storages): ``digits``, ``digits #2``. Plots, sections and CSV files go by these, so no
    study is merged into another or dropped."""
    seen: dict[str, int] = {}
    labels = []
    for study in studies:
        seen[study.study_name] = seen.get(study.study_name, 0) + 1
        n = seen[study.study_name]
        labels.append(study.study_name if n == 1 else f"{study.study_name} #{n}")
    return labels


def write_report(studies: list[optuna.Study], out: str | Path, *, max_shape_tables: int = 5) -> list[Path]:
    """Write ``out`` (HTML) and one CSV per study beside it; returns the paths written."""
    out = Path(out)
    labels = study_labels(studies)
    frames = {label: trials_frame(s) for label, s in zip(labels, studies)}
    written = []
    for label, df in frames.items():
        csv = out.with_name(f"{out.stem}_{label.replace(' #', '@')}.csv")
        df.to_csv(csv, index=False)  # both latencies, as recorded
        written.append(csv)
    # the plot and the tables show the re-timed latency where one exists, and say so
    shown = {label: shown_latency(df) for label, df in frames.items()}
    frames = {label: df for label, (df, _) in shown.items()}
    x = pareto_axis(studies[0].metric_names)  # the first study's objectives set the axes
    y = quality_metric(studies[0].metric_names)
    figures = [("pareto", pareto_figure(frames, x=x, y=y)), ("history", history_figure(frames))]
    for i, study in enumerate(studies):
        fig = importance_figure(study)
        if fig is not None:
            figures.append((f"importance-{i}", fig))
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=div_id,
                         config={"displaylogo": False})  # to_html makes a figure responsive itself
             for i, (div_id, fig) in enumerate(figures)]

    sections = []
    for label, study in zip(labels, studies):
        df = frames[label]
        counts = ", ".join(f"{n} {html.escape(str(s))}" for s, n in sorted(df["status"].value_counts().items()))
        board = leaderboard(df, by=quality_metric(study.metric_names))
        # the search's validation accuracy (what chose the front) and, for finalized trials,
        # finalize's held-out test accuracy: labelled apart, never mixed
        board = board.rename(columns={"accuracy": "val_accuracy", "balanced_accuracy": "val_balanced_accuracy"})
        board["test_final"] = [f"{m:.4f} +- {s:.4f}" if m == m else "" for m, s in
                               zip(board["test_mean"], board["test_std"])]
        board = board[[c for c in BOARD_COLUMNS if c in board.columns]].head(25)
        front = board[board["pareto"]]["trial"].tolist()[:max_shape_tables]
        trials = study.get_trials(deepcopy=False)
        shapes = "".join(_shape_table(trials[n]) for n in front)
        retimed = shown[label][1]
        sections.append(
            f"<h2>{html.escape(label)}</h2><p class='muted'>{len(df)} trials{': ' + counts if counts else ''}. "
            f"Objectives: {html.escape(', '.join(study.metric_names or []))}. Latency: "
            + (f"{retimed} trial(s) show the figure re-timed side by side at the end of the search "
               "(latency_from 're-timed', latency_remeasured_ms in the CSV), the others the search's." if retimed
               else "the search's figures (none re-timed).") + "</p>"
            f"<h3>Leaderboard</h3>{_table(board) if len(board) else '<p>No feasible trial yet.</p>'}"
            f"<h3>Pareto-optimal architectures</h3>{shapes or '<p>None yet.</p>'}")
    names = ", ".join(html.escape(label) for label in labels)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>cnnsearch report: {names}</title>"
            f"<style>{STYLE}</style></head><body><h1>cnnsearch report: {names}</h1>"
            f"<p class='muted'>Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Hover a point for its "
            f"architecture; click legend entries to show early-stopped and infeasible trials.</p>"
            + "".join(f"<div class='figure'>{p}</div>" for p in parts)
            + "".join(sections) + "</body></html>\n")
    out.write_text(page)
    return [out, *written]
