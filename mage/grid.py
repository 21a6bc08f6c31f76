"""Preference grids (SPEC §4): the μ a sweep visits, and the cheap corner sub-grid."""

from __future__ import annotations

GRID_3 = [
    (0, 0, 1),
    (0, 1, 0),
    (1, 0, 0),
    (0.1, 0.1, 0.8),
    (0.1, 0.8, 0.1),
    (0.8, 0.1, 0.1),
    (0.2, 0.2, 0.6),
    (0.2, 0.6, 0.2),
    (0.6, 0.2, 0.2),
    (0.2, 0.4, 0.4),
    (0.4, 0.2, 0.4),
    (0.4, 0.4, 0.2),
    (1 / 3, 1 / 3, 1 / 3),
]


def preference_grid(n: int) -> list[list[float]]:
    """SPEC §4: 11 points for two objectives, the 13 listed points for three. Four or more objectives (beyond
    the papers): the n corners, n points leaning on one objective (0.55, the rest shared) and the uniform one."""
    if n == 2:
        return [[i / 10, 1 - i / 10] for i in range(11)]
    if n == 3:
        return [list(p) for p in GRID_3]
    if n >= 4:
        corners = [[1.0 if j == i else 0.0 for j in range(n)] for i in range(n)]
        leaning = [[0.55 if j == i else 0.45 / (n - 1) for j in range(n)] for i in range(n)]
        return corners + leaning + [[1.0 / n] * n]
    raise ValueError(f"no preference grid for {n} objective(s); fix: a task needs at least 2 objectives")


def corner_grid(n: int) -> list[list[float]]:
    """The one-hot preferences and the uniform one: the cheap sub-grid of the compatibility analysis."""
    return [[1.0 if i == j else 0.0 for i in range(n)] for j in range(n)] + [[1.0 / n] * n]
