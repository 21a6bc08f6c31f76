"""Plotly figures drawn from results files (``assets/results/<task>.json``); no computation here.

- :func:`front_figure` — every method's points and Pareto front for two objectives (or one pair of
  a three-objective task), optionally highlighting the records at a preference and live samples.
- :func:`front_figure_3d` — the three-objective view.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from typing import Sequence

import plotly.graph_objects as go

from .methods import METHODS, Guidance, Merge, find_method
from .pareto import pareto_front

log = logging.getLogger(__name__)


def method_color(name: str, default: str | None = None) -> str | None:
    """A method's colour in every figure, from the method table (read at call time: a method added later has one
    too)."""
    return METHODS[name].color if name in METHODS else default


# colours of unnamed series (objectives of an LMC curve, β variants of an overlay), in order
SERIES = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#7f7f7f", "#bcbd22", "#17becf", "#8c564b"]


def _points(result: dict, method: str, axes: Sequence[int]) -> tuple[list[list[float]], list[dict]]:
    objectives = result["objectives"]
    records = [r for r in result["records"] if r["method"] == method]
    return [[r["means"][objectives[a]] for a in axes] for r in records], records


def front_figure(
    result: dict,
    *,
    axes: tuple[int, int] = (0, 1),
    methods: Sequence[str] | None = None,
    highlight: Sequence[float] | None = None,
    live: Sequence[dict] = (),
    title: str | None = None,
    labels: dict[str, str] | None = None,
    unit_axes: bool = False,
) -> go.Figure:
    """Scatter of every method's grid points with its Pareto front as a line (projection on ``axes``).

    ``highlight``: a preference μ — each method's record at the nearest grid point is ringed.
    ``live``: extra points ``{"method", "scores": {objective: value}}`` (e.g. the app's latest samples),
    with their ``weights`` and ``prompt`` shown on hover when given. ``labels``: display names of the
    methods (default: their codes). ``unit_axes``: both axes fixed to [0, 1], the objectives' range.
    """
    objectives = result["objectives"]
    x_name, y_name = objectives[axes[0]], objectives[axes[1]]
    name = (labels or {}).get
    fig = go.Figure()
    for method in list(dict.fromkeys(r["method"] for r in result["records"])) if methods is None else methods:
        pts, records = _points(result, method, axes)
        if not pts:
            continue
        color = method_color(method)
        hover = ["μ = (" + ", ".join(f"{w:.2f}" for w in r["weights"]) + ")" for r in records]
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="markers",
                name=name(method, method),
                legendgroup=method,
                marker=dict(color=color, size=8),
                text=hover,
                hovertemplate="%{text}<br>"
                + f"{x_name} %{{x:.3f}}<br>{y_name} %{{y:.3f}}<extra>{name(method, method)}</extra>",
            )
        )
        front = sorted(pareto_front(pts))
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in front],
                y=[p[1] for p in front],
                mode="lines",
                line=dict(color=color, width=2),
                legendgroup=method,
                showlegend=False,
                hoverinfo="skip",
            )
        )
        if highlight is not None:
            nearest = min(records, key=lambda r: sum((a - b) ** 2 for a, b in zip(r["weights"], highlight)))
            fig.add_trace(
                go.Scatter(
                    x=[nearest["means"][x_name]],
                    y=[nearest["means"][y_name]],
                    mode="markers",
                    legendgroup=method,
                    showlegend=False,
                    marker=dict(symbol="circle-open", size=18, line=dict(width=3, color=color)),
                    hoverinfo="skip",
                )
            )
    for method in dict.fromkeys(p["method"] for p in live):  # one legend entry per method, however many samples
        points = [p for p in live if p["method"] == method]
        hover = [
            ("μ = (" + ", ".join(f"{w:.2f}" for w in p["weights"]) + ")" if p.get("weights") else "")
            + (f"<br>“{p['prompt']}”" if p.get("prompt") else "")
            for p in points
        ]
        fig.add_trace(
            go.Scatter(
                x=[p["scores"][x_name] for p in points],
                y=[p["scores"][y_name] for p in points],
                mode="markers",
                name=f"your sample: {name(method, method)}",
                text=hover,
                hovertemplate="%{text}<br>" + f"{x_name} %{{x:.3f}}<br>{y_name} %{{y:.3f}}<extra>your sample</extra>",
                marker=dict(symbol="star", size=15, color=method_color(method), line=dict(width=1.5, color="black")),
            )
        )
    fig.update_layout(
        title=title or f"{result['task']}: Pareto fronts ({result.get('settings', {}).get('split', 'test')} split)",
        xaxis_title=x_name,
        yaxis_title=y_name,
        template="plotly_white",
        legend=dict(orientation="h", y=-0.2),
        margin=dict(l=40, r=10, t=50, b=40),
    )
    if unit_axes:
        fig.update_xaxes(range=[-0.02, 1.02])
        fig.update_yaxes(range=[-0.02, 1.02])
    return fig


def front_figure_3d(result: dict, methods: Sequence[str] | None = None) -> go.Figure:
    objectives = result["objectives"]
    fig = go.Figure()
    for method in methods or list(dict.fromkeys(r["method"] for r in result["records"])):
        pts, _ = _points(result, method, (0, 1, 2))
        if pts:
            fig.add_trace(
                go.Scatter3d(
                    x=[p[0] for p in pts],
                    y=[p[1] for p in pts],
                    z=[p[2] for p in pts],
                    mode="markers",
                    name=method,
                    marker=dict(size=4, color=method_color(method)),
                )
            )
    fig.update_layout(
        scene=dict(xaxis_title=objectives[0], yaxis_title=objectives[1], zaxis_title=objectives[2]),
        title=f"{result['task']}: all objectives",
    )
    return fig


def lmc_figure(result: dict) -> go.Figure:
    """Achieved reward along the value-model interpolation φ(t), each objective with its chord."""
    fig = go.Figure()
    ts = [r["t"] for r in result["rows"]]
    for i, o in enumerate(result["rows"][0]["means"]):
        color = SERIES[i % len(SERIES)]
        ys = [r["means"][o] for r in result["rows"]]
        errs = [r["stderr"][o] for r in result["rows"]]
        fig.add_trace(
            go.Scatter(
                x=ts, y=ys, error_y=dict(type="data", array=errs), mode="lines+markers", name=o, line=dict(color=color)
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[ts[0], ts[-1]],
                y=[ys[0], ys[-1]],
                mode="lines",
                line=dict(color=color, dash="dash"),
                name=f"{o}: chord",
                showlegend=False,
            )
        )
    a, b = result["pair"]
    fig.update_layout(
        title=f"{result['task']}: {result['kind']} value models interpolated {a} (t=0) → {b} (t=1); dashed: chord",
        xaxis_title="t",
        yaxis_title="mean reward",
        template="plotly_white",
    )
    return fig


def overlay_figure(
    results: dict[str, dict], method: str, *, axes: tuple[int, int] = (0, 1), title: str = ""
) -> go.Figure:
    """One method's front from several results files (e.g. Bone Soup at β = 0.6 / 0.7 / 0.8), labelled by key."""
    fig = go.Figure()
    for i, (label, result) in enumerate(results.items()):
        pts, _ = _points(result, method, axes)
        if not pts:
            continue
        color = SERIES[i % len(SERIES)]  # a label's points and its front share one colour
        front = sorted(pareto_front(pts))
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in pts],
                y=[p[1] for p in pts],
                mode="markers",
                name=label,
                legendgroup=label,
                marker=dict(color=color, size=8),
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[p[0] for p in front],
                y=[p[1] for p in front],
                mode="lines",
                legendgroup=label,
                showlegend=False,
                hoverinfo="skip",
                line=dict(color=color, width=2),
            )
        )
    first = next(iter(results.values()))
    fig.update_layout(
        title=title,
        xaxis_title=first["objectives"][axes[0]],
        yaxis_title=first["objectives"][axes[1]],
        template="plotly_white",
    )
    return fig


