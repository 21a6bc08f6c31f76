"""Every method name of SPEC §3 → a policy and an optional guide, and one engine that runs them.

| method        | policy                        | guidance                                   |
|---------------|-------------------------------|--------------------------------------------|
| base          | the base model                | —                                          |
| rs / bone / aba | stage-1 merge for μ         | —                                          |
| mage-e/-i     | Bone Soup for μ               | merged explicit / implicit value model φ(μ)|
| ensemble-e/-i | Bone Soup for μ               | prediction ensemble Σ μ_i of n value models|
| sft+e/-i      | the base (fixed) model        | merged value model φ(μ) (compatibility baseline) |
| bon-e         | Bone Soup for μ               | the best of k replies by the merged explicit value model |
| mod           | MOD: Σ μ_i log π_i over the n experts | —                                  |
| react         | uniform expert soup, final hidden state h ← W_μ h | —                      |

The merged implicit guide (``mage-i``, ``sft+i``) runs by default through the policy's own weights in the
same forward (:mod:`mage.fused`, [ours]): same decoding rule, one pass over the base weights per step
and no second model in memory. ``Engine(fused=False)`` runs it as a separate model.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Sequence

import torch

from .adapters import CheckpointError
from .decoding import Generation, SamplingConfig, generate
from .fused import FusedImplicit, row_corrections
from .guidance import ExplicitGuide, ImplicitGuide, Member, ProductOfExperts
from .merging import DEFAULT_BETA, Soup, get_merge_method, normalize_weights
from .rerank import BestOfN
from .models import DEFAULT_BASE, device_of, fingerprint_model, fingerprint_tokenizer, load_base
from .policy import MergedPolicy, PolicyBank, check_ingredients
from .tasks import Task, get_task
from .values import ExplicitValueModel, load_values, merge_heads


# --------------------------------------------------------------------------- the method table
# A method is a policy (what decodes) and an optional guide (what re-weights its next-token scores), each an
# object the Engine calls: `build` sets the policy or guide up for μ, `reads` names the checkpoints it depends
# on (so cached evaluations are invalidated exactly when they change). A new method is one row below.


def _adapter_digests(engine: "Engine", kind: str | None) -> list[str]:
    group = engine.policy.groups.get(kind) if kind else None
    adapters = engine.policy.soup.adapters[group] if group is not None and engine.policy.soup else []
    return [json.dumps(a.meta.get("files", {}), sort_keys=True) for a in adapters]


@dataclass(frozen=True)
class Merge:
    """A stage-1 policy: the task's ingredients merged for μ by a merge method (``base`` = none)."""

    merge: str  # "base", "rs", "bone" or "aba"
    shows_coefficients = True

    def ingredients(self) -> str | None:
        return None if self.merge == "base" else get_merge_method(self.merge).ingredients

    def build(self, engine: "Engine", weights: list[float]) -> tuple[torch.nn.Module, list[float]]:
        return engine.policy.model, engine.policy.merge(self.merge, weights).coefficients

    def reads(self, engine: "Engine") -> list[str]:
        return _adapter_digests(engine, self.ingredients())


@dataclass(frozen=True)
class Mod:
    """MOD (Shi et al. 2024): next-token Σ μ_i log π_i over the n experts, each its own model."""

    shows_coefficients = False

    def build(self, engine: "Engine", weights: list[float]) -> tuple[torch.nn.Module, list[float]]:
        return ProductOfExperts(engine.experts(), weights), []

    def reads(self, engine: "Engine") -> list[str]:
        return _adapter_digests(engine, "experts")


@dataclass(frozen=True)
class React:
    """ReACT: the uniform soup of the experts, its final representation corrected by W_μ."""

    shows_coefficients = False

    def build(self, engine: "Engine", weights: list[float]) -> tuple[torch.nn.Module, list[float]]:
        from .react import CorrectedHead

        w = engine.react_state().factored(weights)
        uniform = engine.policy.merge("rs", [1.0 / len(weights)] * len(weights))
        engine.policy.model.lm_head = CorrectedHead(engine._head, w)
        return engine.policy.model, uniform.coefficients

    def reads(self, engine: "Engine") -> list[str]:
        from .io import sha256_file
        from .react import react_path

        path = react_path(engine.task)
        return _adapter_digests(engine, "experts") + ([sha256_file(path)] if path.is_file() else [])


@dataclass(frozen=True)
class Guidance:
    """MAGE stage 2: value models of one kind ("explicit" or "implicit") merged by μ into one guide, or their
    prediction ensemble weighted by μ ("ensemble"), or the merged model reranking whole replies ("rerank")."""

    kind: str
    mode: str = "merged"

    @property
    def uses_strength(self) -> bool:
        """A reranker has no strength: it only picks among replies."""
        return self.mode != "rerank"

    def build(self, engine: "Engine", weights: list[float], strength: float):
        return engine.guided(self.kind, weights, strength, mode=self.mode)

    def reads(self, engine: "Engine") -> list[str]:
        from .io import sha256_file
        from .values import value_dir

        return [sha256_file(p) for p in sorted(value_dir(engine.task, self.kind).glob("*/mage_manifest.json"))]


