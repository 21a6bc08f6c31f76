"""mage — Gradio app: preference sliders, live merging, methods side by side, streamed.

Layout and event wiring only; all logic lives in :mod:`mage.service` (plain values in and out).
Run: ``python app.py [--host 127.0.0.1] [--port 7860] [--device auto] [--dtype float32]``. Gradio's own
``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` (what a Hugging Face Space sets) are the defaults of
``--host`` / ``--port``; ``MAGE_DEVICE`` / ``MAGE_DTYPE`` those of ``--device`` / ``--dtype``.

The service holds one engine per task (models loaded once, read-only between requests); every
request merges for its own preference and decodes on the service's one compute thread, one request
at a time, so sessions never see each other's merges. What belongs to a session (its live sample points) is in
``gr.State``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import gradio as gr

from mage.limits import BODY_BYTES
from mage.models import DTYPES
from mage.methods import method_labels
from mage.service import MAX_METHODS, MAX_NEW_TOKENS, MAX_STRENGTH, Service
from mage.tasks import TASKS


def settings(argv: list[str] | None = None) -> argparse.Namespace:
    """Where and how the app serves: command-line flags over environment variables over local defaults."""
    parser = argparse.ArgumentParser(description="mage Gradio app")
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1",
        help="default: $GRADIO_SERVER_NAME, else 127.0.0.1 (this machine only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=os.environ.get("GRADIO_SERVER_PORT") or 7860,
        help="default: $GRADIO_SERVER_PORT, else 7860",
    )
    parser.add_argument(
        "--device",
        default=os.environ.get("MAGE_DEVICE") or "auto",
        help="auto (a GPU when present), cpu, cuda or cuda:N; default: $MAGE_DEVICE, else auto",
    )
    parser.add_argument(
        "--dtype",
        default=os.environ.get("MAGE_DTYPE") or "float32",
        choices=list(DTYPES),
        help="the base model's weights; default: $MAGE_DTYPE, else float32",
    )
    return parser.parse_args(argv)


SETTINGS = settings(None if __name__ == "__main__" else [])  # imported (tests, a Space's runner): the environment alone
SERVICE = Service(
    base=os.environ.get("MAGE_BASE", "smollm2-135m-instruct"), device=SETTINGS.device, dtype=SETTINGS.dtype
)
# slider slots on the page, hidden beyond the shown task's objectives: room for tasks registered after import
MAX_OBJECTIVES = max(6, *(len(t.objectives) for t in TASKS.values()))
SLOTS = MAX_METHODS  # methods shown side by side
SETTLE_S = 0.5  # after a stopped run's decode ends, how long its event's last message may take to reach the page
LIVE_POINTS = 24  # live samples a session keeps on its plot
# at most one streamed message per this many seconds (and one whenever a reply finishes): a fast model's
# per-token messages would pile up in the browser faster than it draws them, and a stopped run's backlog would
# still be drawn after the page moved on
STREAM_EVERY_S = 0.1
# requests handled at once: 1 suits a 2-core CPU Space (the service decodes one request at a time on its
# compute thread anyway); more lets sessions stream side by side, and lets the tests race sessions
CONCURRENCY = int(os.environ.get("MAGE_CONCURRENCY", "1"))
# sessions whose state (live stars, component updates) the server keeps; the oldest beyond it are dropped, so memory
# levels off however many fresh sessions arrive (gradio's default keeps 10,000)
SESSIONS = int(os.environ.get("MAGE_SESSIONS", "128"))


def _names(task: str) -> list[str]:
    return SERVICE.objectives(task)


def switch_task(task: str, request: gr.Request = None):
    """A new task: its sliders, grid points, examples, strength and reply length; this session's run in
    flight stops, and the old task's prompt, replies and samples are cleared (nothing of one task stays beside the
    other)."""
    if request is not None:
        SERVICE.show(
            request.session_hash, task
        )  # its run stops, and a run of the old task starting later draws nothing
    names = _names(task)
    if len(names) > MAX_OBJECTIVES:
        raise gr.Error(
            f"task {task!r} has {len(names)} objectives but the page has {MAX_OBJECTIVES} sliders; fix: register it "
            "before app.py is imported (the page makes room for every registered task)"
        )
    sliders = [
        gr.update(visible=i < len(names), label=names[i] if i < len(names) else "", value=1.0)
        for i in range(MAX_OBJECTIVES)
    ]
    return [
        *sliders,
        gr.update(choices=[label for label, _ in SERVICE.cached_preferences(task)], value=None),
        gr.update(samples=[[e] for e in TASKS[task].demo_prompts()]),
        [],
        gr.update(value=SERVICE.default_strength(task)),
        gr.update(value=TASKS[task].max_new_tokens),
        "",
        "",
        *[gr.update(visible=False, value=None)] * (3 * SLOTS),
    ]


def clear_page(request: gr.Request = None):
    """The old task's prompt, status and replies, cleared again once its stopped run has settled: the service
    waits until the run's decode has stopped, and a moment more for the stopped event's last message to reach
    the page, so nothing of the old run can land after this."""
    if request is not None:
        SERVICE.settle(request.session_hash)
        time.sleep(SETTLE_S)
    return ["", "", *[gr.update(visible=False, value=None)] * (3 * SLOTS)]


def registered_choices():
    """The task and method menus, read from the tables at page load: a task or method registered after import
    (a preset, a plugin) is offered without rebuilding the app."""
    return (
        gr.update(choices=list(TASKS)),
        gr.update(choices=[(label, name) for name, label in method_labels().items()]),
    )


def show_weights(task: str, *sliders: float) -> str:
    names = _names(task)
    try:
        weights = SERVICE.preference(task, sliders[: len(names)])
    except ValueError:
        return "**All sliders are at zero** — raise at least one objective."
    return "Preference μ (normalised): " + ", ".join(f"**{n}** {w:.2f}" for n, w in zip(names, weights))


def pareto(task: str, live: list, axes: list, methods: list | None, *sliders: float):
    return SERVICE.pareto_figure(task, sliders[: len(_names(task))], live or [], axes or (0, 1), methods=methods)


def axis_choices(task: str):
    """The plot-axes radio for a task: the objective pairs (shown when there are three objectives)."""
    pairs = SERVICE.axis_pairs(task)
    return gr.update(choices=[label for label, _ in pairs], value=pairs[0][0], visible=len(pairs) > 1)


def choose_axes(task: str, label: str) -> list:
    return list(dict(SERVICE.axis_pairs(task)).get(label, (0, 1)))


def set_from_grid(task: str, label: str | None):
    """A cached grid point chosen → the sliders take its μ (gr.Plot has no click event)."""
    chosen = dict(SERVICE.cached_preferences(task)).get(label)
    if chosen is None:
        return [gr.skip()] * MAX_OBJECTIVES
    return [gr.update(value=chosen[i]) if i < len(chosen) else gr.skip() for i in range(MAX_OBJECTIVES)]


def score_bars(names: list[str], scores: dict[str, float]) -> str:
    """One bar per objective, always in the task's order (a label component would sort them by value)."""
    rows = []
    for name in names:
        value = scores.get(name)
        width = 0.0 if value is None else max(0.0, min(1.0, value)) * 100
        shown = "—" if value is None else f"{value:.3f}"
        rows.append(
            f'<div class="score-row"><span class="score-name">{name}</span><span class="score-track"><span '
            'class="score-fill" '
            f'style="width:{width:.1f}%"></span></span><span class="score-value">{shown}</span></div>'
        )
    return "".join(rows)