def compatibility_figure(result: dict) -> go.Figure:
    """How far each run's rewards move when μ moves (per-objective spread over the corner grid):
    sft+ guidance at each strength next to MAGE."""
    fig = go.Figure()
    for run in result["runs"]:
        fig.add_trace(
            go.Bar(
                x=result["objectives"],
                y=[run["spread"][o] for o in result["objectives"]],
                name=f"{run['method']} (w = {run['strength']:g})",
            )
        )
    fig.update_layout(
        barmode="group",
        title=f"{result['task']}: how far the rewards move with μ — fixed policy + guidance vs MAGE",
        yaxis_title="spread over the grid (max − min of the mean reward)",
        template="plotly_white",
    )
    return fig


def guided_bench_figure(bench: dict) -> go.Figure:
    """``bench guided``: per-step time relative to plain decoding (left) and peak memory (right) against
    the number of objectives K, one line per decoding variant."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("per-step time / plain decoding", "peak RSS (MB)"))
    for i, variant in enumerate(dict.fromkeys(r["variant"] for r in bench["rows"])):
        rows = sorted((r for r in bench["rows"] if r["variant"] == variant), key=lambda r: r["k"])
        color = method_color(variant, SERIES[(i + 4) % len(SERIES)])
        for col, key in ((1, "ratio_vs_plain"), (2, "peak_rss_mb")):
            fig.add_trace(
                go.Scatter(
                    x=[r["k"] for r in rows],
                    y=[r[key] for r in rows],
                    mode="lines+markers",
                    name=variant,
                    legendgroup=variant,
                    showlegend=col == 1,
                    line=dict(color=color),
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="objectives K", dtick=1)
    fig.update_layout(title="guided decoding vs K (batch 1, CPU)", template="plotly_white")
    return fig


def app_bench_figure(bench: dict) -> go.Figure:
    """``bench app``: slider move → first streamed token per method (median, min–max), the goal as a line."""
    methods = [m for m in ("rs", "mage-i") if isinstance(bench.get(m), dict) and "first_token_s" in bench[m]]
    first = [bench[m]["first_token_s"] for m in methods]
    fig = go.Figure(
        go.Bar(
            x=methods,
            y=[1000 * f["median"] for f in first],
            marker_color=[method_color(m) for m in methods],
            error_y=dict(
                type="data",
                symmetric=False,
                array=[1000 * (f["max"] - f["median"]) for f in first],
                arrayminus=[1000 * (f["median"] - f["min"]) for f in first],
            ),
        )
    )
    fig.add_hline(y=300, line_dash="dash", annotation_text="goal 300 ms")
    fig.update_layout(
        title=f"{bench.get('task', '')}: slider move → first streamed token",
        yaxis_title="ms (median, min–max)",
        template="plotly_white",
    )
    return fig


def soak_figure(bench: dict) -> go.Figure:
    """``bench soak``: the app server's resident memory against requests served (fresh sessions, a third bad)."""
    curve = bench["curve"]
    fig = go.Figure(
        go.Scatter(
            x=[c["requests"] for c in curve],
            y=[c["rss_mb"] for c in curve],
            mode="lines+markers",
            line=dict(color=SERIES[0]),
        )
    )
    fig.update_layout(
        title=f"app server memory over {bench['requests']} mixed requests (a third of them bad, each from a fresh "
        "session)",
        xaxis_title="requests served",
        yaxis_title="resident memory (MB)",
        template="plotly_white",
    )
    return fig


