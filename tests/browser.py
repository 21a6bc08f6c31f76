"""Drive the running app in a real browser (Debian's chromium through Playwright; never
``playwright install``). Used by ``tests/test_app.py``; also a tool for screenshots of a running app:

    python -m tests.browser --url http://127.0.0.1:7860 --task assistant --out assets/screenshots
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium is not installed; fix: apt-get install -y chromium (make test does it)")
    return path


def drive(
    url: str,
    out: Path,
    *,
    task: str = "summary",
    prompt: str = "Storms hit the coast overnight and thousands lost power.",
    slider: float = 0.2,
    first_objective: str = "faithful",
    timeout_ms: int = 180_000,
) -> dict:
    """Choose the task, move the first slider, generate, wait for every side-by-side reply to finish;
    let go of a slider at a new position and wait for the replies generated for the new μ;
    screenshots at desktop and narrow widths. Returns what the page showed."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    seen: dict = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.goto(url, wait_until="load", timeout=timeout_ms)
        page.wait_for_selector("#generate", timeout=timeout_ms)
        if task != "assistant":
            box = page.locator("#task input")
            box.click()
            page.get_by_role("option", name=task).click()
            page.wait_for_function(
                "(o) => document.querySelector('#weights').innerText.includes(o)", arg=first_objective, timeout=30_000
            )
            page.wait_for_function(
                "(t) => document.querySelector('#pareto').innerText.includes(t + ':')", arg=task, timeout=30_000
            )  # the new task's plot
        grid = page.locator("#grid-point input")
        if grid.count():  # a cached grid point sets the sliders
            grid.click()
            options = page.get_by_role("option")
            if options.count():
                label = options.first.inner_text()
                options.first.click()
                value = float(label.split(",")[0].split()[-1])
                page.wait_for_function(
                    "(v) => Math.abs(parseFloat(document.querySelector('#slider-0 input[type=number]').value) - v) < "
                    "1e-6",
                    arg=value,
                    timeout=30_000,
                )
                seen["grid_point"], seen["slider_after_grid"] = (
                    label,
                    float(page.locator("#slider-0 input[type=number]").input_value()),
                )

        def lam_line() -> str:  # Bone Soup's coefficients λ = B⁻¹μ as shown in its heading
            return next((line for line in page.locator("#head-1").inner_text().splitlines() if "λ" in line), "")

        def let_go_at(
            fraction: float,
        ) -> None:  # a click on the slider's track: the value jumps there and the slider is released
            track = page.locator("#slider-0 input[type=range]").bounding_box()
            page.mouse.click(track["x"] + fraction * track["width"], track["y"] + track["height"] / 2)

        def preference_line() -> str:  # the normalised μ as shown (without gradio's progress timer)
            return next(
                (line for line in page.locator("#weights").inner_text().splitlines() if "Preference" in line), ""
            )

        if "grid_point" in seen:  # the grid point's μ is shown before the slider moves on
            shown = seen["grid_point"].split(",")[0]  # e.g. "faithful 0.00"
            page.wait_for_function(
                "(s) => document.querySelector('#weights').innerText.includes(s)", arg=shown, timeout=timeout_ms
            )
        before = preference_line()
        let_go_at(slider)
        page.wait_for_function(
            "(b) => { const t = document.querySelector('#weights').innerText; const l = t.split('\\n').find(x => "
            "x.includes('Preference'));"
            " return l && l !== b && !t.includes('processing'); }",
            arg=before,
            timeout=timeout_ms,
        )
        seen["weights_before"], seen["weights"] = before, preference_line()
        plot_before = page.locator("#pareto").inner_html()
        page.locator("#prompt textarea").fill(prompt)
        page.locator("#generate").click()
        done = (
            "(b) => { const h = [...document.querySelectorAll('[id^=head-]')].map(e => e.innerText); const l = (h[1] "
            "|| '').split('\\n').find(x => x.includes('λ'));"
            " return h.length >= 3 && l && l !== b && !h.some(t => t.includes('…')) && "
            "document.querySelector('#pareto').innerHTML.includes('your sample'); }"
        )
        page.wait_for_function(done, arg="", timeout=timeout_ms)
        seen["heads"] = [h.inner_text() for h in page.locator("[id^=head-] h3").all()]
        seen["texts"] = [t.input_value() for t in page.locator("[id^=text-] textarea").all() if t.is_visible()]
        seen["plot_changed"] = page.locator("#pareto").inner_html() != plot_before
        seen["live_in_plot"] = "your sample" in page.locator("#pareto").inner_html()
        # letting go of the slider elsewhere generates again for the new μ: Bone Soup's λ changes
        seen["lambda_before_release"] = lam_line()
        plot_before_release = page.locator("#pareto").inner_html()
        let_go_at(1.0 - slider)
        page.wait_for_function(done, arg=seen["lambda_before_release"], timeout=timeout_ms)
        seen["lambda_after_release"] = lam_line()
        # the new replies' scores reach the plot as more live points: wait until it changed and then settled
        page.wait_for_function(
            "(b) => document.querySelector('#pareto').innerHTML !== b", arg=plot_before_release, timeout=60_000
        )
        settled, last = 0, ""
        for _ in range(60):
            page.wait_for_timeout(1000)
            html = page.locator("#pareto").inner_html()
            settled, last = (settled + 1 if html == last else 0), html
            if settled >= 2:
                break
        page.screenshot(path=str(out / "app-desktop.png"), full_page=True)
        page.set_viewport_size({"width": 420, "height": 1100})
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / "app-narrow.png"), full_page=True)
        browser.close()
    seen["screenshots"] = [str(out / "app-desktop.png"), str(out / "app-narrow.png")]
    return seen