def _slot_updates(task: str, replies) -> list:
    out = []
    for slot in range(SLOTS):
        if slot >= len(replies):
            out += [gr.update(visible=False)] * 3
            continue
        r = replies[slot]
        head = (
            f"### {r.label}"
            + ("" if r.done else " …")
            + (f"\nλ = ({', '.join(f'{c:+.2f}' for c in r.coefficients)})" if r.coefficients else "")
        )
        head += ("\n\n" + " · ".join(f"{k} **{v:.3f}**" for k, v in r.scores.items())) if r.scores else ""
        out += [
            gr.update(value=head, visible=True),
            gr.update(value=r.error or r.text, visible=True),
            gr.update(value=score_bars(_names(task), r.scores) if r.scores else "", visible=bool(r.scores)),
        ]
    return out


def run(
    task: str,
    prompt: str,
    methods: list[str],
    strength: float,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    greedy: bool,
    live: list,
    axes: list,
    *sliders: float,
    request: gr.Request = None,
):
    """Stream every chosen method's reply; at the end add the scores to this session's plot points. A run of
    the same session still in flight stops at its next token (a slider let go mid-run supersedes it)."""
    names = _names(task)
    settings = dict(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, greedy=greedy, strength=strength
    )
    try:
        SERVICE.validate(
            task, prompt, sliders[: len(names)], methods, **settings
        )  # bad input: a clear message, nothing started, the plot kept
    except ValueError as err:
        gr.Warning(str(err))
        yield [gr.skip(), f"**Not started:** {err}", gr.skip(), *[gr.skip()] * (3 * SLOTS)]
        return
    session = request.session_hash if request else None
    token = (
        SERVICE.claim(session, task) if session else None
    )  # this run owns the page now; an older run of the session draws no more

    def owns() -> bool:
        return session is None or SERVICE.owns(session, token)

    if not owns():  # a run of a task the page no longer shows (clicked just before a task switch): nothing is drawn
        yield [gr.skip()] * (3 + 3 * SLOTS)
        return
    if not SERVICE.loaded(task):
        yield [gr.skip(), SERVICE.load_status(task), gr.skip(), *[gr.skip()] * (3 * SLOTS)]
    replies, notices = [], []
    sent, finished = 0.0, 0
    try:
        for replies, notices in SERVICE.stream(
            task, prompt, sliders[: len(names)], methods, session=session, **settings
        ):
            if any(r.error == "cancelled" for r in replies) or not owns():
                # stopped or superseded: whoever did it (Stop, a newer run, a task switch) owns the
                # page now; nothing more is drawn
                break
            done = sum(r.done for r in replies)
            if done == finished and time.monotonic() - sent < STREAM_EVERY_S:
                continue  # coalesced into the next message
            sent, finished = time.monotonic(), done
            running = next((r.label for r in replies if not r.done), None)
            yield [
                gr.skip(),
                f"Generating with **{running}**…" if running else "",
                gr.skip(),
                *_slot_updates(task, replies),
            ]
    except Exception as err:  # e.g. a model that cannot load: say what happened instead of a bare "Error"
        raise gr.Error(f"generation failed: {type(err).__name__}: {err}") from None
    for notice in notices:
        gr.Info(notice)
    if any(r.error == "cancelled" for r in replies) or not owns():
        return  # stopped (Stop, a newer run of this session, a task switch): whoever stopped it owns the page now
    weights = SERVICE.preference(task, sliders[: len(names)])
    live = ([*(live or []), *[r.point(task, weights, prompt) for r in replies if r.scores]])[-LIVE_POINTS:]
    final = [pareto(task, live, axes, methods, *sliders), "  \n".join(notices), live, *_slot_updates(task, replies)]
    if owns():  # checked after the plot is drawn, right before it is sent: a switch meanwhile wins
        yield final


