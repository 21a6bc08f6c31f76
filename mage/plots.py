"""Plotly figures drawn from results files (``assets/results/<task>.json``); no computation here.

- :func:`front_figure` — every method's points and Pareto front for two objectives (or one pair of
  a three-objective task), optionally highlighting the records at a preference and live samples.
- :func:`front_figure_3d` — the three-objective view.
"""
from __future__ import annotations

from typing import Sequence

import plotly.graph_objects as go

from .pareto import pareto_front

PALETTE = {"mage-i": "#d62728", "mage-e": "#ff7f0e", "bone": "#1f77b4", "rs": "#2ca02c", "aba": "#9467bd", "mod": "#8c564b",
           "ensemble-i": "#e377c2", "ensemble-e": "#f7b6d2", "sft+i": "#7f7f7f", "sft+e": "#bcbd22", "react": "#17becf", "base": "#000000"}


def _points(result: dict, method: str, axes: Sequence[int]) -> tuple[list[list[float]], list[dict]]:
    objectives = result["objectives"]
    records = [r for r in result["records"] if r["method"] == method]
    return [[r["means"][objectives[a]] for a in axes] for r in records], records


def front_figure(result: dict, *, axes: tuple[int, int] = (0, 1), methods: Sequence[str] | None = None, highlight: Sequence[float] | None = None,
                 live: Sequence[dict] = (), title: str | None = None) -> go.Figure:
    """Scatter of every method's grid points with its Pareto front as a line (projection on ``axes``).

    ``highlight``: a preference μ — each method's record at the nearest grid point is ringed.
    ``live``: extra points ``{"method", "scores": {objective: value}}`` (e.g. the app's latest samples).
    """
    objectives = result["objectives"]
    x_name, y_name = objectives[axes[0]], objectives[axes[1]]
    fig = go.Figure()
    for method in methods or list(dict.fromkeys(r["method"] for r in result["records"])):
        pts, records = _points(result, method, axes)
        if not pts:
            continue
        color = PALETTE.get(method, None)
        labels = ["μ = (" + ", ".join(f"{w:.2f}" for w in r["weights"]) + ")" for r in records]
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name=method, legendgroup=method,
                                 marker=dict(color=color, size=8), text=labels, hovertemplate="%{text}<br>" + f"{x_name} %{{x:.3f}}<br>{y_name} %{{y:.3f}}<extra>{method}</extra>"))
        front = sorted(pareto_front(pts))
        fig.add_trace(go.Scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines", line=dict(color=color, width=2),
                                 legendgroup=method, showlegend=False, hoverinfo="skip"))
        if highlight is not None:
            nearest = min(records, key=lambda r: sum((a - b) ** 2 for a, b in zip(r["weights"], highlight)))
            fig.add_trace(go.Scatter(x=[nearest["means"][x_name]], y=[nearest["means"][y_name]], mode="markers", legendgroup=method, showlegend=False,
                                     marker=dict(symbol="circle-open", size=18, line=dict(width=3, color=color)), hoverinfo="skip"))
    for point in live:
        fig.add_trace(go.Scatter(x=[point["scores"][x_name]], y=[point["scores"][y_name]], mode="markers", name=f"live: {point['method']}",
                                 marker=dict(symbol="star", size=14, color=PALETTE.get(point["method"]), line=dict(width=1, color="black"))))
    fig.update_layout(title=title or f"{result['task']}: Pareto fronts ({result.get('settings', {}).get('split', 'test')} split)",
                      xaxis_title=x_name, yaxis_title=y_name, template="plotly_white", legend=dict(orientation="h", y=-0.2), margin=dict(l=40, r=10, t=50, b=40))
    return fig


def front_figure_3d(result: dict, methods: Sequence[str] | None = None) -> go.Figure:
    objectives = result["objectives"]
    fig = go.Figure()
    for method in methods or list(dict.fromkeys(r["method"] for r in result["records"])):
        pts, _ = _points(result, method, (0, 1, 2))
        if pts:
            fig.add_trace(go.Scatter3d(x=[p[0] for p in pts], y=[p[1] for p in pts], z=[p[2] for p in pts], mode="markers", name=method,
                                       marker=dict(size=4, color=PALETTE.get(method))))
    fig.update_layout(scene=dict(xaxis_title=objectives[0], yaxis_title=objectives[1], zaxis_title=objectives[2]), title=f"{result['task']}: all objectives")
    return fig
