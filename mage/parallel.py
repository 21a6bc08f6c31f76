"""Process ranks under ``torchrun`` / ``accelerate launch``: work is sharded by rank, merged on rank 0."""

from __future__ import annotations

import os


def rank_world() -> tuple[int, int]:
    """(rank, world size) from the launcher's environment; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def barrier(world: int) -> None:
    """Wait for every process (a gloo group on the CPU); a no-op in a single process."""
    if world > 1:
        from accelerate import PartialState

        PartialState(cpu=True).wait_for_everyone()