@dataclass(frozen=True)
class Method:
    name: str
    policy: Merge | Mod | React
    guide: Guidance | None = None
    label: str = ""  # what a user reads (the app's checkboxes, replies, legends)
    color: str = "#7f7f7f"  # its colour in every figure
    description: str = ""

    def reads(self, engine: "Engine") -> list[str]:
        """Digests of every checkpoint the method depends on."""
        return self.policy.reads(engine) + (self.guide.reads(engine) if self.guide else [])


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("base", Merge("base"), None, "Base model", "#000000", "the untouched base model"),
        Method("rs", Merge("rs"), None, "Rewarded Soup", "#2ca02c", "Rewarded Soup: experts merged with λ = μ"),
        Method("bone", Merge("bone"), None, "Bone Soup", "#1f77b4", "Bone Soup: backbones merged with λ = B⁻¹μ"),
        Method(
            "aba",
            Merge("aba"),
            None,
            "Bone Soup, no inverse (ABA)",
            "#9467bd",
            "Bone Soup without the inverse: backbones merged with λ = μ",
        ),
        Method(
            "mage-e",
            Merge("bone"),
            Guidance("explicit"),
            "MAGE (explicit guidance)",
            "#ff7f0e",
            "MAGE: Bone Soup + merged explicit value guidance",
        ),
        Method(
            "mage-i",
            Merge("bone"),
            Guidance("implicit"),
            "MAGE (implicit guidance)",
            "#d62728",
            "MAGE: Bone Soup + merged implicit value guidance",
        ),
        Method(
            "ensemble-e",
            Merge("bone"),
            Guidance("explicit", "ensemble"),
            "Bone Soup + explicit ensemble",
            "#f7b6d2",
            "Bone Soup + ensemble of explicit value models",
        ),
        Method(
            "ensemble-i",
            Merge("bone"),
            Guidance("implicit", "ensemble"),
            "Bone Soup + implicit ensemble",
            "#e377c2",
            "Bone Soup + ensemble of implicit value models",
        ),
        Method(
            "sft+e",
            Merge("base"),
            Guidance("explicit"),
            "Base + explicit guidance",
            "#bcbd22",
            "fixed base + merged explicit guidance",
        ),
        Method(
            "sft+i",
            Merge("base"),
            Guidance("implicit"),
            "Base + implicit guidance",
            "#7f7f7f",
            "fixed base + merged implicit guidance",
        ),
        Method(
            "bon-e",
            Merge("bone"),
            Guidance("explicit", "rerank"),
            "Bone Soup, best of k (explicit values)",
            "#aec7e8",
            "Bone Soup, k replies sampled and the one the merged explicit value model scores highest kept: MAGE "
            "(explicit)'s value-model budget spent on whole replies (compute-matched baseline)",
        ),
        Method("mod", Mod(), None, "MOD", "#8c564b", "MOD: next-token Σ μ_i log π_i over the experts"),
        Method(
            "react",
            React(),
            None,
            "ReACT",
            "#17becf",
            "ReACT: uniform soup of the experts + closed-form correction W_μ of the final representation",
        ),
    )
}


def method_labels() -> dict[str, str]:
    """Each method's name for people (checkboxes, replies, legends), read from the table at call time."""
    return {name: m.label for name, m in METHODS.items()}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; fix: use one of {list(METHODS)}")
    return METHODS[name]


def find_method(policy, guide: Guidance | None = None) -> str | None:
    """The table's method with this policy and guide, if any."""
    return next((m.name for m in METHODS.values() if m.policy == policy and m.guide == guide), None)


def strength_source(name: str) -> str | None:
    """The method whose chosen guidance strength a guided method uses when it has none of its own: MAGE
    with the same kind of guide (ensembles and fixed-base guidance are compared at MAGE's strength)."""
    spec = get_method(name)
    if spec.guide is None or not spec.guide.uses_strength:
        return None
    return find_method(Merge("bone"), Guidance(spec.guide.kind)) or name


