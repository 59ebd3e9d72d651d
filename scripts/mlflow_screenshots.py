"""Screenshots of farm's MLflow UI for docs/mlflow.md (headless Chromium, DevTools protocol).

    chromium --headless=new --remote-debugging-port=9333 --window-size=1800,1000 about:blank &
    farm ui --output results --port 5077 &
    python scripts/mlflow_screenshots.py http://127.0.0.1:5077 EXPERIMENT_ID docs/img/NAME.png [METRIC ...]

Opens the experiment's runs table (workflowType=machine_learning, as `farm ui` prints it),
closes the assistant panel, shows the given metrics as columns, expands the parent runs and
saves a PNG. With ``--charts`` it saves the chart view instead, with ``--page`` another page
of the experiment (a run's artifacts). Needs aiohttp (installed with
ray[default]); nothing here is part of farm itself.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json

import aiohttp


class Page:
    """One browser tab: send a DevTools command, wait for its answer."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params: object) -> dict:
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.n:
                return msg.get("result", msg)

    async def js(self, expr: str) -> object:
        r = await self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        return r.get("result", {}).get("value")


def click(selector: str) -> str:
    return f"document.querySelectorAll({json.dumps(selector)}).forEach(e => e.click())"


def click_text(text: str) -> str:
    """Click the column chooser's entry with exactly this label."""
    return (f"[...document.querySelectorAll('span')].filter(e => e.children.length == 0 && "
            f"e.innerText == {json.dumps(text)}).forEach(e => e.click())")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("ui"), ap.add_argument("experiment"), ap.add_argument("png")
    ap.add_argument("metrics", nargs="*")
    ap.add_argument("--charts", action="store_true")
    ap.add_argument("--page", help="another page of the experiment, e.g. runs/RUN_ID/artifacts/heatmaps/asr.png")
    ap.add_argument("--devtools", default="http://127.0.0.1:9333")
    ap.add_argument("--wait", type=float, default=10.0, help="seconds for the page to load its data")
    args = ap.parse_args()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{args.devtools}/json") as r:
            tab = next(p for p in await r.json() if p["type"] == "page")
        async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            mode = "&compareRunsMode=CHART" if args.charts else ""
            where = f"{args.page}?" if args.page else "runs?"
            await page.call("Page.navigate", url=f"{args.ui}/#/experiments/{args.experiment}/{where}"
                                                 f"workflowType=machine_learning{mode}")
            await asyncio.sleep(args.wait)
            await page.js(click('[data-component-id="mlflow.assistant.chat_panel.close"]'))
            if args.metrics:
                await page.js(click('[data-testid="column-selection-dropdown"]'))
                await asyncio.sleep(2)
                for metric in args.metrics:
                    await page.js(click_text(metric))
                    await asyncio.sleep(0.3)
                await page.call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape",
                                windowsVirtualKeyCode=27)
            await page.js(click('[data-component-id$="runnamecellrenderer.tsx_46"]'))  # expand parents
            await asyncio.sleep(3)
            shot = await page.call("Page.captureScreenshot", format="png")
            with open(args.png, "wb") as f:
                f.write(base64.b64decode(shot["data"]))


if __name__ == "__main__":
    asyncio.run(main())
