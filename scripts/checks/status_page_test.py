"""The status page in a real headless Chromium, driven over the DevTools protocol.

    python3 scripts/checks/status_page_test.py http://127.0.0.1:PORT SCREENSHOT_DIR

Against a running gateway (open on loopback, or PUBLISH_API_KEY in the environment, entered
into the page's form as an operator would): loads /status at a phone's size, runs a small load
(WebSocket clients that subscribe and forward, HTTP publishes), and checks that the page shows
the figures moving, lays out without sideways scrolling, and logs no error (exceptions,
console errors, failed loads, Content-Security-Policy violations). Saves screenshots (phone and
desktop) into SCREENSHOT_DIR. Needs `websockets` (scripts/checks/requirements.txt) and Chromium.
"""

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

BASE = sys.argv[1].rstrip("/")
SCREENSHOTS = Path(sys.argv[2])
WS_BASE = BASE.replace("http://", "ws://", 1)
API_KEY = os.environ.get("PUBLISH_API_KEY", "")
DEADLINE_SECS = 20
CLIENTS = 4

results = []


def check(ok, name, detail=""):
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} {name}" + (f" ({detail})" if detail else ""), flush=True)


def start_chromium(profile):
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if not binary:
        sys.exit("status page test: chromium is not installed (apt-get install -y chromium)")
    process = subprocess.Popen(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + DEADLINE_SECS
    for line in process.stderr:
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            # Keep reading, so a chatty browser never blocks on a full pipe.
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process, match.group(1)
        if time.monotonic() > deadline:
            break
    process.kill()
    sys.exit("status page test: chromium did not print its DevTools address")


class DevTools:
    """One page target of the browser, over the browser's DevTools WebSocket (flat sessions)."""

    def __init__(self, socket):
        self.socket = socket
        self.ids = itertools.count(1)
        self.waiting = {}
        self.errors = []
        self.unauthorized_expected = False
        self.session = None
        self.reader = asyncio.create_task(self.read())

    async def read(self):
        try:
            await self.read_events()
        except ConnectionClosed:
            pass  # the browser went away; the test's own calls time out and say so

    async def read_events(self):
        async for frame in self.socket:
            message = json.loads(frame)
            if "id" in message and message["id"] in self.waiting:
                self.waiting.pop(message["id"]).set_result(message)
                continue
            method, params = message.get("method"), message.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                self.errors.append(f"exception: {details.get('exception', {}).get('description', details.get('text'))}")
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                self.errors.append("console.error: " + " ".join(str(arg.get("value", arg.get("description")))
                                                               for arg in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                # Before the key is entered, the page's first poll is refused: expected, and the
                # browser reports every 401 as a failed load.
                expected = (self.unauthorized_expected and entry.get("source") == "network"
                            and "/api/v1/stats" in entry.get("url", "") and "401" in entry["text"])
                if not expected:
                    self.errors.append(f"log: {entry['text']} {entry.get('url', '')}")

    async def send(self, method, params=None, session=True):
        identifier = next(self.ids)
        message = {"id": identifier, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        future = asyncio.get_running_loop().create_future()
        self.waiting[identifier] = future
        await self.socket.send(json.dumps(message))
        answer = await asyncio.wait_for(future, DEADLINE_SECS)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    async def open_page(self):
        target = await self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                                   session=False)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            await self.send(f"{domain}.enable")

    async def evaluate(self, expression):
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression, name):
        deadline = time.monotonic() + DEADLINE_SECS
        value = None
        while time.monotonic() < deadline:
            try:
                value = await self.evaluate(expression)
            except RuntimeError as error:  # the page is still loading: its elements are not there yet
                value = error
            if value and not isinstance(value, RuntimeError):
                return value
            await asyncio.sleep(0.1)
        check(False, name, f"still {value!r} after {DEADLINE_SECS} s")
        return None

    async def screenshot(self, path, width, height, mobile):
        await self.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": height, "deviceScaleFactor": 2 if mobile else 1, "mobile": mobile})
        await asyncio.sleep(1.2)  # one poll at the new size
        shot = await self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})
        path.write_bytes(base64.b64decode(shot["data"]))
        check(path.stat().st_size > 10_000, f"screenshot saved: {path}", f"{path.stat().st_size} bytes")


def number(text):
    """A figure as the page prints it ("1,234.5", "–" for none)."""
    try:
        return float(text.replace(",", "").replace("−", "-").replace("±", ""))
    except (AttributeError, ValueError):
        return None