class GuidanceBank:
    """A task's value models of one kind on their own copy of the base model.

    ``merged(μ)`` folds φ(μ) = φ_0 + Σ μ_i Δφ_i into the copy (heads merged alike) — one model;
    ``ensemble(μ)`` returns the n value models as separate members weighted by μ_i.
    """

    def __init__(
        self,
        task: Task,
        kind: str,
        *,
        base: str = DEFAULT_BASE,
        policy_tokenizer=None,
        policy_model=None,
        device: str | None = "cpu",
        dtype: str | torch.dtype | None = None,
    ):
        """With ``policy_model`` the value adapters are checked against the policy's base model, this bank's
        own model copy follows the policy's device and dtype, and it is loaded only when first needed (the
        fused implicit path needs none)."""
        self.task, self.kind, self.base, self.device, self.dtype = task, kind, base, device, dtype
        if policy_model is not None:
            self.device, self.dtype = device_of(policy_model)
        self._policy_tokenizer = policy_tokenizer
        self._model = self.tokenizer = self.soup = None
        if policy_model is None:
            self._load_model()
            fps = dict(
                base_fingerprint=fingerprint_model(self._model),
                tokenizer_fingerprint=fingerprint_tokenizer(self.tokenizer),
            )
        else:
            fps = dict(
                base_fingerprint=fingerprint_model(policy_model),
                tokenizer_fingerprint=fingerprint_tokenizer(policy_tokenizer),
            )
        self.values = load_values(
            task, kind, **fps
        )  # a value adapter that does not fit is refused by name before any guide is built
        check_ingredients(policy_model if policy_model is not None else self._model, [v.adapter for v in self.values])
        self._members: list[torch.nn.Module] | None = None

    def _load_model(self) -> None:
        self._model, self.tokenizer = load_base(self.base, device=self.device, dtype=self.dtype)
        if self._policy_tokenizer is not None and fingerprint_tokenizer(
            self._policy_tokenizer
        ) != fingerprint_tokenizer(self.tokenizer):
            raise ValueError(
                f"the {self.kind} guidance models use a different tokenizer than the policy; fix: train value models "
                "on the policy's base model"
            )

    @property
    def model(self) -> torch.nn.Module:
        """The bank's own copy of the base model, the value adapters merged into it by :meth:`merged`."""
        if self._model is None:
            self._load_model()
        if self.soup is None:
            self.soup = Soup(self._model, [v.adapter for v in self.values])
        return self._model

    def _wrap(self, model, heads_weights: Sequence[float]):
        if self.kind == "implicit":
            return model
        return ExplicitValueModel(model, merge_heads([v.head for v in self.values], heads_weights))

    def merged(self, weights: Sequence[float]) -> list[Member]:
        model = self.model
        self.soup.apply(list(weights))
        return [Member(self._wrap(model, weights), 1.0)]

    def ensemble(self, weights: Sequence[float]) -> list[Member]:
        if self._members is None:  # n separate models: the ensemble's cost is the point
            self.model  # noqa: B018 — loads the bank's model and soup
            self._members = []
            n = len(self.values)
            for j in range(n):
                one_hot = [1.0 if k == j else 0.0 for k in range(n)]
                self.soup.apply(one_hot)
                self._members.append(self._wrap(copy.deepcopy(self.model), one_hot))
        return [Member(m, w) for m, w in zip(self._members, weights) if w > 0]


