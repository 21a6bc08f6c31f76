"""Stage-1 policies: one base model + a task's trained ingredients, merged live for a preference.

Checkpoint layout (``$MAGE_CHECKPOINTS`` or ``checkpoints/`` beside the package)::

    checkpoints/<task>/experts/<objective>/          Rewarded-Soup experts, rows of I
    checkpoints/<task>/backbones-b<beta>/<j>/        Bone-Soup backbones, rows of B(beta)

All ingredients of a task are folded through one :class:`~mage.merging.Soup`, so switching method or
preference is one in-place re-merge with no disk reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from . import locations
from .adapters import CheckpointError, LoraAdapter, check_fits, load_adapter
from .decoding import Generation, SamplingConfig, generate
from .merging import DEFAULT_BETA, MERGE_METHODS, Soup, check_compatible, coefficients, get_merge_method
from .models import DEFAULT_BASE, fingerprint_model, fingerprint_tokenizer, load_base
from .tasks import Task, get_task

STAGE1_METHODS = ("base", *MERGE_METHODS)  # "base" = the untouched base model (all λ = 0)


def checkpoints_root() -> Path:
    return locations.checkpoints()


def ingredient_dir(task: Task, kind: str, beta: float = DEFAULT_BETA) -> Path:
    if kind == "experts":
        return checkpoints_root() / task.name / "experts"
    if kind == "backbones":
        return checkpoints_root() / task.name / f"backbones-b{beta:g}"
    raise ValueError(f"unknown ingredient kind {kind!r}; fix: use 'experts' or 'backbones'")


def ingredient_names(task: Task, kind: str) -> list[str]:
    """Folder names of a kind's ingredients, in objective / row order."""
    return list(task.objectives) if kind == "experts" else [str(j) for j in range(len(task.objectives))]


def load_ingredients(
    task: Task,
    kind: str,
    beta: float = DEFAULT_BETA,
    *,
    base_fingerprint: str | None = None,
    tokenizer_fingerprint: str | None = None,
) -> list[LoraAdapter]:
    root = ingredient_dir(task, kind, beta)
    adapters = []
    for name in ingredient_names(task, kind):
        folder = root / name
        if not folder.is_dir():
            raise CheckpointError(
                f"{folder} is missing: the {kind} of task {task.name!r} (beta={beta:g}) are not trained; "
                f"fix: python -m mage train-set --task {task.name} --kind {kind}"
                + (f" --beta {beta:g}" if kind == "backbones" else "")
            )
        adapters.append(
            load_adapter(
                folder,
                base_fingerprint=base_fingerprint,
                tokenizer_fingerprint=tokenizer_fingerprint,
                name=f"{kind}/{name}",
            )
        )
    return adapters


def check_ingredients(model, adapters: Sequence[LoraAdapter]) -> list[LoraAdapter]:
    """A kind's adapters (stage-1 ingredients or value models), each checked to fit the model and all
    targeting the same modules: a bad one fails its own kind, not the task."""
    for adapter in adapters:
        check_fits(model, adapter)
    check_compatible(adapters)
    return list(adapters)


@dataclass
class MergedPolicy:
    """The result of merging: which method, preference and coefficients the model now carries."""

    method: str
    weights: list[float]
    coefficients: list[float]