def on_release(
    task: str,
    prompt: str,
    methods: list[str],
    strength: float,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    greedy: bool,
    live: list,
    axes: list,
    *sliders: float,
    request: gr.Request = None,
):
    """A slider let go: with a prompt, generate again for the new μ (the run in flight is cancelled);
    without one, only redraw the plot for the new preference."""
    if not (prompt or "").strip():
        yield [pareto(task, live, axes, methods, *sliders), gr.skip(), gr.skip(), *[gr.skip()] * (3 * SLOTS)]
        return
    yield from run(
        task,
        prompt,
        methods,
        strength,
        max_new_tokens,
        temperature,
        top_p,
        seed,
        greedy,
        live,
        axes,
        *sliders,
        request=request,
    )


def with_request(handler):
    """``handler`` as gradio must see it to pass the caller's ``gr.Request``: gradio injects a request only
    into a parameter *before* any ``*args`` (it never reaches ``run``'s keyword-only ``request``, and without it
    the service cannot tell one session's runs apart: a newer run would not supersede an older one, and a task
    switch would not stop it)."""

    def event(request: gr.Request, *values):
        yield from handler(*values, request=request)

    event.__name__ = event.__qualname__ = handler.__name__
    event.__doc__ = handler.__doc__
    return event


def stop(request: gr.Request = None) -> str:
    """The Stop button: this session's run ends at its next token."""
    return "Stopped." if request is not None and SERVICE.cancel(request.session_hash) else ""


