"""Plotly figures of studies. The data comes from ``report.py``; nothing is computed here
that a test of the DataFrame would not see."""

from __future__ import annotations

import optuna
import pandas as pd
import plotly.graph_objects as go

from .report import AXIS_TITLES, RETIMED, pareto_numbers, trained_study
from .trials import Status

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2"]

_HOVER = ("trial %{customdata[0]}<br>%{customdata[1]}<br>accuracy %{y:.4f}<br>latency %{customdata[5]:.3f} ms"
          " (%{customdata[6]})"
          "<br>params %{customdata[2]:,}<br>FLOPs %{customdata[3]:,}<br>%{customdata[4]}<extra>%{fullData.name}</extra>")


def _custom(df: pd.DataFrame) -> list[list]:
    return [[int(r.trial), r.summary, int(r.params) if r.params == r.params else 0,
             int(r.flops) if r.flops == r.flops else 0, r.status, r.latency_ms, getattr(r, "latency_from", "search")]
            for r in df.itertuples()]


def pareto_figure(frames: dict[str, pd.DataFrame], *, x: str = "latency_ms", y: str = "accuracy") -> go.Figure:
    """``y`` (accuracy, or balanced_accuracy: ``report.quality_metric``) against ``x``
    (latency, params, FLOPs or memory: the recipe's objective) for one or more studies: trained
    trials as points, each study's ``y``-vs-``x`` front as a step line, early-stopped and
    infeasible trials apart, baselines as labelled stars."""
    fig = go.Figure()
    hover = _HOVER if x in ("latency_ms", "params", "flops") else _HOVER.replace(  # e.g. memory_bytes: on x
        "<extra>", f"<br>{AXIS_TITLES[x].split(' (')[0]} %{{x:,}}<extra>")
    for i, (name, df) in enumerate(frames.items()):
        colour = PALETTE[i % len(PALETTE)]
        ok = df[df["feasible"]]
        known = ok["baseline"].fillna("").astype(bool) if "baseline" in ok else pd.Series(False, index=ok.index)
        sampled, baselines = ok[~known], ok[known]
        fig.add_trace(go.Scatter(
            x=sampled[x], y=sampled[y], mode="markers", name=f"{name}: trained",
            marker={"color": colour, "size": 9, "line": {"width": 1, "color": "white"}},
            customdata=_custom(sampled), hovertemplate=hover, meta={"role": "trained", "study": name}))
        if len(baselines):  # known networks run as trials: a star with the network's name
            fig.add_trace(go.Scatter(
                x=baselines[x], y=baselines[y], mode="markers+text", name=f"{name}: baselines",
                text=list(baselines["baseline"]), textposition="top center",
                marker={"color": colour, "size": 15, "symbol": "star", "line": {"width": 1, "color": "black"}},
                customdata=_custom(baselines), hovertemplate=hover, meta={"role": "baseline", "study": name}))
        # the front of these two axes (the study's own front may have more objectives)
        front = ok[ok["trial"].isin(pareto_numbers(ok, [y, x], ["maximize", "minimize"]))]
        front = front.sort_values(x)
        fig.add_trace(go.Scatter(
            x=front[x], y=front[y], mode="lines", line_shape="hv",
            name=f"{name}: Pareto front", line={"color": colour, "width": 2},
            hoverinfo="skip", meta={"role": "front", "study": name}))
        stopped = df[(df["status"] == Status.EARLY_STOPPED) & df[x].notna()]
        if len(stopped):
            fig.add_trace(go.Scatter(
                x=stopped[x], y=stopped[y], mode="markers",
                name=f"{name}: stopped early", visible="legendonly",
                marker={"color": colour, "size": 7, "symbol": "circle-open"},
                customdata=_custom(stopped), hovertemplate=hover, meta={"role": "pruned", "study": name}))
        bad = df[(df["state"] == "COMPLETE") & ~df["feasible"] & df[x].notna()]
        if len(bad):
            fig.add_trace(go.Scatter(
                x=bad[x], y=[0.0] * len(bad), mode="markers", name=f"{name}: infeasible",
                visible="legendonly", marker={"color": "#999999", "size": 7, "symbol": "x"},
                customdata=[[*c[:4], row.reason, *c[5:]] for c, row in zip(_custom(bad), bad.itertuples())],
                hovertemplate=hover, meta={"role": "infeasible", "study": name}))
    title = AXIS_TITLES[x]
    if x == "latency_ms" and any((df.get("latency_from", pd.Series(dtype=str)) == RETIMED).any()
                                 for df in frames.values()):  # report.shown_latency's frames
        title = "latency (ms, median; re-timed side by side at the end of the search where one exists)"
    fig.update_layout(title=f"{y.replace('_', ' ').capitalize()} vs {title.split(' (')[0]} (Pareto front as a step line)",
                      xaxis_title=title, yaxis_title=f"validation {y.replace('_', ' ')}",
                      template="plotly_white", legend={"orientation": "h", "y": -0.2}, height=520)
    if x != "latency_ms":
        fig.update_xaxes(type="log")  # sizes span orders of magnitude
    return fig


def history_figure(frames: dict[str, pd.DataFrame]) -> go.Figure:
    """Accuracy per trial and the best so far, per study."""
    fig = go.Figure()
    for i, (name, df) in enumerate(frames.items()):
        colour = PALETTE[i % len(PALETTE)]
        ok = df[df["feasible"]].sort_values("trial")
        fig.add_trace(go.Scatter(x=ok["trial"], y=ok["accuracy"], mode="markers", name=f"{name}: trial",
                                 marker={"color": colour, "size": 7}, customdata=_custom(ok),
                                 hovertemplate=_HOVER))
        fig.add_trace(go.Scatter(x=ok["trial"], y=ok["accuracy"].cummax(), mode="lines", line_shape="hv",
                                 name=f"{name}: best so far", line={"color": colour}))
    fig.update_layout(title="Optimisation history", xaxis_title="trial", yaxis_title="validation accuracy",
                      template="plotly_white", height=420, xaxis={"tickformat": "d"})
    return fig


def importance_figure(study: optuna.Study) -> go.Figure | None:
    """Optuna's parameter importances for accuracy over the trained, feasible trials (see
    ``report.trained_study``); None when fewer than 3 of those."""
    name, study = study.study_name, trained_study(study)
    if len(study.trials) < 3:
        return None
    names = study.metric_names or []
    index = names.index("accuracy") if "accuracy" in names else 0
    try:
        # fANOVA explains variance whatever the direction (Optuna 5's default, PED-ANOVA,
        # ranks parameters for *low* targets), and a seed makes the report reproducible
        fig = optuna.visualization.plot_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            target=lambda t: t.values[index], target_name="accuracy")
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. no parameter varied
        return None
    fig.update_layout(title=f"Parameter importances for accuracy ({name}; trained trials only)",
                      template="plotly_white", height=420)
    return fig
