#!/usr/bin/env python3
"""End-to-end checks of a running AgenticAI WebSocket gateway.

    pip install -r scripts/checks/requirements.txt
    python3 scripts/checks/integration_test.py ws://localhost:8080
    python3 scripts/checks/integration_test.py wss://HOST/ws --api-key KEY     # production endpoint
    WS_TOKEN=JWT python3 scripts/checks/integration_test.py wss://HOST/ws --api-key KEY  # with tokens

One PASS/FAIL line per check (SKIP, with the reason, for a check the options leave out), a
closing "N passed, N failed" line, exit status 1 on any failure (2 on bad usage or a missing
package). Checks: connection, ping/pong (request_id echoed), subscribe, unsubscribe,
invalid JSON (connection stays usable), unknown action, five concurrent clients, ?project_id= on
connect, one forward per agent role (pm, dev, qa, ops), and publish-and-receive over
POST /api/v1/publish when an API key is given (or --publish-open).

Replies that are not the awaited one (pushed "message" frames, ...) are skipped while waiting, up
to a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime
from typing import Any, Callable

try:
    from websockets.asyncio.client import ClientConnection, connect
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit(
        "integration: this script needs the Python package websockets (>= 13). Install it with\n"
        "    python3 -m pip install -r scripts/checks/requirements.txt\n"
        "(in a virtual environment if your system Python is managed), or use the one\n"
        "scripts/test.sh installs: .tools/aws-venv/bin/python scripts/checks/integration_test.py ..."
    )

ROLES = ("pm", "dev", "qa", "ops")


class CheckFailed(Exception):
    pass


class Runner:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.run_id = uuid.uuid4().hex[:8]

    def project(self, name: str) -> str:
        return f"it-{self.run_id}-{name}"

    # ------------------------------------------------------------------ helpers
    def url(self, **query: str) -> str:
        parts = urllib.parse.urlsplit(self.args.ws_url)
        pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True) + list(query.items())
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(pairs)))

    async def open(self, **query: str) -> tuple[ClientConnection, dict[str, Any]]:
        # A token goes in the Authorization header (not the URL, which access logs keep), so the
        # ?project_id= subscription on connect is authorized too.
        headers = {"Authorization": f"Bearer {self.args.token}"} if self.args.token else None
        ws = await connect(
            self.url(**query), open_timeout=self.args.timeout, max_size=2**22, additional_headers=headers
        )
        try:
            hello = await self.expect(ws, lambda m: True, "the connected message")
        except BaseException:
            await ws.close()
            raise
        return ws, hello

    async def expect(
        self,
        ws: ClientConnection,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """The first JSON frame that satisfies predicate; others are skipped."""
        deadline = time.monotonic() + (timeout or self.args.timeout)
        skipped: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CheckFailed(f"no {what} within {timeout or self.args.timeout:g}s (skipped: {skipped[-3:]})")
            try:
                frame = await asyncio.wait_for(ws.recv(), remaining)
            except asyncio.TimeoutError:
                continue
            try:
                message = json.loads(frame)
            except (TypeError, ValueError):
                skipped.append(repr(frame)[:120])
                continue
            if isinstance(message, dict) and predicate(message):
                return message
            skipped.append(json.dumps(message)[:200])

    async def request(
        self,
        ws: ClientConnection,
        payload: dict[str, Any] | str,
        predicate: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        await ws.send(payload if isinstance(payload, str) else json.dumps(payload))
        return await self.expect(ws, predicate, what, timeout)

    def publish(self, project_id: str, data: Any, event: str, key: str | None) -> tuple[int, str]:
        body = json.dumps({"project_id": project_id, "data": data, "type": event}).encode()
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(f"{self.args.http_url}/api/v1/publish", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.args.timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")

    def skip(self, name: str, reason: str) -> None:
        self.skipped += 1
        print(f"SKIP {name}: {reason}", flush=True)

    async def check(self, name: str, coro) -> None:
        started = time.monotonic()
        try:
            detail = await asyncio.wait_for(coro, self.args.timeout * 6)
        except CheckFailed as err:
            self.failed += 1
            print(f"FAIL {name}: {err}", flush=True)
        except (OSError, asyncio.TimeoutError, Exception) as err:  # noqa: BLE001 - report, go on
            self.failed += 1
            print(f"FAIL {name}: {type(err).__name__}: {err}", flush=True)
        else:
            self.passed += 1
            elapsed = (time.monotonic() - started) * 1000
            print(f"PASS {name} ({elapsed:.0f} ms){': ' + detail if detail else ''}", flush=True)

    # ------------------------------------------------------------------ checks
    async def connection(self) -> str:
        ws, hello = await self.open()
        async with ws:
            if hello.get("type") != "connected":
                raise CheckFailed(f"first message is not connected: {hello}")
            if hello.get("message") != "WebSocket connection established":
                raise CheckFailed(f"unexpected message text: {hello.get('message')!r}")
            stamp = hello.get("timestamp")
            try:
                datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
            except ValueError as err:
                raise CheckFailed(f"timestamp is not ISO 8601: {stamp!r}") from err
            if not hello.get("connection_id"):
                raise CheckFailed(f"no connection_id: {hello}")
            return f"connection_id={hello['connection_id']}"

    async def ping(self) -> str:
        ws, _ = await self.open()
        async with ws:
            reply = await self.request(ws, {"action": "ping"}, lambda m: m.get("type") == "pong", "pong")
            echoed = await self.request(
                ws, {"action": "ping", "request_id": "it-r1"}, lambda m: m.get("type") == "pong", "pong"
            )
            if echoed.get("request_id") != "it-r1":
                raise CheckFailed(f"request_id not echoed: {echoed}")
            return json.dumps(reply)

    async def subscribe_unsubscribe(self, unsubscribe: bool) -> str:
        project = self.project("sub")
        ws, _ = await self.open()
        async with ws:
            confirmed = await self.request(
                ws,
                {"action": "subscribe", "project_id": project},
                lambda m: m.get("type") in ("subscription_confirmed", "error"),
                "subscription_confirmed",
            )
            if confirmed != {**confirmed, "type": "subscription_confirmed", "project_id": project}:
                raise CheckFailed(f"unexpected reply: {confirmed}")
            if not unsubscribe:
                return ""
            left = await self.request(
                ws,
                {"action": "unsubscribe", "project_id": project},
                lambda m: m.get("type") in ("unsubscription_confirmed", "error"),
                "unsubscription_confirmed",
            )
            if left != {**left, "type": "unsubscription_confirmed", "project_id": project}:
                raise CheckFailed(f"unexpected reply: {left}")
            return ""

    async def invalid_json(self) -> str:
        ws, _ = await self.open()
        async with ws:
            error = await self.request(ws, "{this is not json", lambda m: m.get("type") == "error", "error")
            want = {"type": "error", "message": "Invalid JSON format", "code": "invalid_json"}
            if {k: error.get(k) for k in want} != want:
                raise CheckFailed(f"unexpected error: {error}")
            await self.request(ws, {"action": "ping"}, lambda m: m.get("type") == "pong", "pong after the error")
            return "connection still answers ping"

    async def unknown_action(self) -> str:
        ws, _ = await self.open()
        async with ws:
            error = await self.request(ws, {"action": "dance"}, lambda m: m.get("type") == "error", "error")
            want = {"type": "error", "message": "Unknown action: dance", "code": "unknown_action"}
            if {k: error.get(k) for k in want} != want:
                raise CheckFailed(f"unexpected error: {error}")
            return ""

    async def concurrent_clients(self, count: int = 5) -> str:
        opened = await asyncio.gather(*(self.open() for _ in range(count)))
        try:
            ids = {hello.get("connection_id") for _, hello in opened}
            if len(ids) != count:
                raise CheckFailed(f"connection ids are not distinct: {ids}")
            await asyncio.gather(
                *(
                    self.request(ws, {"action": "ping", "request_id": f"c{i}"}, lambda m: m.get("type") == "pong", "pong")
                    for i, (ws, _) in enumerate(opened)
                )
            )
            return f"{count} clients, distinct ids, all answered ping"
        finally:
            await asyncio.gather(*(ws.close() for ws, _ in opened), return_exceptions=True)

    async def query_subscription(self) -> str:
        project = self.project("query")
        ws, _ = await self.open(project_id=project)
        async with ws:
            if self.args.api_key is not None or self.args.publish_open:
                data = {"probe": self.run_id, "via": "query"}
                status, body = await asyncio.to_thread(self.publish, project, data, "it.query", self.args.api_key)
                if status // 100 != 2:
                    raise CheckFailed(f"publish answered {status}: {body[:200]}")
                message = await self.expect(
                    ws, lambda m: m.get("type") == "message" and m.get("project_id") == project, "published message"
                )
                if message.get("data") != data:
                    raise CheckFailed(f"data differs: {message}")
                return "received a publication without a subscribe request"
            left = await self.request(
                ws,
                {"action": "unsubscribe", "project_id": project},
                lambda m: m.get("type") in ("unsubscription_confirmed", "error"),
                "unsubscription_confirmed",
            )
            if left.get("type") != "unsubscription_confirmed" or left.get("project_id") != project:
                raise CheckFailed(f"unexpected reply: {left}")
            return "unsubscribe of the query's project confirmed"

    async def forward(self, role: str) -> str:
        project = self.project("fwd")
        ws, _ = await self.open()
        async with ws:
            message_id = f"it-{self.run_id}-{role}"
            reply = await self.request(
                ws,
                {
                    "action": "forward",
                    "type": role,
                    "message_id": message_id,
                    "project_id": project,
                    "data": {"task": f"integration test for {role}", "run": self.run_id},
                },
                lambda m: m.get("message_id") == message_id and m.get("type") in ("forward_confirmed", "error"),
                "forward_confirmed",
                timeout=self.args.forward_timeout,
            )
            if reply.get("type") != "forward_confirmed":
                raise CheckFailed(f"forward refused: {reply}")
            if not reply.get("sqs_message_id"):
                raise CheckFailed(f"no sqs_message_id: {reply}")
            return f"sqs_message_id={reply['sqs_message_id']}"

    async def publish_and_receive(self) -> str:
        project = self.project("pub")
        ws, _ = await self.open()
        async with ws:
            await self.request(
                ws,
                {"action": "subscribe", "project_id": project},
                lambda m: m.get("type") == "subscription_confirmed" and m.get("project_id") == project,
                "subscription_confirmed",
            )
            data = {"text": "hello from the integration test", "run": self.run_id, "n": 1}
            status, body = await asyncio.to_thread(self.publish, project, data, "it.event", self.args.api_key)
            if status // 100 != 2:
                raise CheckFailed(f"POST /api/v1/publish answered {status}: {body[:200]}")
            message = await self.expect(
                ws, lambda m: m.get("type") == "message" and m.get("project_id") == project, "published message"
            )
            if message.get("data") != data or message.get("event") != "it.event":
                raise CheckFailed(f"unexpected message: {message}")
            return f"HTTP {status}, delivered"

    async def publish_rejects_bad_key(self) -> str:
        status, body = await asyncio.to_thread(
            self.publish, self.project("auth"), {"x": 1}, "it.auth", "wrong-" + self.run_id
        )
        if status not in (401, 403):
            raise CheckFailed(f"a wrong key got HTTP {status}: {body[:200]}")
        return f"HTTP {status}"

    async def run(self) -> int:
        await self.check("connection", self.connection())
        await self.check("ping/pong", self.ping())
        await self.check("subscribe", self.subscribe_unsubscribe(unsubscribe=False))
        await self.check("unsubscribe", self.subscribe_unsubscribe(unsubscribe=True))
        await self.check("invalid JSON", self.invalid_json())
        await self.check("unknown action", self.unknown_action())
        await self.check("five concurrent clients", self.concurrent_clients(5))
        await self.check("?project_id= on connect", self.query_subscription())
        if not self.args.skip_forward:
            for role in ROLES:
                await self.check(f"forward {role}", self.forward(role))
        else:
            self.skip("forward (pm, dev, qa, ops)", "--skip-forward was given")
        if self.args.api_key is not None or self.args.publish_open:
            await self.check("publish and receive", self.publish_and_receive())
        else:
            self.skip("publish and receive", "no --api-key (and no --publish-open)")
        if self.args.api_key is not None:
            await self.check("publish rejects a wrong key", self.publish_rejects_bad_key())
        else:
            self.skip("publish rejects a wrong key", "no --api-key")
        skipped = f", {self.skipped} skipped" if self.skipped else ""
        print(f"integration: {self.passed} passed, {self.failed} failed{skipped}", flush=True)
        return 0 if self.failed == 0 else 1


def http_url_for(ws_url: str) -> str:
    parts = urllib.parse.urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None:
        raise SystemExit(f"integration: not a ws:// or wss:// URL: {ws_url}")
    return f"{scheme}://{parts.netloc}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ws_url", help="WebSocket URL, e.g. ws://localhost:8080 or wss://host/ws")
    parser.add_argument("--api-key", help="publish API key (one of PUBLISH_API_KEYS): enables the publish checks")
    parser.add_argument("--publish-open", action="store_true", help="the server accepts publishes without a key")
    parser.add_argument(
        "--token",
        default=os.environ.get("WS_TOKEN") or None,
        help="connection token (JWT) for a server that requires one (default: $WS_TOKEN); it must allow "
        "the it-* projects with scopes subscribe and forward",
    )
    parser.add_argument("--http-url", help="base URL of the HTTP API (default: derived from WS_URL)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for each reply (5)")
    parser.add_argument("--forward-timeout", type=float, default=15.0, help="seconds to wait for forward_confirmed (15)")
    parser.add_argument("--skip-forward", action="store_true", help="leave out the forward checks (no queues)")
    args = parser.parse_args()
    args.http_url = (args.http_url or http_url_for(args.ws_url)).rstrip("/")
    return asyncio.run(Runner(args).run())


if __name__ == "__main__":
    sys.exit(main())