def publish(project, n):
    headers = {"Content-Type": "application/json"}
    if API_KEY:
        headers["Authorization"] = f"Bearer {API_KEY}"
    body = json.dumps({"project_id": project, "type": "status-test", "data": {"n": n}}).encode()
    request = urllib.request.Request(f"{BASE}/api/v1/publish", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


async def load(stop):
    """CLIENTS subscribers of one project, each forwarding now and then, and publishes, until stop is set."""
    sockets = [await connect(f"{WS_BASE}/ws") for _ in range(CLIENTS)]
    for socket in sockets:
        await socket.recv()  # connected
        await socket.send(json.dumps({"action": "subscribe", "project_id": "status-page"}))

    async def drain(socket):
        async for _ in socket:
            pass

    readers = [asyncio.create_task(drain(socket)) for socket in sockets]
    for n in itertools.count():
        if stop.is_set() or n >= 400:
            break
        await asyncio.to_thread(publish, "status-page", n)
        if n % 5 == 0:
            await sockets[n % CLIENTS].send(json.dumps(
                {"action": "forward", "type": "dev", "message_id": f"status-page-{n}", "project_id": "status-page",
                 "data": {"n": n}}))
        await asyncio.sleep(0.05)
    return sockets, readers


async def main():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="status-page-chromium-")
    browser, address = start_chromium(profile)
    try:
        async with connect(address, max_size=64 * 1024 * 1024) as socket:
            tools = DevTools(socket)
            await tools.open_page()
            await tools.send("Emulation.setDeviceMetricsOverride",
                             {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True})
            tools.unauthorized_expected = bool(API_KEY)
            await tools.send("Page.navigate", {"url": f"{BASE}/status"})
            if API_KEY:
                await tools.wait_for("getComputedStyle(document.getElementById('credential')).display !== 'none'",
                                     "the page asks for a key")
                check(True, "the page asks for a key before showing figures")
                await tools.evaluate(f"document.getElementById('credential-value').value = {json.dumps(API_KEY)};"
                                     "document.getElementById('credential').requestSubmit(); true")
                await tools.wait_for("getComputedStyle(document.getElementById('credential')).display === 'none'",
                                     "the key is accepted and its form goes away")
                tools.unauthorized_expected = False
            shown = await tools.wait_for(
                "getComputedStyle(document.getElementById('figures')).display !== 'none' && "
                "document.getElementById('phase').textContent", "figures shown")
            check(shown == "ready", "the page shows the server ready", shown)
            version = await tools.evaluate("document.getElementById('version').textContent")
            check(bool(re.fullmatch(r"v\d+\.\d+\.\d+.*", version or "")), "the page shows the version", version)
            idle = number(await tools.evaluate("document.getElementById('active').textContent"))
            check(idle == 0, "no connections before the load", str(idle))

            stop = asyncio.Event()
            loader = asyncio.create_task(load(stop))
            active = await tools.wait_for(
                f"Number(document.getElementById('active').textContent) >= {CLIENTS} && "
                "document.getElementById('active').textContent", "active connections shown")
            check(number(active) == CLIENTS, "the page counts the load's connections", active)
            deliveries = await tools.wait_for(
                "Number(document.getElementById('deliveries').textContent.replace(/,/g, '')) > 0 && "
                "document.getElementById('deliveries').textContent", "deliveries per second shown")
            check((number(deliveries) or 0) > 0, "the page shows deliveries per second", deliveries)
            confirmed = await tools.wait_for(
                "Number(document.querySelector('#queues tr:nth-child(2) td:nth-child(7)').textContent) > 0 && "
                "document.querySelector('#queues tr:nth-child(2) td:nth-child(7)').textContent",
                "dev forwards confirmed shown")
            check((number(confirmed) or 0) > 0, "the queue table counts confirmed dev forwards", confirmed)
            # The charts drew the load: some point of the deliveries line is above the baseline.
            peak = await tools.wait_for(
                "Math.min(...document.querySelector('#chart-deliveries .line-a').getAttribute('points')"
                ".split(' ').filter(Boolean).map((p) => Number(p.split(',')[1]))) < 80 && 'drawn'",
                "deliveries chart drawn")
            check(peak == "drawn", "the deliveries chart rises with the load")
            overflow = await tools.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            check(overflow <= 0, "readable on a phone: no sideways scrolling at 390 px", f"{overflow} px too wide")
            await tools.screenshot(SCREENSHOTS / "status-phone.png", 390, 844, True)
            await tools.screenshot(SCREENSHOTS / "status-desktop.png", 1280, 900, False)

            stop.set()
            sockets, readers = await loader
            for socket in sockets:
                await socket.close()
            for reader in readers:
                reader.cancel()
            closed = await tools.wait_for(
                "document.getElementById('active').textContent === '0' && "
                "document.querySelector('#closes td') && document.querySelector('#closes td').textContent",
                "connections back to zero")
            check(closed == "client_closed", "the page sees the clients close", closed)
            check(not tools.errors, "no console errors, exceptions or failed loads", "; ".join(tools.errors))
            tools.reader.cancel()
    finally:
        browser.kill()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)
    failed = results.count(False)
    print(f"status page: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


sys.exit(asyncio.run(main()))
