"""Agent streams in the Python client against a scripted gateway (an in-process WebSocket server
that keeps streams the way docs/protocol.md says the server does): the cases the real server does
not produce on demand, such as an answer lost just before a reconnect, a server behind what it
confirmed, an append that does not continue the viewer's copy, or an approval resolved while the
viewer was away with no replay to tell it. The real-server scenarios are
in test_client.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Optional

from websockets.asyncio.server import ServerConnection, serve

from agenticai_websocket import Approval, Client, RequestError, StreamUpdate, utf8_length

FAST: dict[str, Any] = {"backoff_base": 0.01, "backoff_max": 0.02}
TOKENS = ["Hello", ", wörld", " 👋", " — done", "."]


class ScriptedGateway:
    """Streams as the gateway keeps them, and the connections to it."""

    def __init__(self) -> None:
        self.streams: dict[str, dict[str, Any]] = {}
        self.received: list[dict[str, Any]] = []
        self.connections: set[ServerConnection] = set()
        # (request) -> True: apply it but lose its answer, and the connection with it.
        self.drop_answer: Callable[[dict[str, Any]], bool] = lambda request: False
        # (request) -> an error code to refuse it with, not executed.
        self.refuse: Callable[[dict[str, Any]], Optional[str]] = lambda request: None
        self.url = ""

    async def __aenter__(self) -> "ScriptedGateway":
        self._server = await serve(self._serve, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/ws"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def push(self, frame: dict[str, Any]) -> None:
        for connection in list(self.connections):
            await connection.send(json.dumps(frame))

    async def _serve(self, connection: ServerConnection) -> None:
        self.connections.add(connection)
        try:
            async for text in connection:
                await self._handle(connection, json.loads(text))
        finally:
            self.connections.discard(connection)

    async def _handle(self, connection: ServerConnection, request: dict[str, Any]) -> None:
        self.received.append(request)
        action, stream_id = request["action"], request.get("stream_id", "")
        stream = self.streams.get(stream_id)
        reply: dict[str, Any]
        refusal = self.refuse(request)
        if refusal:
            reply = {"type": "error", "code": refusal, "message": refusal, "retry_after_ms": 20}
        elif action == "subscribe":
            reply = {"type": "subscription_confirmed", "offset": 0, "epoch": "e"}
        elif action == "stream_start":
            self.streams.setdefault(stream_id, {"text": "", "length": 0, "status": "open"})
            reply = {"type": "stream_started", "started_at": "2026-12-07T00:00:00Z"}
        elif action == "stream_append" and stream is not None:
            size = utf8_length(request["text"])
            if request["at"] + size <= stream["length"]:
                reply = {"type": "stream_appended", "length": stream["length"], "duplicate": True}
            elif request["at"] != stream["length"]:
                reply = {"type": "error", "code": "stream_conflict", "message": "conflict", "length": stream["length"]}
            else:
                stream["text"] += request["text"]
                stream["length"] += size
                reply = {"type": "stream_appended", "length": stream["length"]}
        elif action == "stream_end" and stream is not None:
            if stream["status"] != "open":
                reply = {"type": "error", "code": "stream_ended", "message": "ended", "status": stream["status"], "length": stream["length"]}
            else:
                stream["status"] = request["status"]
                reply = {"type": "stream_ended", "status": stream["status"], "length": stream["length"], "offset": 2, "epoch": "e"}
        else:
            reply = {"type": "error", "code": "invalid_request", "message": action}
        if self.drop_answer(request):
            await connection.close(1011)  # lost with its connection: the client reconnects
            return
        ids = {key: request[key] for key in ("project_id", "stream_id", "request_id") if key in request}
        await connection.send(json.dumps({**reply, **ids}))


def lose_first(predicate: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    """A drop_answer that loses the answer of the first request matching ``predicate``."""
    lost: list[dict[str, Any]] = []

    def drop(request: dict[str, Any]) -> bool:
        if lost or not predicate(request):
            return False
        lost.append(request)
        return True

    return drop


def test_an_append_whose_answer_was_lost_is_sent_again_and_applied_once() -> None:
    async def scenario() -> None:
        async with ScriptedGateway() as gateway, Client(gateway.url, **FAST) as client:
            gateway.drop_answer = lose_first(lambda request: request["action"] == "stream_append")
            stream = await client.start_stream("p", agent="dev", event="answer")
            futures = [stream.append(token) for token in TOKENS]
            lengths = await asyncio.wait_for(asyncio.gather(*futures), 10)
            text = "".join(TOKENS)
            assert gateway.streams[stream.stream_id]["text"] == text, "the gateway holds each token once"
            assert lengths == [utf8_length("".join(TOKENS[: n + 1])) for n in range(len(TOKENS))]
            appends = [request["at"] for request in gateway.received if request["action"] == "stream_append"]
            assert len(appends) == len(set(appends)) + 1, f"exactly one append sent twice: {appends}"
            ended = await stream.end("completed")
            assert (ended["status"], ended["length"], stream.status) == ("completed", utf8_length(text), "completed")

    asyncio.run(scenario())


def test_an_end_whose_answer_was_lost_counts_as_done_when_the_retry_finds_it_ended() -> None:
    async def scenario() -> None:
        async with ScriptedGateway() as gateway, Client(gateway.url, **FAST) as client:
            gateway.drop_answer = lose_first(lambda request: request["action"] == "stream_end")
            stream = await client.start_stream("p")
            stream.append("all of it")
            ended = await asyncio.wait_for(stream.end("failed", data={"reason": "tests"}), 10)
            assert (ended["status"], ended["length"]) == ("failed", 9)
            try:
                await stream.append("more")
                raise AssertionError("an append after the end is refused")
            except RequestError as error:
                assert error.code == "stream_ended"

    asyncio.run(scenario())


def test_a_conflict_behind_the_handle_sends_the_rest_again() -> None:
    async def scenario() -> None:
        async with ScriptedGateway() as gateway, Client(gateway.url, **FAST) as client:
            stream = await client.start_stream("p", stream_id="s-behind")
            await stream.append("abc")
            await stream.append("déf")
            # The gateway lost the second append (say, a failover to a replica that missed it).
            gateway.streams["s-behind"].update(text="abc", length=3)
            assert await stream.append("ghi") == 10
            assert gateway.streams["s-behind"]["text"] == "abcdéfghi"

    asyncio.run(scenario())


def test_a_conflict_ahead_of_the_handle_counts_the_unanswered_text_as_applied() -> None:
    async def scenario() -> None:
        async with ScriptedGateway() as gateway, Client(gateway.url, **FAST) as client:
            stream = await client.start_stream("p", stream_id="s-ahead")
            await stream.append("abc")
            gateway.streams["s-ahead"].update(text="abcXYZ!", length=7)  # another writer meanwhile
            assert await stream.append("xyz") == 7, "follows the server: it holds 7 bytes"
            assert await stream.append(".") == 8, "and appends after them"
            assert gateway.streams["s-ahead"]["text"] == "abcXYZ!."

    asyncio.run(scenario())


def test_busy_and_rate_limited_refusals_are_waited_out() -> None:
    async def scenario() -> None:
        async with ScriptedGateway() as gateway, Client(gateway.url, **FAST) as client:
            refusals = ["busy", "rate_limited", "busy"]
            gateway.refuse = lambda request: refusals.pop(0) if request["action"] == "stream_append" and refusals else None
            stream = await client.start_stream("p")
            await asyncio.wait_for(asyncio.gather(*[stream.append(token) for token in TOKENS]), 10)
            assert refusals == [], "every refusal was met"
            assert gateway.streams[stream.stream_id]["text"] == "".join(TOKENS)

    asyncio.run(scenario())


def test_a_refusal_fails_that_append_and_the_ones_after_it_the_next_continues() -> None:
    async def scenario() -> None:
        async with ScriptedGateway() as gateway, Client(gateway.url, **FAST) as client:
            refusing = [False]
            gateway.refuse = lambda request: "stream_too_large" if refusing[0] and request["action"] == "stream_append" else None
            stream = await client.start_stream("p")
            await stream.append("kept")
            refusing[0] = True
            refused = await asyncio.gather(stream.append(" too"), stream.append(" much"), return_exceptions=True)
            assert [getattr(error, "code", None) for error in refused] == ["stream_too_large", "stream_too_large"]
            refusing[0] = False
            assert await stream.append("!") == 5, "continues from the server's length"
            assert gateway.streams[stream.stream_id]["text"] == "kept!"

    asyncio.run(scenario())


def test_viewer_snapshots_replace_appends_continue_repeats_are_ignored_a_gap_waits() -> None:
    async def scenario() -> None:
        async with ScriptedGateway() as gateway, Client(gateway.url, **FAST) as client:
            updates: list[StreamUpdate] = []
            subscription = client.subscribe("p", on_stream=updates.append)
            await asyncio.wait_for(subscription.ready(), 5)

            def frame(kind: str, **fields: Any) -> dict[str, Any]:
                return {"type": kind, "project_id": "p", "stream_id": "s", **fields}

            meta: dict[str, Any] = {"agent": "dev", "event": "answer", "data": {"n": 1}, "started_at": "t"}
            for each in [
                frame("stream_started", **meta, offset=1, epoch="e"),
                frame("stream_append", text="Hé", length=3),
                frame("stream_append", text="Hé", length=3),  # a repeat
                frame("stream_append", text="llo", length=6),
                frame("stream_append", text="?", length=99),  # a gap: ignored until the snapshot
                frame("stream_append", text="!", length=100),
                frame("stream_snapshot", status="open", text="Héllo wörld", length=13, **meta),
                frame("stream_append", text=" 👋", length=13),  # at or below the snapshot: a repeat
                frame("stream_append", text=" 👋", length=18),
                frame("stream_ended", status="completed", length=18, data={"passed": 3}, offset=2, epoch="e"),
                frame("stream_ended", status="completed", length=18, offset=2, epoch="e"),  # replayed twice
            ]:
                await gateway.push(each)

            def ended() -> Optional[bool]:
                stream = subscription.streams.get("s")
                return stream is not None and stream.status == "completed"

            for _ in range(200):
                if ended():
                    break
                await asyncio.sleep(0.01)
            stream = subscription.streams["s"]
            assert (stream.text, stream.length, stream.status, stream.stale) == ("Héllo wörld 👋", 18, "completed", False)
            assert (stream.agent, stream.event, stream.data, stream.result) == ("dev", "answer", {"n": 1}, {"passed": 3})
            kinds = [update.type for update in updates]
            assert kinds == ["stream_started", "stream_append", "stream_append", "stream_snapshot", "stream_append", "stream_ended"]
            assert [update.text for update in updates if update.type == "stream_append"] == ["Hé", "llo", " 👋"]
            assert subscription.position is not None and subscription.position.offset == 2, "starts and ends count"

    asyncio.run(scenario())


def test_viewer_approvals_kept_once_rebuilt_at_every_resubscribe_resolved_ones_leave() -> None:
    async def scenario() -> None:
        async with ScriptedGateway() as gateway, Client(gateway.url, **FAST) as client:
            requested: list[Approval] = []
            resolved: list[Approval] = []
            subscription = client.subscribe("p", on_approval_requested=requested.append, on_approval_resolved=resolved.append)
            await asyncio.wait_for(subscription.ready(), 5)

            def asked(approval_id: str, **position: Any) -> dict[str, Any]:
                return {
                    "type": "approval_requested",
                    "project_id": "p",
                    "approval_id": approval_id,
                    "agent": "ops",
                    "data": {"title": approval_id},
                    "options": ["approve", "reject"],
                    "expires_at": "x",
                    **position,
                }

            def decided(approval_id: str, **position: Any) -> dict[str, Any]:
                return {"type": "approval_resolved", "project_id": "p", "approval_id": approval_id, "decision": "approve", "user_id": "bob", **position}

            for frame in [asked("a", offset=1, epoch="e"), asked("b", offset=2, epoch="e"), asked("a"), asked("a", offset=1, epoch="e")]:
                await gateway.push(frame)
            await wait_until(lambda: len(subscription.approvals) == 2)
            assert [approval.approval_id for approval in requested] == ["a", "b"], "a repeat is not reported again"
            first = subscription.approvals["a"]

            # The resubscribe: only "a" is still pending ("b" was resolved meanwhile, unreplayed).
            for connection in list(gateway.connections):
                await connection.close(1011)
            await wait_until(lambda: sum(request["action"] == "subscribe" for request in gateway.received) == 2 and bool(gateway.connections))
            await asyncio.sleep(0.05)
            assert subscription.approvals == {}, "emptied at the confirmation"
            await gateway.push(asked("a"))
            await wait_until(lambda: "a" in subscription.approvals)
            assert list(subscription.approvals) == ["a"], "rebuilt: b does not linger"
            assert requested[-1] is first, "a came back as the same object, reported again"

            for frame in [decided("b", offset=3, epoch="e"), decided("c"), decided("a", offset=4, epoch="e"), decided("a", offset=4, epoch="e")]:
                await gateway.push(frame)
            await wait_until(lambda: len(resolved) == 2)
            await asyncio.sleep(0.05)
            outcome = [(approval.approval_id, approval.resolution and approval.resolution.decided_by) for approval in resolved]
            assert outcome == [("b", "bob"), ("a", "bob")], "a late resolution of one dropped is reported; an unknown one is not"
            assert subscription.approvals == {}

    asyncio.run(scenario())


async def wait_until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")
