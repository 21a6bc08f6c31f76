"""Pareto fronts, hypervolume and controllability over evaluation results (SPEC §4).

All objectives are maximised. Hypervolume is exact for any number of objectives (slicing on the
last objective, recursively — fine for the tens of points a sweep produces). The reference point
is [ours]: the per-objective minimum over all methods of a run minus 1 % of that objective's range,
stored with the results so every number can be recomputed.
"""

from __future__ import annotations

import math
from typing import Sequence

Point = tuple[float, ...]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """a ≥ b everywhere and > somewhere (maximisation)."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def pareto_front(points: Sequence[Sequence[float]]) -> list[Point]:
    """The non-dominated points, duplicates kept once, in input order."""
    unique = list(dict.fromkeys(tuple(float(x) for x in p) for p in points))
    return [p for p in unique if not any(dominates(q, p) for q in unique if q != p)]


def reference_point(points: Sequence[Sequence[float]], margin: float = 0.01) -> list[float]:
    """Per-objective minimum minus ``margin`` × range (range 0 → minus ``margin``)."""
    columns = list(zip(*points))
    return [min(c) - margin * ((max(c) - min(c)) or 1.0) for c in columns]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume dominated by ``points`` and bounded below by ``reference`` (exact, any dimension)."""
    dims = len(reference)
    clipped = [tuple(p) for p in pareto_front(points) if all(x > r for x, r in zip(p, reference))]
    if any(len(p) != dims for p in clipped):
        raise ValueError(f"points and reference point {list(reference)} differ in dimension")
    return _hv(clipped, list(reference))


def _hv(points: list[Point], ref: list[float]) -> float:
    if not points:
        return 0.0
    if len(ref) == 1:
        return max(p[0] for p in points) - ref[0]
    # slice along the last objective: between consecutive levels the dominated set is the
    # (d−1)-dimensional hypervolume of the points at or above that level
    levels = sorted({p[-1] for p in points}, reverse=True)
    total = 0.0
    for i, level in enumerate(levels):
        below = levels[i + 1] if i + 1 < len(levels) else ref[-1]
        active = [p[:-1] for p in points if p[-1] >= level]
        total += (level - below) * _hv(pareto_front(active), ref[:-1])
    return total


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation with average ranks for ties; NaN when either side is constant."""

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2.0
            i = j + 1
        return r

    rx, ry = ranks(list(x)), ranks(list(y))
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sx, sy = math.sqrt(sum((a - mx) ** 2 for a in rx)), math.sqrt(sum((b - my) ** 2 for b in ry))
    return cov / (sx * sy) if sx > 0 and sy > 0 else float("nan")


def controllability(weights: Sequence[Sequence[float]], achieved: Sequence[Sequence[float]]) -> dict:
    """How well the achieved rewards follow the preference over a grid [ours; the paper's definition is not public].

    - ``spearman``: per objective i, Spearman(μ_i, r_i) over the grid; ``score`` is their mean.
    - ``monotone_fraction``: per objective, group the grid points by μ_i (the 3-objective grid repeats
      values), average r_i within each group, and count consecutive groups whose mean r_i rises with
      μ_i; the fraction over all such steps. Grouping makes it independent of the grid's order.
    """
    n = len(weights[0])
    weights = [
        [round(x, 9) for x in w] for w in weights
    ]  # 0.2 and 0.19999999999999998 (a normalised μ) are one preference: a tie
    per = [spearman([w[i] for w in weights], [a[i] for a in achieved]) for i in range(n)]
    steps = agree = 0
    for i in range(n):
        groups: dict[float, list[float]] = {}
        for w, a in zip(weights, achieved):
            groups.setdefault(w[i], []).append(a[i])
        means = [sum(v) / len(v) for _, v in sorted(groups.items())]
        steps += len(means) - 1
        agree += sum(b > a for a, b in zip(means, means[1:]))
    finite = [s for s in per if not math.isnan(s)]
    return {
        "spearman": per,
        "score": sum(finite) / len(finite) if finite else float("nan"),
        "monotone_fraction": agree / steps if steps else float("nan"),
    }