class Engine:
    """One task: the stage-1 policy bank plus lazily loaded guidance banks and MOD experts."""

    def __init__(
        self,
        task: str | Task,
        *,
        base: str = DEFAULT_BASE,
        beta: float = DEFAULT_BETA,
        top_k: int = 10,
        policy: PolicyBank | None = None,
        device: str | None = "cpu",
        dtype: str | torch.dtype | None = None,
        fused: bool = True,
    ):
        """``device``: "cpu" (default), "cuda", or None / "auto" for a GPU when present; ``dtype``: the base
        model's weights (float32 default; bfloat16, float16, float64). Everything a method builds — value
        models and heads, MOD experts, ReACT's correction, the fused guide — follows the policy's device and
        dtype. ``fused``: run the merged implicit guide through the policy's own weights in one forward
        (:mod:`mage.fused`); False runs it as a separate model (same decoding rule, for comparison)."""
        self.task = get_task(task) if isinstance(task, str) else task
        self.fused = fused
        self.policy = policy or PolicyBank(self.task, base=base, beta=beta, device=device, dtype=dtype)
        self.base, self.top_k = base, top_k
        self.device, self.dtype = device_of(self.policy.model)
        self._guides: dict[str, GuidanceBank] = {}
        self._experts: list[torch.nn.Module] | None = None
        self._react = None
        self.current: MergedPolicy | None = None  # what the last prepare() set up
        self._head = self.policy.model.lm_head  # restored before every method; ReACT wraps it

    def react_state(self):
        from .react import ReactState, react_path

        if self._react is None:
            path = react_path(self.task)
            if not path.is_file():
                raise CheckpointError(
                    f"{path} is missing: ReACT is not calibrated for task {self.task.name!r}; fix: python -m mage "
                    f"react-calibrate --task {self.task.name}"
                )
            self._react = ReactState.load(
                path,
                base_fingerprint=fingerprint_model(self.policy.model),
                tokenizer_fingerprint=fingerprint_tokenizer(self.policy.tokenizer),
            )
            if self._react.objectives != list(self.task.objectives):
                raise CheckpointError(
                    f"{path} holds corrections for {self._react.objectives}, the task has "
                    f"{list(self.task.objectives)}; fix: python -m mage react-calibrate --task {self.task.name}"
                )
            if self._react.ws.shape[-1] != self.policy.model.config.hidden_size:
                raise CheckpointError(
                    f"{path} was calibrated for hidden size {self._react.ws.shape[-1]}, the model has "
                    f"{self.policy.model.config.hidden_size}; fix: python -m mage react-calibrate --task "
                    f"{self.task.name}"
                )
        return self._react

    def guidance(self, kind: str) -> GuidanceBank:
        if kind not in self._guides:
            self._guides[kind] = GuidanceBank(
                self.task, kind, base=self.base, policy_tokenizer=self.policy.tokenizer, policy_model=self.policy.model
            )
        return self._guides[kind]

    def experts(self) -> list[torch.nn.Module]:
        """n copies of the base model, expert i folded into copy i (for MOD)."""
        if self._experts is None:
            if "experts" in self.policy.missing:
                raise CheckpointError(f"method 'mod' is unavailable: {self.policy.missing['experts']}")
            group = self.policy.groups["experts"]
            n = group.stop - group.start
            self._experts = []
            for j in range(n):
                self.policy.merge("rs", [1.0 if k == j else 0.0 for k in range(n)])
                self._experts.append(copy.deepcopy(self.policy.model))
        return self._experts

    def prepare(self, method: str, weights: Sequence[float], strength: float = 1.0):
        """(policy model, guide or None) for a method and preference μ: the method's policy built for μ, then its
        guide."""
        spec = get_method(method)
        weights = normalize_weights(weights, len(self.task.objectives))
        self.policy.model.lm_head = self._head
        self.current = None
        model, coefficients = spec.policy.build(self, weights)
        self.current = MergedPolicy(method, weights, coefficients)
        if spec.guide is None:
            return model, None
        return spec.guide.build(self, weights, strength)

    def guided(self, kind: str, weights: Sequence[float], strength: float, *, mode: str = "merged"):
        """(model, guide) for decoding the policy as merged now under value guidance of ``kind``; the merged
        implicit guide runs fused into the policy's forward (the model returned is then the fused one)."""
        if self.fused and kind == "implicit" and mode == "merged":
            fused = FusedImplicit(
                self.policy.model,
                row_corrections(self.policy.soup, [v.adapter for v in self.guidance("implicit").values], list(weights)),
                strength,
            )
            return fused, fused
        return self.policy.model, self.guide(kind, weights, strength, mode=mode)

    def guide(self, kind: str, weights: Sequence[float], strength: float, *, mode: str = "merged"):
        """A guide from the value models of ``kind``: merged by ``weights`` into one model, or their ensemble."""
        bank = self.guidance(kind)
        if mode == "rerank":  # k whole replies, kept by V_μ: k value-model calls per token, as MAGE (explicit) spends
            if kind != "explicit":
                raise ValueError(
                    f"reranking needs an explicit value model, not {kind!r}; fix: use Guidance('explicit', 'rerank')"
                )
            return BestOfN(bank.merged(weights)[0].model, self.top_k)
        members = bank.merged(weights) if mode == "merged" else bank.ensemble(weights)
        return ExplicitGuide(members, strength, self.top_k) if kind == "explicit" else ImplicitGuide(members, strength)

    def generate(
        self,
        method: str,
        weights: Sequence[float],
        inputs: Sequence[str],
        config: SamplingConfig | None = None,
        *,
        strength: float = 1.0,
        seed: int = 0,
        seeds: Sequence[int] | None = None,
        batch_size: int = 8,
        progress: bool = False,
        on_token=None,
        fast: bool = False,
    ) -> list[Generation]:
        """``fast``: the static-cache decode path (CUDA graphs on a GPU; :class:`mage.decoding.FastStep`) for
        every method but MOD, whose experts are several models; same tokens as the reference loop."""
        model, guide = self.prepare(method, weights, strength)
        config = config or SamplingConfig(max_new_tokens=self.task.max_new_tokens)
        prompts = [self.task.messages(x) for x in inputs]
        return generate(
            model,
            self.policy.tokenizer,
            prompts,
            config,
            seed=seed,
            seeds=seeds,
            batch_size=batch_size,
            guide=guide,
            progress=progress,
            on_token=on_token,
            fast=fast and not isinstance(get_method(method).policy, Mod),
        )
