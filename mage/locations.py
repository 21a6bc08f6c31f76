"""Where mage reads and writes — every location in one place.

Each is package-relative (beside the checkout: ``checkpoints/``, ``assets/results``, ``assets/bench``,
``assets/figures``) or the user's cache, unless an environment variable moves it; none depends on the
working directory, so ``python -m mage evaluate`` run from anywhere writes what the app reads.
Read at call time, so a test (or a Space) that sets a variable sees it at once.

| location      | default                         | variable          |
|---------------|---------------------------------|-------------------|
| checkpoints   | ``<checkout>/checkpoints``      | MAGE_CHECKPOINTS  |
| cache         | ``~/.cache/mage``               | MAGE_CACHE_DIR    |
| results       | ``<checkout>/assets/results``   | MAGE_RESULTS      |
| bench         | ``<checkout>/assets/bench``     | MAGE_BENCH        |
| figures       | ``<checkout>/assets/figures``   | MAGE_FIGURES      |
| assets        | ``<checkout>/assets``           | MAGE_ASSETS       |
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout (or the folder holding the installed package)


def _where(variable: str, default: Path) -> Path:
    return Path(os.environ.get(variable) or default).expanduser()


def checkpoints() -> Path:
    """Trained adapters, value models and ReACT corrections, ``<task>/...``."""
    return _where("MAGE_CHECKPOINTS", ROOT / "checkpoints")


def cache() -> Path:
    """Built base models, sample pools, journals of sweeps and training rounds."""
    return _where("MAGE_CACHE_DIR", Path.home() / ".cache" / "mage")


def assets() -> Path:
    """Committed measurements (objective checks) and the folders below."""
    return _where("MAGE_ASSETS", ROOT / "assets")


def results() -> Path:
    """Evaluation results files (``<task>.json`` and friends): what the app's plot and the docs draw from."""
    return _where("MAGE_RESULTS", assets() / "results")


def bench() -> Path:
    """Benchmark results (``<part>.json``)."""
    return _where("MAGE_BENCH", assets() / "bench")


def figures() -> Path:
    """Figures drawn from results and benchmarks."""
    return _where("MAGE_FIGURES", assets() / "figures")