def api_generate(
    task: str,
    prompt: str,
    weights: list[float],
    methods: list[str],
    strength: float = 1.0,
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    top_p: float = 0.9,
    seed: int = 0,
    greedy: bool = False,
) -> dict:
    """Generate with each method for a preference; plain values: {"preference", "replies": [{method, label, text,
    scores, coefficients, error, done}], "notices"}. Bad input is refused with a message naming the fix."""
    try:
        replies, notices = SERVICE.generate(
            task,
            prompt,
            weights,
            methods,
            strength=strength,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            greedy=greedy,
        )
        return {
            "preference": SERVICE.preference(task, weights),
            "replies": [r.plain() for r in replies],
            "notices": notices,
        }
    except ValueError as err:
        raise gr.Error(str(err)) from None
    except (
        Exception
    ) as err:  # a server fault: logged with its traceback, and named to the caller instead of a bare "error"
        logging.getLogger("mage.app").exception("api generate failed")
        raise gr.Error(f"generation failed: {type(err).__name__}: {err}") from None


CSS = """.score-row{display:flex;align-items:center;gap:6px;font-size:0.85em}.score-name{width:6.5em}
.score-track{flex:1;height:0.7em;background:#eee;border-radius:3px}
.score-fill{display:block;height:100%;background:#4a7bd0;border-radius:3px}
.score-value{width:3.2em;text-align:right;font-variant-numeric:tabular-nums}"""