STARS = (
    "() => { const p = document.querySelector('#pareto .js-plotly-plot'); return p && p.data ? p.data.filter(t => "
    "(t.name || '').startsWith('your sample'))"
    ".reduce((n, t) => n + t.x.length, 0) : -1; }"
)
HEADS_DONE = (
    "(n) => { const h = [...document.querySelectorAll('[id^=head-] h3')].map(e => e.innerText); "
    "return h.length >= n && !h.some(t => t.includes('…')); }"
)


# The page's view of the server: every message of gradio's event stream (queue/data) and every join and cancel it
# sends, timed in ms since load — what shows, when a race leaves something on the page, which event drew it last.
RECORD_MESSAGES = r"""
(() => {
  const log = (window.__mage_messages = []);
  const brief = (data) => {
    const texts = [];
    const walk = (x) => {
      if (typeof x === "string") texts.push(x.slice(0, 40));
      else if (x && typeof x === "object") Object.values(x).forEach(walk);
    };
    walk(data);
    return texts.filter((t) => t.trim()).slice(0, 6);
  };
  const original = window.fetch;
  window.fetch = async (...args) => {
    const url = String((args[0] && args[0].url) || args[0]);
    const body = args[1] && typeof args[1].body === "string" ? args[1].body : "";
    if (url.includes("/queue/join") || url.includes("/cancel")) {
      let fn = null;
      try { fn = JSON.parse(body).fn_index; } catch (e) {}
      const response = await original(...args);
      response.clone().json().then((r) => log.push({ t: performance.now(), kind: url.includes("cancel") ? "cancel"
        : "join", fn_index: fn, event_id: r && r.event_id, body: body.slice(0, 120) })).catch(() => {});
      return response;
    }
    const response = await original(...args);
    if (!url.includes("/queue/data") || !response.body) return response;
    const [mine, theirs] = response.body.tee();
    (async () => {
      const reader = mine.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          try {
            const m = JSON.parse(chunk.replace(/^data: ?/, ""));
            log.push({ t: performance.now(), kind: m.msg, event_id: m.event_id, success: m.success,
              texts: brief(m.output && m.output.data) });
          } catch (e) {}
        }
      }
    })();
    return new Response(theirs, { status: response.status, statusText: response.statusText,
      headers: response.headers });
  };
})();
"""


def _messages(page) -> list[dict]:
    """What :data:`RECORD_MESSAGES` recorded so far (heartbeats left out)."""
    return [m for m in page.evaluate("() => window.__mage_messages || []") if m.get("kind") != "heartbeat"]


def runs(messages: list[dict]) -> list[dict]:
    """The generation runs in a message log, in the order they started: each event that streamed a
    "Generating with …" status, when it started and ended (ms since load), and whether its last message drew
    the plot (a run that finished) or not (a run that was stopped)."""
    events: dict[str, list[dict]] = {}
    for m in messages:
        if m.get("event_id") and m["kind"] != "join":
            events.setdefault(m["event_id"], []).append(m)
    found = []
    for event_id, ms in events.items():
        if any(t.startswith("Generating with") for m in ms for t in m.get("texts", [])):
            last = ms[-1]
            found.append(
                {
                    "event_id": event_id,
                    "start": round(ms[0]["t"]),
                    "end": round(last["t"]),
                    "completed": last["kind"] == "process_completed",
                    "plotted": any(t == "plotly" for t in last.get("texts", [])),
                }
            )
    return sorted(found, key=lambda r: r["start"])


