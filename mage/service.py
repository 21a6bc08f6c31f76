"""What the UI calls: plain values in, plain values out. No gradio here.

One :class:`~mage.policy.PolicyBank` per task is loaded lazily and shared; every request merges
for its own preference and generates while holding that bank's lock, so concurrent users with
different preferences never see each other's merges.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Sequence

from .adapters import CheckpointError
from .decoding import SamplingConfig
from .merging import normalize_weights
from .models import DEFAULT_BASE, pick_device
from .objectives import score_all
from .policy import PolicyBank
from .tasks import TASKS, get_task

MAX_PROMPT_CHARS = 4000  # longer prompts are truncated (with a notice)
MAX_NEW_TOKENS = 256  # server-side cap whatever the client asks

METHOD_LABELS = {"bone": "Bone Soup", "rs": "Rewarded Soup", "aba": "Bone Soup, no inverse (ABA)", "base": "Base model"}


@dataclass
class Reply:
    method: str
    label: str
    text: str
    scores: dict[str, float]
    coefficients: list[float]
    error: str = ""


class Service:
    def __init__(self, base: str = DEFAULT_BASE):
        self.base = base
        self._banks: dict[str, PolicyBank] = {}
        self._locks = {name: threading.Lock() for name in TASKS}
        self._load_lock = threading.Lock()

    def device(self) -> str:
        return str(pick_device(None))

    def objectives(self, task: str) -> list[str]:
        return list(get_task(task).objectives)

    def preference(self, task: str, sliders: Sequence[float]) -> list[float]:
        """Slider values → μ on the simplex (raises ValueError with a message for all-zero sliders)."""
        return normalize_weights([float(s) for s in sliders], len(get_task(task).objectives))

    def bank(self, task: str) -> PolicyBank:
        with self._load_lock:
            if task not in self._banks:
                self._banks[task] = PolicyBank(task, base=self.base)
            return self._banks[task]

    def generate(self, task: str, prompt: str, sliders: Sequence[float], methods: Sequence[str], *, max_new_tokens: int = 48, temperature: float = 1.0, top_p: float = 0.9, seed: int = 0, greedy: bool = False) -> tuple[list[Reply], list[str]]:
        """Generate with each method for the sliders' preference. Returns (replies, notices)."""
        notices = []
        prompt = (prompt or "").strip()
        if not prompt:
            raise ValueError("the prompt is empty; type a request (or paste an article for the summary task)")
        if len(prompt) > MAX_PROMPT_CHARS:
            prompt = prompt[:MAX_PROMPT_CHARS]
            notices.append(f"the prompt was truncated to its first {MAX_PROMPT_CHARS} characters")
        if not methods:
            raise ValueError("no method selected; tick at least one method to compare")
        if not (isinstance(seed, (int, float)) and math.isfinite(seed) and 0 <= seed < 2**31):
            raise ValueError(f"seed {seed} is out of range; use a whole number from 0 to 2147483647")
        mu = self.preference(task, sliders)
        sampling = SamplingConfig(max_new_tokens=int(min(max_new_tokens, MAX_NEW_TOKENS)), temperature=temperature, top_p=top_p, greedy=greedy)
        bank = self.bank(task)
        replies = []
        for method in methods:
            try:
                with self._locks[task]:
                    gen = bank.generate(method, mu, [prompt], sampling, seed=int(seed))[0]
                    coefs = bank.current.coefficients
            except CheckpointError as err:
                replies.append(Reply(method, METHOD_LABELS.get(method, method), "", {}, [], error=str(err)))
                continue
            scores = {k: v[0] for k, v in score_all(bank.task.objectives, [prompt], [gen.text]).items()}
            replies.append(Reply(method, METHOD_LABELS.get(method, method), gen.text, scores, coefs))
        return replies, notices
