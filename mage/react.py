"""ReACT: closed-form correction of a merged model's final representation (arXiv 2511.10943, SPEC §5).

Given the merged model f_m and the experts f_i, with final hidden states (the input of the output
head) on unlabeled calibration inputs as columns — Z_i^m = f_m(X_i), Z_i = f_i(X_i), each (D, N_i):

    W_i = argmin_W ‖W Z_i^m − Z_i‖² + β‖W − O_i‖²,   O_i = U Vᵀ  from  U Σ Vᵀ = Z_i Z_i^mᵀ
        = (Z_i Z_i^mᵀ + β O_i)(Z_i^m Z_i^mᵀ + β I)⁻¹
    W_μ = (Σ_i μ_i W_i C_i)(Σ_i μ_i C_i)⁻¹,   C_i = Z_i^m Z_i^mᵀ + β I

(W_μ is the minimiser of Σ_i μ_i [‖W Z_i^m − Z_i‖² + β‖W − O_i‖²].) At inference h ← W_μ h before the
output head. The paper corrected CLIP classifiers; here [ours] f_m is the uniform soup of the
experts of a generative LM, calibration samples are the tokens of expert-generated responses
(teacher-forced), and W_μ is applied to the last hidden state at every decoding step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save

from .io import write_bytes_atomic

REACT_BETA = 0.1


def procrustes(cross: torch.Tensor) -> torch.Tensor:
    """The orthogonal O = U Vᵀ closest to ``cross`` (D, D)."""
    u, _, vh = torch.linalg.svd(cross)
    return u @ vh


def correction(
    z_merged: torch.Tensor, z_expert: torch.Tensor, beta: float = REACT_BETA
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_i, C_i) for one objective from (D, N) representation matrices; float64 internally."""
    zm, z = z_merged.double(), z_expert.double()
    eye = torch.eye(zm.shape[0], dtype=torch.float64)
    cross = z @ zm.T  # (D, D)
    c = zm @ zm.T + beta * eye
    w = torch.linalg.solve(c, (cross + beta * procrustes(cross)).T).T  # (cross + βO) C⁻¹, C symmetric
    return w, c


def preference_correction(
    ws: Sequence[torch.Tensor],
    cs: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    products: Sequence[torch.Tensor] | None = None,
) -> torch.Tensor:
    """W_μ = (Σ μ_i W_i C_i)(Σ μ_i C_i)⁻¹: one D×D solve per preference (``products`` = the W_i C_i,
    which do not depend on μ, precomputed)."""
    numerator, denominator = mix_corrections(ws, cs, weights, products=products)
    return torch.linalg.solve(denominator, numerator.T).T  # denominator is symmetric


