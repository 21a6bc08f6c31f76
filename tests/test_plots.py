"""Figures are drawn from results files: one trace per method and its front, highlights, live points."""

from __future__ import annotations

from mage.plots import front_figure, front_figure_3d

RESULT = {
    "task": "t",
    "objectives": ["a", "b", "c"],
    "settings": {"split": "test"},
    "records": [
        {"method": m, "weights": w, "means": {"a": x, "b": y, "c": z}}
        for m, pts in {
            "bone": [((1, 0, 0), (1.0, 0.2, 0.1)), ((0, 1, 0), (0.2, 1.0, 0.3)), ((0.5, 0.5, 0), (0.5, 0.5, 0.2))],
            "rs": [((1, 0, 0), (0.9, 0.1, 0.1)), ((0, 1, 0), (0.1, 0.9, 0.1)), ((0.5, 0.5, 0), (0.1, 0.1, 0.1))],
        }.items()
        for w, (x, y, z) in pts
    ],
}


def test_front_figure_has_points_fronts_highlights_and_live_samples():
    live = [
        {"method": "bone", "scores": {"a": 0.4, "b": 0.6, "c": 0.0}},
        {"method": "rs", "scores": {"a": 0.1, "b": 0.2, "c": 0.3}},
        {"method": "bone", "scores": {"a": 0.7, "b": 0.1, "c": 0.0}},
    ]
    fig = front_figure(RESULT, highlight=[0.5, 0.5, 0.0], live=live)
    stars = {t.name: (list(t.x), list(t.y)) for t in fig.data if t.name and t.name.startswith("your sample: ")}
    assert stars == {
        "your sample: bone": ([0.4, 0.7], [0.6, 0.1]),
        "your sample: rs": ([0.1], [0.2]),
    }  # one legend entry per method
    names = [t.name for t in fig.data]
    assert names.count("bone") == 1 and names.count("rs") == 1 and "your sample: bone" in names
    bone_front = fig.data[1]
    assert list(bone_front.x) == [0.2, 0.5, 1.0]  # all three bone points are non-dominated, sorted
    rs_front = fig.data[4]
    assert list(rs_front.x) == [0.1, 0.9]  # rs's (0.1, 0.1) is dominated and drops out
    ring = fig.data[2]
    assert list(ring.x) == [0.5] and list(ring.y) == [0.5]
    assert fig.layout.xaxis.title.text == "a" and fig.layout.yaxis.title.text == "b"


def test_projection_axes_and_3d_view():
    fig = front_figure(RESULT, axes=(1, 2), methods=["rs"])
    assert fig.layout.xaxis.title.text == "b" and fig.layout.yaxis.title.text == "c" and len(fig.data) == 2
    assert len(front_figure_3d(RESULT).data) == 2


def test_all_figures_writes_fronts_ablation_and_lmc(tmp_path):
    import json

    from mage.plots import all_figures

    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.json").write_text(json.dumps(RESULT))
    (results / "summary-beta0.6.json").write_text(json.dumps(RESULT))
    (results / "summary-ingredients.json").write_text(json.dumps({"rows": {}}))  # other files are left alone
    (results / "summary-beta-compare.json").write_text(json.dumps({"methods": {}}))  # not a β sweep
    lmc = {
        "task": "summary",
        "kind": "implicit",
        "pair": ["faithful", "quality"],
        "rows": [
            {
                "t": t,
                "means": {"faithful": 0.5 + t / 10, "quality": 0.4 - t / 10},
                "stderr": {"faithful": 0.01, "quality": 0.01},
            }
            for t in (0, 0.5, 1)
        ],
    }
    (results / "summary-lmc-implicit.json").write_text(json.dumps(lmc))
    compat = {
        "task": "summary",
        "objectives": ["faithful", "quality"],
        "runs": [
            {"method": m, "strength": w, "spread": {"faithful": 0.1 * w, "quality": 0.05}}
            for m, w in (("sft+i", 1.0), ("sft+i", 2.0), ("mage-i", 1.0))
        ],
    }
    (results / "summary-compat-implicit.json").write_text(json.dumps(compat))
    written = all_figures(results, tmp_path / "figures", png=False, bench_dir=tmp_path / "no-bench")
    names = sorted(p.split("/")[-1] for p in written)
    assert names == [
        "summary-beta-ablation.html",
        "summary-compat-implicit.html",
        "summary-front-3d.html",
        "summary-front-a-b.html",
        "summary-front-a-c.html",
        "summary-front-b-c.html",
        "summary-lmc-implicit.html",
    ]
    assert all((tmp_path / "figures" / n).stat().st_size > 1000 for n in names)


def test_png_export_runs_offline_in_one_browser(tmp_path):
    """The PNGs come from one headless browser with MathJax off (no CDN fetch); each file is a real PNG."""
    import json

    from mage.plots import all_figures

    results = tmp_path / "results"
    results.mkdir()
    (results / "summary.json").write_text(json.dumps(RESULT))
    written = all_figures(results, tmp_path / "figures", png=True, bench_dir=tmp_path / "no-bench")
    pngs = [p for p in written if p.endswith(".png")]
    assert len(pngs) == 4, written
    assert all(open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_bench_figures_from_the_committed_benchmarks(tmp_path):
    """The guided plot has one line per variant in each panel over K = 2..4; the app plot one bar per method."""
    import json
    from pathlib import Path

    from mage.plots import all_figures, app_bench_figure, guided_bench_figure, soak_figure

    bench = Path(__file__).resolve().parent.parent / "assets" / "bench"
    guided = json.loads((bench / "guided.json").read_text())
    variants = {r["variant"] for r in guided["rows"]}
    fig = guided_bench_figure(guided)
    assert len(fig.data) == 2 * len(variants) and all(list(t.x) == [2, 3, 4] for t in fig.data)
    plain = [t for t in fig.data if t.name == "plain" and t.xaxis == "x"][0]
    assert list(plain.y) == [1.0, 1.0, 1.0]
    app = json.loads((bench / "app.json").read_text())
    bars = app_bench_figure(app).data[0]
    assert list(bars.x) == ["rs", "mage-i"] and abs(bars.y[1] - 1000 * app["mage-i"]["first_token_s"]["median"]) < 1e-9
    written = all_figures(tmp_path / "no-results", tmp_path / "figures", png=False, bench_dir=bench)
    assert sorted(Path(p).name for p in written) == ["bench-app.html", "bench-guided.html", "bench-soak.html"]
    soak = json.loads((bench / "soak.json").read_text())
    line = soak_figure(soak).data[0]
    assert list(line.x) == [c["requests"] for c in soak["curve"]] and line.x[-1] == soak["requests"] >= 300


def test_an_overlay_draws_each_label_and_its_front_in_one_colour():
    from mage.plots import overlay_figure

    fig = overlay_figure({"β = 0.6": RESULT, "β = 0.7": RESULT}, "bone")
    points, lines = fig.data[0::2], fig.data[1::2]
    assert [t.name for t in points] == ["β = 0.6", "β = 0.7"]
    assert [t.marker.color for t in points] == [t.line.color for t in lines] and points[0].marker.color != points[
        1
    ].marker.color