with gr.Blocks(title="mage — controllable multi-objective generation") as demo:
    gr.Markdown(
        "# mage\nDrag the sliders to say how much each objective matters; each method merges its LoRA models live for "
        "that preference "
        "and the replies stream side by side."
    )
    gr.Markdown(
        f"Running on **{SERVICE.device()}** in **{SERVICE.dtype}**."
        + (f" Note: {SERVICE.precision_note()}." if SERVICE.precision_note() else ""),
        elem_id="device",
    )
    load_md = gr.Markdown("", elem_id="load-status")
    load_timer = gr.Timer(2.0)
    live = gr.State(
        [], time_to_live=3600
    )  # this session's live sample points on the plot (freed an hour after the session ends)
    axes = gr.State([0, 1])  # the plot's projection (objective indices)
    with gr.Row():
        with gr.Column(scale=1):
            task = gr.Dropdown(list(TASKS), value="assistant", label="Task", elem_id="task")
            first = TASKS["assistant"].objectives
            sliders = [
                gr.Slider(
                    0,
                    1,
                    value=1.0,
                    step=0.05,
                    label=first[i] if i < len(first) else "",
                    visible=i < len(first),
                    elem_id=f"slider-{i}",
                )
                for i in range(MAX_OBJECTIVES)
            ]
            weights_md = gr.Markdown(show_weights("assistant", *[1.0] * MAX_OBJECTIVES), elem_id="weights")
            grid = gr.Dropdown(
                [label for label, _ in SERVICE.cached_preferences("assistant")],
                value=None,
                label="Or set the sliders to a point of the plot",
                elem_id="grid-point",
            )
            methods = gr.CheckboxGroup(
                [(label, name) for name, label in method_labels().items()],
                value=["mage-i", "bone", "rs"],
                label="Methods (up to 4 side by side)",
                elem_id="methods",
            )
            with gr.Accordion("Generation settings", open=False):
                strength = gr.Slider(
                    0,
                    MAX_STRENGTH,
                    value=SERVICE.default_strength("assistant"),
                    step=0.1,
                    label="Guidance strength w (MAGE, ensembles, base + guidance; default: chosen on the validation "
                    "split)",
                )
                max_new_tokens = gr.Slider(
                    1,
                    MAX_NEW_TOKENS,
                    value=TASKS["assistant"].max_new_tokens,
                    step=1,
                    label="Max new tokens (default: the task's cap)",
                    elem_id="max-new-tokens",
                )
                temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
                top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
                seed = gr.Number(0, precision=0, label="Seed", minimum=0)
                greedy = gr.Checkbox(False, label="Greedy")
        with gr.Column(scale=2):
            prompt = gr.Textbox(
                lines=4,
                label="Prompt",
                placeholder="Ask something, or paste an article for the summary task",
                elem_id="prompt",
            )
            examples = gr.Dataset(
                components=[prompt], samples=[[e] for e in TASKS["assistant"].demo_prompts()], label="Examples"
            )
            with gr.Row():
                button = gr.Button("Generate", variant="primary", elem_id="generate")
                stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
            status = gr.Markdown("", elem_id="status")
            with gr.Row():
                slots = []
                for i in range(SLOTS):
                    with gr.Column(min_width=200):
                        slots += [
                            gr.Markdown(visible=False, elem_id=f"head-{i}"),
                            gr.Textbox(visible=False, lines=6, show_label=False, elem_id=f"text-{i}"),
                            gr.HTML(visible=False, elem_id=f"scores-{i}"),
                        ]
            first_pairs = SERVICE.axis_pairs("assistant")
            with gr.Row():
                axes_radio = gr.Radio(
                    [label for label, _ in first_pairs],
                    value=first_pairs[0][0],
                    label="Plot axes",
                    visible=len(first_pairs) > 1,
                    elem_id="plot-axes",
                )
                clear = gr.Button("Clear my samples", size="sm", elem_id="clear-samples")
            plot = gr.Plot(
                pareto("assistant", [], [0, 1], ["mage-i", "bone", "rs"], *[1.0] * MAX_OBJECTIVES),
                label="Where replies land: each method's average per preference (ring = your preference); stars = your "
                "samples (hover: μ and prompt)",
                elem_id="pareto",
            )
    gr.api(api_generate, api_name="generate", concurrency_limit=CONCURRENCY, concurrency_id="generate")

    def tick(task_name: str):
        text = SERVICE.load_status(task_name)
        return text, gr.Timer(active=not SERVICE.loaded(task_name) and "failed" not in text)

    demo.load(registered_choices, None, [task, methods], api_name=False, queue=False)
    load_timer.tick(tick, task, [load_md, load_timer], api_name=False, queue=False)
    examples.click(lambda sample: sample[0], examples, prompt, api_name=False)
    redraw = [task, live, axes, methods, *sliders]
    axes_radio.input(choose_axes, [task, axes_radio], axes, api_name=False).then(pareto, redraw, plot, api_name=False)
    grid.change(set_from_grid, [task, grid], sliders, api_name="grid_point").then(
        pareto, redraw, plot, api_name="pareto"
    )
    methods.change(pareto, redraw, plot, api_name=False)
    clear.click(lambda: [], None, live, api_name=False).then(pareto, redraw, plot, api_name=False)
    inputs = [task, prompt, methods, strength, max_new_tokens, temperature, top_p, seed, greedy, live, axes, *sliders]
    outputs = [plot, status, live, *slots]
    running = [
        button.click(
            with_request(run), inputs, outputs, api_name=False, concurrency_limit=CONCURRENCY, concurrency_id="generate"
        ),
        prompt.submit(
            with_request(run), inputs, outputs, api_name=False, concurrency_limit=CONCURRENCY, concurrency_id="generate"
        ),
    ]
    released = []
    for i, s in enumerate(sliders):  # one named endpoint per operation; the other sliders' copies stay UI-only
        s.change(show_weights, [task, *sliders], weights_md, api_name="weights" if i == 0 else False)
        # letting a slider go merges for the new μ and generates again: the session's run in flight stops at
        # its next token
        # (the service supersedes it), gradio cancels its event, and repeated releases of one slider keep only the last
        released.append(
            s.release(
                with_request(on_release),
                inputs,
                outputs,
                api_name=False,
                cancels=running,
                trigger_mode="always_last",
                concurrency_limit=CONCURRENCY,
                concurrency_id="generate",
            )
        )
    for i, s in enumerate(sliders):  # ... including a run started by letting go of another slider
        s.release(None, None, None, cancels=[e for j, e in enumerate(released) if j != i], api_name=False)
    stop_button.click(stop, None, status, cancels=[*running, *released], api_name=False, queue=False)
    task.change(
        switch_task,
        task,
        [*sliders, grid, examples, live, strength, max_new_tokens, prompt, status, *slots],
        cancels=[*running, *released],
        api_name="task_objectives",
    ).then(clear_page, None, [prompt, status, *slots], api_name=False, concurrency_limit=None).then(
        axis_choices, task, axes_radio, api_name=False
    ).then(lambda: [0, 1], None, axes, api_name=False).then(
        show_weights, [task, *sliders], weights_md, api_name=False
    ).then(pareto, redraw, plot, api_name=False).then(tick, task, [load_md, load_timer], api_name=False)

demo.queue(max_size=16, default_concurrency_limit=1)  # a bounded queue: the 17th waiting request is refused

if __name__ == "__main__":
    SERVICE.preload("assistant")  # the default task's models load while the page is first opened (status shown)
    demo.launch(
        css=CSS,
        server_name=SETTINGS.host,
        server_port=SETTINGS.port,
        state_session_capacity=SESSIONS,
        app_kwargs={"max_body_size": BODY_BYTES},
    )  # a 50 MB paste is refused at the door