def mix_corrections(
    ws: Sequence[torch.Tensor],
    cs: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    products: Sequence[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ μ_i W_i C_i, Σ μ_i C_i): the two factors of W_μ, in float64."""
    products = products if products is not None else [w.double() @ c.double() for w, c in zip(ws, cs)]
    return sum(m * p for m, p in zip(weights, products)), sum(m * c.double() for m, c in zip(weights, cs))


class FactoredCorrection:
    """W_μ = N D⁻¹ kept factored: N = Σ μ_i W_i C_i and the Cholesky factor of D = Σ μ_i C_i.

    A new μ costs one Cholesky factorisation (D³/3 flops) instead of forming W_μ (a solve with D
    right-hand sides, 2D³); applying it costs two triangular solves and a product per token,
    O(D²), small next to a decoder layer. float64 throughout, as the calibration.
    """

    def __init__(self, numerator: torch.Tensor, denominator: torch.Tensor):
        self.numerator = numerator.double()
        self.chol = torch.linalg.cholesky(denominator.double())

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.chol.device != hidden.device:
            self.numerator, self.chol = self.numerator.to(hidden.device), self.chol.to(hidden.device)
        flat = hidden.reshape(-1, hidden.shape[-1]).double().T  # (D, M)
        return (self.numerator @ torch.cholesky_solve(flat, self.chol)).T.reshape(hidden.shape).to(hidden.dtype)

    def matrix(self) -> torch.Tensor:
        return self.numerator @ torch.cholesky_inverse(self.chol)


class CorrectedHead(torch.nn.Module):
    """The output head applied to W h: logits = head(W h). Swap it in for ``lm_head``.
    ``w``: a (D, D) matrix or a :class:`FactoredCorrection`."""

    def __init__(self, head: torch.nn.Module, w: "torch.Tensor | FactoredCorrection"):
        super().__init__()
        self.head = head
        self.factored = w if isinstance(w, FactoredCorrection) else None
        if self.factored is None:
            self.register_buffer("w_t", w.T.to(head.weight).contiguous(), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self.factored(hidden) if self.factored is not None else hidden @ self.w_t)

    @property
    def weight(self):  # tied-embedding code paths read lm_head.weight
        return self.head.weight


@dataclass
class ReactState:
    """Per-objective corrections of one task: W_i and C_i, (n, D, D) each."""

    objectives: list[str]
    ws: torch.Tensor
    cs: torch.Tensor
    meta: dict

    def __post_init__(self):
        self._products = [w.double() @ c.double() for w, c in zip(self.ws, self.cs)]  # W_i C_i, once

    def for_preference(self, weights: Sequence[float]) -> torch.Tensor:
        return preference_correction(list(self.ws), list(self.cs), weights, products=self._products).float()

    def factored(self, weights: Sequence[float]) -> FactoredCorrection:
        """W_μ for decoding: one Cholesky factorisation per preference (see :class:`FactoredCorrection`)."""
        return FactoredCorrection(*mix_corrections(list(self.ws), list(self.cs), weights, products=self._products))

    def save(self, path: str | Path) -> None:
        meta = {k: str(v) for k, v in self.meta.items()} | {"objectives": ",".join(self.objectives)}
        write_bytes_atomic(
            path, save({"W": self.ws.float().contiguous(), "C": self.cs.float().contiguous()}, metadata=meta)
        )

    def save_checkpoint(
        self, folder: str | Path, *, base_fingerprint: str, tokenizer_fingerprint: str, readme: str
    ) -> Path:
        """The corrections, a README and a manifest (hashes and fingerprints, as adapters have), published whole."""
        from .adapters import write_manifest
        from .io import atomic_dir, write_text_atomic

        with atomic_dir(folder) as tmp:
            self.save(tmp / REACT_FILE)
            write_text_atomic(tmp / "README.md", readme)
            write_manifest(tmp, base_fingerprint=base_fingerprint, tokenizer_fingerprint=tokenizer_fingerprint)
        return Path(folder) / REACT_FILE

    @classmethod
    def load(
        cls, path: str | Path, *, base_fingerprint: str | None = None, tokenizer_fingerprint: str | None = None
    ) -> "ReactState":
        """Read the corrections after checking the folder's manifest, so a damaged file or one calibrated for
        another model is refused by name instead of decoding garbage."""
        from safetensors import SafetensorError, safe_open

        from .adapters import CheckpointError, verify_checkpoint

        path = Path(path)
        verify_checkpoint(path.parent, base_fingerprint=base_fingerprint, tokenizer_fingerprint=tokenizer_fingerprint)
        try:
            with safe_open(str(path), "pt") as f:
                meta = dict(f.metadata() or {})
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as err:
            raise CheckpointError(
                f"{path} cannot be read ({err}); fix: python -m mage react-calibrate --task <task>"
            ) from None
        if "objectives" not in meta or not {"W", "C"} <= tensors.keys():
            raise CheckpointError(
                f"{path} is not a ReACT calibration (no W, C or objectives); fix: python -m mage react-calibrate "
                "--task <task>"
            )
        if not all(bool(torch.isfinite(t).all()) for t in (tensors["W"], tensors["C"])):
            raise CheckpointError(
                f"{path} holds NaN or infinite values; fix: python -m mage react-calibrate --task <task>"
            )
        return cls(meta.pop("objectives").split(","), tensors["W"].double(), tensors["C"].double(), meta)


@torch.no_grad()
def final_states(model, tokenizer, prompts: Sequence[list[dict]], responses: Sequence[list[int]]) -> torch.Tensor:
    """Teacher-forced final hidden states at the response positions, stacked as columns: (D, N).
    One sequence at a time (no padding to get wrong; calibration is small)."""
    from .decoding import encode_prompts

    device = next(model.parameters()).device
    columns = []
    for prompt, response in zip(prompts, responses):
        if not response:
            continue
        ids, _ = encode_prompts(tokenizer, [prompt], device)
        full = torch.cat([ids, torch.tensor([response], device=device)], dim=1)
        hidden = model.get_decoder()(input_ids=full).last_hidden_state[0]  # (T, D), after the final norm
        columns.append(
            hidden[ids.shape[1] - 1 : full.shape[1] - 1].T.cpu()
        )  # the states that predict the response tokens
    return torch.cat(columns, dim=1).double()


REACT_FILE = "react.safetensors"


def react_path(task) -> Path:
    from .policy import checkpoints_root

    return checkpoints_root() / task.name / "react" / REACT_FILE


def calibrate(
    engine,
    *,
    prompts_per_objective: int = 32,
    beta: float = REACT_BETA,
    seed: int = 0,
    max_new_tokens: int | None = None,
    progress: bool = True,
) -> ReactState:
    """W_i, C_i for every objective of the engine's task from expert-generated responses (no labels)."""
    from tqdm.auto import tqdm

    from .decoding import SamplingConfig, generate

    task, bank = engine.task, engine.policy
    n = len(task.objectives)
    examples = task.examples("train")[:prompts_per_objective]
    prompts = [task.messages(ex) for ex in examples]
    started = time.time()
    ws, cs, tokens = [], [], 0
    for i in tqdm(range(n), desc="react calibration", disable=not progress):
        one_hot = [1.0 if k == i else 0.0 for k in range(n)]
        bank.merge("rs", one_hot)  # expert i generates the calibration responses
        gens = generate(
            bank.model,
            bank.tokenizer,
            prompts,
            SamplingConfig(max_new_tokens=max_new_tokens or task.max_new_tokens),
            seed=seed,
            batch_size=8,
        )
        responses = [g.token_ids for g in gens]
        z_expert = final_states(bank.model, bank.tokenizer, prompts, responses)
        bank.merge("rs", [1.0 / n] * n)  # f_m: the uniform soup of the experts
        z_merged = final_states(bank.model, bank.tokenizer, prompts, responses)
        w, c = correction(z_merged, z_expert, beta)
        tokens += z_merged.shape[1]
        ws.append(w)
        cs.append(c)
    meta = {
        "beta": beta,
        "prompts_per_objective": prompts_per_objective,
        "seed": seed,
        "tokens": tokens,
        "wall_time_s": round(time.time() - started, 1),
    }
    return ReactState(list(task.objectives), torch.stack(ws), torch.stack(cs), meta)