BENCH_FIGURES = {"guided": guided_bench_figure, "app": app_bench_figure, "soak": soak_figure}


def save_figure(fig: go.Figure, path_stem, *, png: bool = True) -> list[str]:
    """``<stem>.html`` always; ``<stem>.png`` when static export works (kaleido + a chromium on the PATH)."""
    from pathlib import Path

    from .io import write_text_atomic

    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(stem.with_suffix(".html"), fig.to_html(include_plotlyjs="cdn", full_html=True))
    written = [str(stem.with_suffix(".html"))]
    if png:
        try:
            from .io import write_bytes_atomic

            write_bytes_atomic(stem.with_suffix(".png"), fig.to_image(format="png", width=900, height=650))
            written.append(str(stem.with_suffix(".png")))
        except Exception as err:  # kaleido missing or no browser: HTML only, say so
            log.warning(f"mage: no PNG for {stem.name} ({type(err).__name__}: {err}); the HTML is written")
    return written


def all_figures(results_dir=None, out_dir=None, *, png: bool = True, bench_dir=None) -> list[str]:
    """Every figure the results files in ``results_dir`` allow: fronts (pairwise + 3-D), merged vs ensemble,
    LMC curves, the β ablation (``<task>-beta<β>.json`` next to ``<task>.json``); and the benchmark plots
    (:data:`BENCH_FIGURES`) from ``bench_dir``."""
    import json
    from pathlib import Path

    from . import locations

    results_dir, out_dir = Path(results_dir or locations.results()), Path(out_dir or locations.figures())
    bench_dir = Path(bench_dir or locations.bench())
    with _png_export(png) as png:
        written = _all_figures(results_dir, out_dir, png=png)
        for part, draw in BENCH_FIGURES.items():
            if (bench_dir / f"{part}.json").is_file():
                written += save_figure(
                    draw(json.loads((bench_dir / f"{part}.json").read_text())), out_dir / f"bench-{part}", png=png
                )
        return written