def _choose_task(page, task: str, first_objective: str, timeout_ms: int) -> None:
    page.locator("#task input").click()
    page.get_by_role("option", name=task).click()
    page.wait_for_function(
        "(o) => document.querySelector('#weights').innerText.includes(o)", arg=first_objective, timeout=timeout_ms
    )
    # the plot is redrawn last in the switch's chain: wait for the new task's plot before reading it
    page.wait_for_function(
        "(t) => { const p = document.querySelector('#pareto .js-plotly-plot'); "
        "return p && p.layout && (p.layout.title.text || '').startsWith(t + ':'); }",
        arg=task,
        timeout=timeout_ms,
    )


def _set_number(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _shots(page, out: Path, stem: str) -> list[str]:
    paths = [str(out / f"{stem}-desktop.png"), str(out / f"{stem}-narrow.png")]
    page.screenshot(path=paths[0], full_page=True)
    page.set_viewport_size({"width": 420, "height": 1100})
    page.wait_for_timeout(400)
    page.screenshot(path=paths[1], full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1100})
    return paths


def interrupt(
    url: str,
    out: Path,
    *,
    prompt: str = "Storms hit the coast overnight and thousands lost power.",
    timeout_ms: int = 180_000,
) -> dict:
    """Interrupt runs as a user would: let go of a slider while a long run streams (the old run must stop and
    add nothing to the plot), then switch task while a run streams (nothing of the old task may stay)."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    seen: dict = {"screenshots": []}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        page.add_init_script(RECORD_MESSAGES)
        page.goto(url, wait_until="load", timeout=timeout_ms)
        page.wait_for_selector("#generate", timeout=timeout_ms)
        _choose_task(page, "summary", "faithful", timeout_ms)
        page.get_by_text("Generation settings").click()
        _set_number(page, "max-new-tokens", 256)  # long replies: the run is still streaming when the slider is let go
        page.locator("#prompt textarea").fill(prompt)
        seen["stars_before"] = page.evaluate(STARS)
        page.locator("#generate").click()
        page.wait_for_function(
            "() => document.querySelector('#status').innerText.includes('Generating')", timeout=timeout_ms
        )
        track = page.locator("#slider-0 input[type=range]").bounding_box()
        page.mouse.click(
            track["x"] + 0.2 * track["width"], track["y"] + track["height"] / 2
        )  # let go mid-run at a new μ
        seen["status_at_release"] = page.locator("#status").inner_text()
        page.wait_for_function(HEADS_DONE, arg=3, timeout=timeout_ms)
        page.wait_for_function(f"() => ({STARS})() >= 3", timeout=timeout_ms)
        page.wait_for_timeout(3000)  # anything the old run would still draw arrives by now
        seen["stars_after_release"] = page.evaluate(STARS)
        seen["weights_after_release"] = page.locator("#weights").inner_text()
        seen["screenshots"] += _shots(page, out, "release-mid-run")
        # switch task while a run streams
        page.locator("#generate").click()
        page.wait_for_function(
            "() => document.querySelector('#status').innerText.includes('Generating')", timeout=timeout_ms
        )
        switched_at = page.evaluate("() => performance.now()")
        _choose_task(page, "assistant", "helpful", timeout_ms)
        page.wait_for_timeout(3000)  # the cancelled run's outputs, if any were coming, would have arrived
        seen["after_switch"] = {
            "prompt": page.locator("#prompt textarea").input_value(),
            "visible_replies": sum(t.is_visible() for t in page.locator("[id^=text-] textarea").all()),
            "status": page.locator("#status").inner_text(),
            "plot_title": page.evaluate(
                "() => { const p = document.querySelector('#pareto .js-plotly-plot'); return p ? p.layout.title.text : "
                "''; }"
            ),
            "stars": page.evaluate(STARS),
            "sliders": [
                page.locator(f"#slider-{i} label").first.inner_text()
                for i in range(3)
                if page.locator(f"#slider-{i}").is_visible()
            ],
        }
        seen["screenshots"] += _shots(page, out, "task-switch-mid-run")
        seen["messages_since_switch"] = [{**m, "t": round(m["t"] - switched_at)} for m in _messages(page)][-40:]
        seen["runs"], seen["switched_at"] = runs(_messages(page)), round(switched_at)
        (out / "messages.json").write_text(json.dumps(_messages(page), indent=1))
        browser.close()
    return seen


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    parser.add_argument("--task", default="assistant")
    parser.add_argument("--prompt", default="Write a brutal roast of my friend who is always late.")
    parser.add_argument("--slider", type=float, default=0.2)
    parser.add_argument("--out", default="assets/screenshots")
    args = parser.parse_args()
    print(drive(args.url, Path(args.out), task=args.task, prompt=args.prompt, slider=args.slider))