class PolicyBank:
    """A base model with a task's experts and backbones loaded; :meth:`merge` re-merges in place.

    Not thread-safe by design: one bank = one model; callers serving several users hold a lock
    around ``merge`` + ``generate`` (see :mod:`mage.service`).
    """

    def __init__(
        self,
        task: str | Task,
        *,
        base: str = DEFAULT_BASE,
        beta: float = DEFAULT_BETA,
        kinds: Sequence[str] = ("experts", "backbones"),
        model=None,
        tokenizer=None,
        strict: bool = False,
        device: str | None = "cpu",
        dtype: str | None = None,
    ):
        """Load ``kinds`` of ingredients. A missing or damaged kind raises with ``strict``; otherwise it is
        recorded in :attr:`missing` and only the methods that need it fail (with the same message)."""
        self.task = get_task(task) if isinstance(task, str) else task
        self.beta = beta
        if model is None:
            model, tokenizer = load_base(base, device=device, dtype=dtype)
        self.model, self.tokenizer = model, tokenizer
        fps = dict(base_fingerprint=fingerprint_model(model), tokenizer_fingerprint=fingerprint_tokenizer(tokenizer))
        self.groups: dict[str, slice] = {}
        adapters: list[LoraAdapter] = []
        self.missing: dict[str, str] = {}
        for kind in kinds:
            try:
                loaded = check_ingredients(model, load_ingredients(self.task, kind, beta, **fps))
            except CheckpointError as err:
                if strict:
                    raise
                self.missing[kind] = str(err)
                continue
            self.groups[kind] = slice(len(adapters), len(adapters) + len(loaded))
            adapters += loaded
        self.soup = Soup(model, adapters) if adapters else None
        self.current: MergedPolicy | None = None

    def coefficients_for(
        self, method: str, weights: Sequence[float], extrapolation: Sequence[float] | None = None
    ) -> list[float]:
        """λ over *all* loaded adapters (zeros outside the method's ingredient group)."""
        if method not in STAGE1_METHODS:
            raise ValueError(f"unknown method {method!r}; fix: use one of {list(STAGE1_METHODS)}")
        every = [0.0] * (len(self.soup.adapters) if self.soup else 0)  # λ of every loaded adapter
        if method == "base":
            return every
        kind = get_merge_method(method).ingredients
        if kind in self.missing:
            raise CheckpointError(f"method {method!r} is unavailable: {self.missing[kind]}")
        if kind not in self.groups:
            raise CheckpointError(
                f"method {method!r} needs the {kind} of task {self.task.name!r}, which are not loaded"
            )
        every[self.groups[kind]] = coefficients(method, weights, beta=self.beta, extrapolation=extrapolation)
        return every

    def merge(
        self, method: str, weights: Sequence[float], extrapolation: Sequence[float] | None = None
    ) -> MergedPolicy:
        from .merging import normalize_weights

        weights = normalize_weights(weights, len(self.task.objectives))
        every = self.coefficients_for(method, weights, extrapolation)
        if self.soup is not None:
            self.soup.apply(every)
        group = self.groups.get(get_merge_method(method).ingredients) if method != "base" else None
        self.current = MergedPolicy(method, weights, every[group] if group else [])
        return self.current

    def generate(
        self,
        method: str,
        weights: Sequence[float],
        inputs: Sequence[str],
        config: SamplingConfig | None = None,
        *,
        seed: int = 0,
        batch_size: int = 8,
        progress: bool = False,
        fast: bool = False,
    ) -> list[Generation]:
        """Merge for (method, μ), then generate one response per raw task input (``fast``: the static-cache path)."""
        self.merge(method, weights)
        config = config or SamplingConfig(max_new_tokens=self.task.max_new_tokens)
        return generate(
            self.model,
            self.tokenizer,
            [self.task.messages(x) for x in inputs],
            config,
            seed=seed,
            batch_size=batch_size,
            progress=progress,
            fast=fast,
        )

    def generate_rows(
        self,
        method: str,
        preferences: Sequence[Sequence[float]],
        text: str,
        config: SamplingConfig | None = None,
        *,
        seeds: Sequence[int] | None = None,
        seed: int = 0,
        fast: bool = True,
    ) -> list[Generation]:
        """One raw task input decoded for several preferences in ONE batch: row p carries the merge for
        ``preferences[p]`` (:meth:`mage.merging.Soup.apply_rows`), so one pass over the base weights per step
        serves every preference — a sweep's grid points, or several users' sliders. Row p samples with
        ``seeds[p]`` (default: ``seed`` for every row, so preferences differ by their merge alone). Under
        greedy decoding each row gives the tokens of :meth:`generate` for its preference. ``fast`` (default): the
        static KV cache, which a wide batch over a long prompt needs (the dynamic cache re-copies every row's
        keys and values at each step)."""
        from .merging import normalize_weights

        if not preferences:
            raise ValueError("no preference given; fix: pass at least one weight vector")
        rows = [self.coefficients_for(method, normalize_weights(w, len(self.task.objectives))) for w in preferences]
        seeds = list(seeds) if seeds is not None else [seed] * len(rows)
        if self.soup is not None:
            self.soup.apply_rows(rows)
        self.current = None  # no single preference is merged now
        config = config or SamplingConfig(max_new_tokens=self.task.max_new_tokens)
        return generate(
            self.model,
            self.tokenizer,
            [self.task.messages(text)] * len(rows),
            config,
            seeds=seeds,
            batch_size=len(rows),
            fast=fast,
        )