@contextmanager
def _png_export(png: bool):
    """One headless browser for every PNG of a run, without MathJax: kaleido's default fetches MathJax from a
    CDN, and with no network a page could wait on that fetch (``python -m mage figures`` once hung there).
    Each image gets a 60 s timeout; if no browser starts, the figures are HTML only."""
    if not png:
        yield False
        return
    try:
        import kaleido

        kaleido.start_sync_server(mathjax=False, timeout=60, silence_warnings=True)
    except Exception as err:
        log.warning(f"mage: no PNG export ({type(err).__name__}: {err}); the HTML figures are written")
        yield False
        return
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="The kopts argument is ignored"
            )  # plotly passes {} and the server has its own
            yield True
    finally:
        kaleido.stop_sync_server(silence_warnings=True)


def _all_figures(results_dir, out_dir, *, png: bool) -> list[str]:
    import json
    from itertools import combinations

    from .merging import DEFAULT_BETA
    from .sweep import beta_files

    written = []
    for task_file in sorted(results_dir.glob("*.json")):
        name = task_file.stem
        if "-" in name:
            continue
        result = json.loads(task_file.read_text())
        if "records" not in result:
            continue
        n = len(result["objectives"])
        for axes in combinations(range(n), 2):
            written += save_figure(
                front_figure(result, axes=axes),
                out_dir / f"{name}-front-{result['objectives'][axes[0]]}-{result['objectives'][axes[1]]}",
                png=png,
            )
        if n == 3:
            written += save_figure(front_figure_3d(result), out_dir / f"{name}-front-3d", png=png)
        methods = {r["method"] for r in result["records"]}
        for kind in (
            "implicit",
            "explicit",
        ):  # the merged guide against the ensemble of the same value models, over Bone Soup
            merged, ensemble, bone = (
                find_method(Merge("bone"), Guidance(kind)),
                find_method(Merge("bone"), Guidance(kind, "ensemble")),
                find_method(Merge("bone")),
            )
            if {merged, ensemble} <= methods:
                written += save_figure(
                    front_figure(
                        result,
                        methods=[merged, ensemble, bone],
                        title=f"{name}: merged vs ensemble guidance ({kind[0]})",
                    ),
                    out_dir / f"{name}-merged-vs-ensemble-{kind[0]}",
                    png=png,
                )
        betas = {beta: json.loads(p.read_text()) for beta, p in beta_files(name, results_dir).items()}
        if betas:
            betas[result["settings"].get("beta", DEFAULT_BETA)] = result
            written += save_figure(
                overlay_figure(
                    {f"β = {b:g}": betas[b] for b in sorted(betas)}, "bone", title=f"{name}: Bone Soup fronts by β"
                ),
                out_dir / f"{name}-beta-ablation",
                png=png,
            )
    for compat_file in sorted(results_dir.glob("*-compat-*.json")):
        written += save_figure(
            compatibility_figure(json.loads(compat_file.read_text())), out_dir / compat_file.stem, png=png
        )
    for lmc_file in sorted(results_dir.glob("*-lmc-*.json")):
        written += save_figure(lmc_figure(json.loads(lmc_file.read_text())), out_dir / lmc_file.stem, png=png)
    return written
