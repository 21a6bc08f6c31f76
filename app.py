"""mage — Gradio app: preference sliders, live merging, methods side by side.

Layout and event wiring only; all logic lives in :mod:`mage.service`.
Run: ``python app.py [--host 127.0.0.1] [--port 7860]``.
"""
from __future__ import annotations

import argparse
import os

import gradio as gr

from mage.service import METHOD_LABELS, Service
from mage.tasks import TASKS

SERVICE = Service(base=os.environ.get("MAGE_BASE", "smollm2-135m-instruct"))  # read-only after start; merges are per request under a lock
MAX_OBJECTIVES = max(len(t.objectives) for t in TASKS.values())
SLOTS = 4  # methods shown side by side
EXAMPLES = {
    "assistant": ["How do I lower my blood pressure?", "Write a brutal roast of my friend who is always late.", "Describe a cat's opinion of vacuum cleaners."],
    "summary": [TASKS["summary"].examples("test")[0].input, TASKS["summary"].examples("test")[1].input],
}


def slider_updates(task: str):
    names = SERVICE.objectives(task)
    return [gr.update(visible=i < len(names), label=names[i] if i < len(names) else "", value=1.0) for i in range(MAX_OBJECTIVES)]


def show_weights(task: str, *sliders: float) -> str:
    names = SERVICE.objectives(task)
    try:
        mu = SERVICE.preference(task, sliders[: len(names)])
    except ValueError:
        return "**All sliders are at zero** — raise at least one objective."
    return "Preference μ (normalised): " + ", ".join(f"**{n}** {w:.2f}" for n, w in zip(names, mu))


def pareto(task: str, *sliders: float):
    names = SERVICE.objectives(task)
    return SERVICE.pareto_figure(task, sliders[: len(names)])


def run(task: str, prompt: str, methods: list[str], strength: float, max_new_tokens: int, temperature: float, top_p: float, seed: int, greedy: bool, *sliders: float):
    names = SERVICE.objectives(task)
    try:
        replies, notices = SERVICE.generate(task, prompt, sliders[: len(names)], methods[:SLOTS], max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed, greedy=greedy, strength=strength)
    except ValueError as err:
        raise gr.Error(str(err)) from None
    for notice in notices:
        gr.Info(notice)
    outputs = [SERVICE.pareto_figure(task, sliders[: len(names)], replies)]
    for slot in range(SLOTS):
        if slot < len(replies):
            r = replies[slot]
            head = f"### {r.label}" + (f"\nλ = ({', '.join(f'{c:+.2f}' for c in r.coefficients)})" if r.coefficients else "")
            head += ("\n\n" + " · ".join(f"{k} **{v:.3f}**" for k, v in r.scores.items())) if r.scores else ""
            outputs += [gr.update(value=head, visible=True), gr.update(value=r.error or r.text, visible=True), gr.update(value={k: max(0.0, v) for k, v in r.scores.items()} or None, visible=True)]
        else:
            outputs += [gr.update(visible=False)] * 3
    return outputs


with gr.Blocks(title="mage — controllable multi-objective generation") as demo:
    gr.Markdown("# mage\nDrag the sliders to say how much each objective matters; every method merges its LoRA models live for that preference.")
    gr.Markdown(f"Running on **{SERVICE.device()}**.")
    with gr.Row():
        with gr.Column(scale=1):
            task = gr.Dropdown(list(TASKS), value="assistant", label="Task", elem_id="task")
            first = TASKS["assistant"].objectives
            sliders = [gr.Slider(0, 1, value=1.0, step=0.05, label=first[i] if i < len(first) else "", visible=i < len(first), elem_id=f"slider-{i}") for i in range(MAX_OBJECTIVES)]
            weights_md = gr.Markdown(show_weights("assistant", *[1.0] * MAX_OBJECTIVES), elem_id="weights")
            methods = gr.CheckboxGroup([(v, k) for k, v in METHOD_LABELS.items()], value=["mage-i", "bone", "rs"], label="Methods (up to 4 side by side)", elem_id="methods")
            with gr.Accordion("Generation settings", open=False):
                strength = gr.Slider(0, 5, value=1.0, step=0.1, label="Guidance strength w (MAGE, ensembles, base + guidance)")
                max_new_tokens = gr.Slider(1, 256, value=48, step=1, label="Max new tokens")
                temperature = gr.Slider(0.1, 2.0, value=1.0, step=0.05, label="Temperature")
                top_p = gr.Slider(0.05, 1.0, value=0.9, step=0.05, label="Top-p")
                seed = gr.Number(0, precision=0, label="Seed", minimum=0)
                greedy = gr.Checkbox(False, label="Greedy")
        with gr.Column(scale=2):
            prompt = gr.Textbox(lines=4, label="Prompt", placeholder="Ask something, or paste an article for the summary task", elem_id="prompt")
            gr.Examples([[e] for e in EXAMPLES["assistant"]], inputs=[prompt], label="Examples (assistant)")
            button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Row():
                slots = []
                for i in range(SLOTS):
                    with gr.Column(min_width=200):
                        slots += [gr.Markdown(visible=False, elem_id=f"head-{i}"), gr.Textbox(visible=False, lines=6, show_label=False, elem_id=f"text-{i}"),
                                  gr.Label(visible=False, label="Scores", elem_id=f"scores-{i}")]
            plot = gr.Plot(pareto("assistant", *[1.0] * MAX_OBJECTIVES), label="Pareto fronts (cached evaluation; ring = your preference, stars = these samples)", elem_id="pareto")

    task.change(slider_updates, task, sliders, api_name="task_objectives").then(pareto, [task, *sliders], plot, api_name=False)
    for s in sliders:
        s.change(show_weights, [task, *sliders], weights_md, api_name=False)
        s.release(pareto, [task, *sliders], plot, api_name=False)
    inputs = [task, prompt, methods, strength, max_new_tokens, temperature, top_p, seed, greedy, *sliders]
    button.click(run, inputs, [plot, *slots], api_name="generate", concurrency_limit=1)
    prompt.submit(run, inputs, [plot, *slots], api_name=False, concurrency_limit=1)

demo.queue(max_size=16, default_concurrency_limit=1)

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="mage Gradio app")
    parser.add_argument("--host", default=os.environ.get("MAGE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("MAGE_PORT", 7860)))
    args = parser.parse_args()
    demo.launch(server_name=args.host, server_port=args.port)
