"""What the UI calls: plain values in, plain values out. No gradio here.

One :class:`~mage.methods.Engine` per task is loaded lazily and shared. All torch work (loading,
merging, decoding, scoring) runs on ONE long-lived compute thread, one request at a time, so
concurrent users with different preferences never see each other's merges — and so only one
OpenMP team exists. With libgomp, every thread that runs a parallel region owns a team of worker
threads; once there are more of those than cores (a loading thread's team plus a new decoding
thread's team on a 2-core machine), idle workers stop spin-waiting and every parallel region pays a
futex wake-up: the prompt pass of a request ran ~30 % slower on a fresh thread than on the thread
that loaded the model (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

from . import locations
from .adapters import CheckpointError
from .io import clean_text
from .decoding import SamplingConfig
from .merging import normalize_weights
from .limits import check_prompt
from .models import (
    DEFAULT_BASE,
    HALF_DTYPES,
    HALF_PRECISION_NOTE,
    import_transformers,
    load_tokenizer,
    pick_device,
    pick_dtype,
)
from .objectives import score_all, use_device
from .methods import METHODS, Engine, method_labels
from .tasks import get_task

log = logging.getLogger("mage.service")
MAX_NEW_TOKENS = 256  # server-side cap whatever the client asks
MAX_METHODS = 4  # methods side by side
MAX_STRENGTH = 5.0

METHOD_LABELS = method_labels()  # the method table's names for people (the app's checkboxes, built once)


class _Cancelled(Exception):
    """Raised inside a decode whose consumer went away."""


@dataclass
class Request:
    """A validated request (see :meth:`Service.validate`)."""

    task: str
    prompt: str
    weights: list[float]  # μ, normalised
    methods: list[str]
    sampling: SamplingConfig
    seed: int
    strength: float
    notices: list[str]


@dataclass
class Reply:
    method: str
    label: str
    text: str
    scores: dict[str, float]
    coefficients: list[float]
    error: str = ""
    done: bool = True

    def point(self, task: str = "", weights: Sequence[float] = (), prompt: str = "") -> dict:
        """This reply as a live point of the plot: its scores, and the μ and prompt it came from."""
        short = prompt if len(prompt) <= 60 else prompt[:57] + "…"
        return {
            "task": task,
            "method": self.method,
            "label": self.label,
            "scores": dict(self.scores),
            "weights": [round(w, 3) for w in weights],
            "prompt": short,
        }

    def plain(self) -> dict:
        """The reply as plain values (what the API returns)."""
        return {
            "method": self.method,
            "label": self.label,
            "text": self.text,
            "scores": dict(self.scores),
            "coefficients": list(self.coefficients),
            "error": self.error,
            "done": self.done,
        }


PAGES_KEPT = 10_000  # sessions whose page state is remembered (least recently used forgotten first)


class Service:
    def __init__(self, base: str = DEFAULT_BASE, *, device: str | None = "auto", dtype: str = "float32"):
        """``device``: "auto" (a GPU when present), "cpu" or "cuda[:N]"; ``dtype``: the base model's weights."""
        self.base, self._device, self.dtype = (
            base,
            str(pick_device(device)),
            str(pick_dtype(dtype)).removeprefix("torch."),
        )
        use_device(self._device)  # the live scores' encoders run beside the models
        import_transformers()  # before any thread of ours imports from it (models.import_transformers)
        self._tokenizer = None
        self._runs: dict[
            str, threading.Event
        ] = {}  # session → the cancel flag of its run in flight (a new run supersedes it)
        self._runs_lock = threading.Lock()
        self._working: dict[str, int] = {}  # session → decodes of its runs now on the compute thread
        self._pages: OrderedDict[str, tuple[str, int]] = (
            OrderedDict()
        )  # session → (the task its page shows, the token of the run that owns it)
        self._load_errors: dict[str, str] = {}
        self._engines: dict[str, Engine] = {}
        self._compute = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="mage-compute"
        )  # the one thread that runs torch (module docstring)

    def run(self, fn, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` on the compute thread and return its result (for torch work outside
        :meth:`stream`, e.g. a benchmark timing the pieces of a request)."""
        return self._compute.submit(fn, *args, **kwargs).result()

    def device(self) -> str:
        return self._device

    def tokenizer(self):
        """The base model's tokenizer alone (to measure prompts before any model loads), loaded once."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.base)
        return self._tokenizer

    def precision_note(self) -> str:
        """What the page says about the dtype: in 16-bit the merges stay unfolded, in float32 (empty for 32/64-bit)."""
        return HALF_PRECISION_NOTE if self.dtype in HALF_DTYPES else ""

    def objectives(self, task: str) -> list[str]:
        return list(get_task(task).objectives)

    def results(self, task: str) -> dict | None:
        """The cached sweep results of a task (``assets/results/<task>.json``), or None."""
        path = locations.results() / f"{get_task(task).name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def stale_fronts(self, task: str) -> str | None:
        """Why the cached fronts of a task cannot be compared with today's scores (None when they can): a
        results file scored by other objectives or by an earlier version of a scorer (its ``scorers``
        signatures differ, or it predates them)."""
        from .pools import scorer_signatures

        result = self.results(task)
        if result is None:
            return None
        name = get_task(task).name
        fix = f"re-measure: python -m mage evaluate --task {name}"
        if list(result.get("objectives", [])) != self.objectives(task):
            measured = ", ".join(result.get("objectives", []))
            return f"the cached fronts were measured on other objectives ({measured}); {fix}"
        current, recorded = scorer_signatures(get_task(task)), result.get("scorers")
        if recorded != current:
            changed = [n for n in current if (recorded or {}).get(n) != current[n]]
            return (
                f"the cached fronts were measured with earlier versions of {', '.join(changed)}; "
                f"your samples are scored by the current ones; {fix}"
            )
        return None

    def axis_pairs(self, task: str) -> list[tuple[str, tuple[int, int]]]:
        """The plot's possible projections as (label, objective indices): one for two objectives, three for three."""
        from itertools import combinations

        names = self.objectives(task)
        return [(f"{names[a]} × {names[b]}", (a, b)) for a, b in combinations(range(len(names)), 2)]

    def pareto_figure(
        self,
        task: str,
        weights: Sequence[float] | None = None,
        live: Sequence[dict] = (),
        axes: Sequence[int] = (0, 1),
        methods: Sequence[str] | None = None,
    ):
        """The Pareto-front figure from cached results projected on ``axes`` (two objective indices), the
        current preference highlighted and live points (``{"method", "scores"}``, e.g. :meth:`Reply.point`)
        added. ``methods``: the fronts drawn (default: every cached method). Axes are fixed to the objectives'
        range [0, 1], so one sample far from the averages never rescales the fronts; names, not codes.
        With no cached results: the live points alone and how to get the fronts."""
        from functools import partial

        from .plots import front_figure

        front_figure = partial(front_figure, labels=method_labels(), unit_axes=True)
        name = get_task(task).name
        n = len(self.objectives(task))
        axes = (
            tuple(axes) if len(axes) == 2 and all(0 <= a < n for a in axes) and axes[0] != axes[1] else (0, 1)
        )  # e.g. a pair from another task
        live = [p for p in live if p.get("scores") and p.get("task", name) == name]
        result = self.results(task)
        stale = self.stale_fronts(task)
        if result is None or (stale and list(result.get("objectives", [])) != self.objectives(task)):
            stub = {"task": name, "objectives": self.objectives(task), "records": []}
            why = stale or f"no cached fronts yet (python -m mage evaluate --task {name})"
            return front_figure(stub, axes=axes, live=live, title=f"{name}: {why}; stars = your samples")
        if stale:  # old scorers: the fronts alone, never beside points scored by today's objectives
            return front_figure(result, axes=axes, title=f"{name}: earlier scorers — {stale}")
        try:
            highlight = self.preference(task, weights) if weights is not None else None
        except ValueError:
            highlight = None
        cached = list(dict.fromkeys(r["method"] for r in result["records"]))
        shown = [m for m in cached if methods is None or m in methods]
        return front_figure(
            result, axes=axes, highlight=highlight, live=live, methods=shown, title=self._front_title(result, shown)
        )

    @staticmethod
    def _front_title(result: dict, shown: Sequence[str]) -> str:
        from .pools import signature_versions

        settings, first = result.get("settings", {}), (result.get("records") or [{}])[0]
        size = (
            f"{first['n_prompts']} prompts × {first.get('samples_per_prompt', 1)} sample(s)"
            if "n_prompts" in first
            else ""
        )
        what = f"{len(shown)} method(s)" if shown else "no method ticked"
        split = settings.get("split", "test") + " split" + (", " + size if size else "")
        versions = signature_versions(result.get("scorers"))
        scored = f"<br><sup>scored by {versions}</sup>" if versions else ""  # which objectives' version it stands on
        return f"{result['task']}: average score per preference ({split}), {what}{scored}"

    def default_strength(self, task: str) -> float:
        """The guidance strength ``choose-strength`` picked for MAGE (implicit) on the validation split, else 1.0."""
        from .strength import chosen_strength

        name = get_task(task).name
        return chosen_strength(name, "mage-i", locations.results())

    def cached_preferences(self, task: str) -> list[tuple[str, list[float]]]:
        """The preference grid points of the cached results as (label, μ), for setting the sliders."""
        result = self.results(task)
        grid = [] if result is None else list(dict.fromkeys(tuple(r["weights"]) for r in result["records"]))
        names = self.objectives(task)
        return [(", ".join(f"{n} {w:.2f}" for n, w in zip(names, point)), list(point)) for point in grid]

    def loaded(self, task: str) -> bool:
        return get_task(task).name in self._engines

    def preload(self, task: str) -> threading.Thread:
        """Load a task's models in the background (the app does it for the default task at start)."""

        def load() -> None:
            try:
                self.engine(task)
            except Exception as err:  # shown on the page by load_status; a request retries the load
                log.warning("preloading %s failed: %s", task, err)
                self._load_errors[get_task(task).name] = f"{type(err).__name__}: {err}"

        thread = threading.Thread(target=load, name=f"mage-preload-{task}", daemon=True)
        thread.start()
        return thread

    def load_status(self, task: str) -> str:
        name = get_task(task).name
        if name in self._engines:
            return f"Models for **{name}** are loaded."
        if name in self._load_errors:
            return f"Loading the models for **{name}** failed: {self._load_errors[name]}"
        return f"Loading the models for **{name}** (the first start builds the default model's cache; about a minute)…"

    def settle(self, session: str, timeout: float = 5.0) -> bool:
        """Wait until no decode of ``session`` runs on the compute thread (a stopped run ends at its next token),
        so what the page shows next cannot be overtaken by the stopped run's last output. True when settled."""
        deadline = time.monotonic() + timeout
        while self._working.get(session, 0) > 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def show(self, session: str, task: str) -> None:
        """The session's page now shows ``task`` (a task switch): its run in flight stops, and a run of
        another task that starts later (a click submitted just before the switch) never owns the page."""
        name = get_task(task).name
        with self._runs_lock:
            self._set_page(session, name, self._pages.get(session, ("", 0))[1] + 1)
        self.cancel(session)

    def claim(self, session: str, task: str) -> int | None:
        """A run of ``task`` takes the session's page: a token for :meth:`owns`, or None when the page shows
        another task (the run was submitted before a task switch and must draw nothing). Each claim
        supersedes the last: an older run of the session no longer owns the page."""
        name = get_task(task).name
        with self._runs_lock:
            shown, token = self._pages.get(session, (name, 0))
            if shown != name:
                return None
            self._set_page(session, name, token + 1)
            return token + 1

    def _set_page(self, session: str, task: str, token: int) -> None:
        self._pages[session] = (task, token)
        self._pages.move_to_end(session)
        while len(self._pages) > PAGES_KEPT:
            self._pages.popitem(last=False)

    def owns(self, session: str, token: int | None) -> bool:
        """Does the run holding ``token`` still own the session's page (no newer run, no task switch since)?
        A consumer checks it right before it draws."""
        with self._runs_lock:
            return token is not None and self._pages.get(session, ("", None))[1] == token

    def cancel(self, session: str) -> bool:
        """Stop a session's run in flight at its next token (the Stop button, a new run of the same session)."""
        with self._runs_lock:
            flag = self._runs.pop(session, None)
        if flag is not None:
            flag.set()
        return flag is not None

    def preference(self, task: str, weights: Sequence[float]) -> list[float]:
        """Slider values (any non-negative weights) → μ on the simplex (raises ValueError with a message for
        all-zero sliders)."""
        return normalize_weights(
            list(weights), len(get_task(task).objectives)
        )  # names a non-number, NaN, negative or all-zero slider

    def engine(self, task: str) -> Engine:
        """The task's engine, loaded on the compute thread the first time."""
        name = get_task(task).name
        if name not in self._engines:
            self.run(self._load, name)
        return self._engines[name]

    def _load(self, name: str) -> None:
        if name not in self._engines:  # a second request may have queued the same load
            self._engines[name] = Engine(name, base=self.base, device=self._device, dtype=self.dtype)

    def validate(
        self,
        task: str,
        prompt: str,
        weights: Sequence[float],
        methods: Sequence[str],
        *,
        max_new_tokens: int = 48,
        temperature: float = 1.0,
        top_p: float = 0.9,
        seed: int = 0,
        greedy: bool = False,
        strength: float = 1.0,
    ) -> Request:
        """Check a request: a :class:`Request`, or ValueError naming the problem and the fix."""
        get_task(task)
        notices = []
        prompt = clean_text(prompt or "").strip()
        if not prompt:
            raise ValueError("the prompt is empty; type a request (or paste an article for the summary task)")
        if not methods:
            raise ValueError("no method selected; tick at least one method to compare")
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; use some of {list(METHODS)}")
        if len(methods) > MAX_METHODS:
            notices.append(f"showing the first {MAX_METHODS} of the {len(methods)} methods ticked")
            methods = list(methods)[:MAX_METHODS]
        if not (isinstance(seed, (int, float)) and math.isfinite(seed) and 0 <= seed < 2**31):
            raise ValueError(f"seed {seed} is out of range; use a whole number from 0 to 2147483647")
        if not (isinstance(max_new_tokens, (int, float)) and math.isfinite(max_new_tokens) and max_new_tokens >= 1):
            raise ValueError(
                f"max new tokens {max_new_tokens} is out of range; use a whole number from 1 to {MAX_NEW_TOKENS}"
            )
        if max_new_tokens > MAX_NEW_TOKENS:
            notices.append(f"max new tokens capped at {MAX_NEW_TOKENS} (asked {int(max_new_tokens)})")
        if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0 <= strength <= MAX_STRENGTH):
            raise ValueError(f"guidance strength {strength} is out of range; use a number from 0 to {MAX_STRENGTH}")
        weights = self.preference(task, weights)
        sampling = SamplingConfig(
            max_new_tokens=int(min(max_new_tokens, MAX_NEW_TOKENS)), temperature=temperature, top_p=top_p, greedy=greedy
        )
        check_prompt(
            self.tokenizer(), get_task(task), prompt, base=self.base, max_new_tokens=sampling.max_new_tokens
        )  # before any model loads
        return Request(
            get_task(task).name, prompt, weights, list(methods), sampling, int(seed), float(strength), notices
        )

    def stream(
        self,
        task: str,
        prompt: str,
        weights: Sequence[float],
        methods: Sequence[str],
        *,
        session: str | None = None,
        **settings,
    ) -> Iterator[tuple[list[Reply], list[str]]]:
        """Generate with each method in turn for the sliders' preference, yielding (replies, notices) after
        every new token; a finished reply carries its scores (or its error). Validation errors raise
        ValueError before anything is yielded (``settings``: see :meth:`validate`). Each method merges and
        decodes on the compute thread; a consumer that stops reading cancels the decoding at the next token,
        and so does a newer run of the same ``session`` (a slider let go mid-run) or :meth:`cancel`."""
        req = self.validate(task, prompt, weights, methods, **settings)
        cancelled = threading.Event()
        if session is not None:
            with self._runs_lock:
                previous, self._runs[session] = self._runs.get(session), cancelled
            if previous is not None:
                previous.set()  # the session's older run stops at its next token: it never delays this one
        try:
            engine = self.engine(req.task)
            replies = [Reply(m, METHODS[m].label, "", {}, [], done=False) for m in req.methods]
            for reply in replies:
                yield from self._stream_one(engine, req, reply, replies, cancelled, session)
                if cancelled.is_set():  # stopped: the methods not yet run are marked, and nothing more is decoded
                    for rest in replies:
                        if not rest.done:
                            rest.text, rest.error, rest.done = "", "cancelled", True
                    yield replies, req.notices
                    return
        finally:
            cancelled.set()  # a closed generator (the user left) stops the running decode
            if session is not None:
                with self._runs_lock:
                    if self._runs.get(session) is cancelled:
                        del self._runs[session]

    def _stream_one(
        self,
        engine: Engine,
        req: Request,
        reply: Reply,
        replies: list[Reply],
        cancelled: threading.Event,
        session: str | None = None,
    ):
        events: queue.Queue = queue.Queue()

        def on_token(ids: list[int]) -> None:
            if cancelled.is_set():
                raise _Cancelled
            events.put(ids[0])

        def work() -> None:  # on the compute thread: merge, decode, score
            if session is not None:
                with self._runs_lock:
                    self._working[session] = self._working.get(session, 0) + 1
            try:
                if cancelled.is_set():  # the user left while this request waited for the compute thread
                    raise _Cancelled
                gen = engine.generate(
                    reply.method,
                    req.weights,
                    [req.prompt],
                    req.sampling,
                    strength=req.strength,
                    seed=req.seed,
                    on_token=on_token,
                )[0]
                coefficients = engine.current.coefficients if METHODS[reply.method].policy.shows_coefficients else []
                try:
                    scores, error = (
                        {k: v[0] for k, v in score_all(engine.task.objectives, [req.prompt], [gen.text]).items()},
                        "",
                    )
                except Exception as err:  # the reply stays; only its scores are missing
                    log.exception("scoring failed")
                    scores, error = {}, f"scoring failed: {type(err).__name__}: {err}"
                events.put(("done", gen, coefficients, scores, error))
            except _Cancelled:
                events.put(("error", "cancelled"))
            except CheckpointError as err:
                events.put(("error", str(err)))
            except Exception as err:  # one failing method must not take the others' replies with it
                log.exception("method %s failed", reply.method)
                events.put(("error", f"{reply.method} failed: {type(err).__name__}: {err}"))
            finally:
                if session is not None:
                    with self._runs_lock:
                        self._working[session] -= 1
                        if not self._working[session]:
                            del self._working[session]

        self._compute.submit(work)
        ids: list[int] = []
        while True:
            event = events.get()
            if isinstance(event, int):
                if event >= 0 and not cancelled.is_set():  # a stopped run streams nothing more
                    ids.append(event)
                    reply.text = engine.policy.tokenizer.decode(ids, skip_special_tokens=True).strip()
                    yield replies, req.notices
                continue
            if cancelled.is_set():  # stopped while finishing: the reply counts as cancelled, whatever the decode got to
                reply.text, reply.error = "", "cancelled"
            elif event[0] == "done":
                _, gen, reply.coefficients, reply.scores, reply.error = event
                reply.text = gen.text
            else:
                reply.text, reply.error = "", event[1]
            reply.done = True
            if not cancelled.is_set():  # the caller yields the stopped run's last state once, in stream()
                yield replies, req.notices
            return

    def generate(
        self, task: str, prompt: str, weights: Sequence[float], methods: Sequence[str], **kwargs
    ) -> tuple[list[Reply], list[str]]:
        """:meth:`stream` to the end: (replies, notices)."""
        last = None
        for last in self.stream(task, prompt, weights, methods, **kwargs):
            pass
        return last
