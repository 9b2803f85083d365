"""The Python client against the real gateway binary:

    AGENTICAI_BIN=target/release/agenticai-websocket REDIS_PORT=6379 python -m pytest clients/python

(scripts/checks/client-tests.sh starts Redis and runs this with the JavaScript suites.)
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Optional

import pytest
from websockets.asyncio.client import connect

from agenticai_websocket import (
    Client,
    ConnectionState,
    JoinLeave,
    Presence,
    RequestError,
    Reset,
    StateChange,
    StreamUpdate,
    backoff_delay,
    utf8_length,
)
from harness import (
    JWT_SECRET,
    REDIS_URL,
    Proxy,
    Server,
    failing_dev_queue,
    free_port,
    mint_token,
    publish,
    publish_stream,
    unique_project,
    until,
    wait_for,
)

FAST: dict[str, Any] = {"restart_delay_max": 0.3, "backoff_base": 0.1, "backoff_max": 0.5}


class Recorder:
    """A client following one project, recording the numbers received, resets, states, and the
    agent streams' updates (the copies themselves are the subscription's ``streams``)."""

    def __init__(self, url: str, project_id: str, **options: Any) -> None:
        self.received: list[int] = []
        self.stream_updates: list[tuple[float, str, int]] = []  # time, type, the copy's length after it
        self.resets: list[Reset] = []
        self.states: list[tuple[float, StateChange]] = []
        self.client = Client(url, on_state=lambda change: self.states.append((time.monotonic(), change)), **options)
        self.project_id = project_id
        self._reader: Optional[asyncio.Task[None]] = None

    async def start(self) -> "Recorder":
        subscription = self.client.subscribe(self.project_id, on_reset=self.resets.append, on_stream=self._stream_update)
        self.subscription = subscription
        self._reader = asyncio.create_task(self._read(subscription))
        await until(self.client.connect())
        await until(subscription.ready())
        return self

    async def _read(self, subscription: Any) -> None:
        async for message in subscription:
            self.received.append(message.data["n"])

    def _stream_update(self, update: StreamUpdate) -> None:
        self.stream_updates.append((time.monotonic(), update.type, update.stream.length))

    def codes(self, state: ConnectionState) -> list[Optional[int]]:
        return [change.code for _, change in self.states if change.state is state]

    async def stop(self) -> None:
        await self.client.close()
        if self._reader:
            await until(self._reader, 5)


async def drain_scenario(takeover: bool) -> None:
    """A subscriber follows a numbered stream while its server drains (SIGTERM, 1012) and restarts
    on the same port, or another task behind the same proxy takes over; both share Redis. It
    ends with every number exactly once, in order, and no reset."""
    assert REDIS_URL, "REDIS_PORT is set (scripts/checks/client-tests.sh starts Redis)"
    env = {"REDIS_URL": REDIS_URL}
    servers = [await Server.start(env=env)]
    if takeover:
        servers.append(await Server.start(env=env))
    current = servers[0]
    proxy = await Proxy(current.port).start()
    recorder = await Recorder(proxy.url, unique_project("takeover" if takeover else "restart"), **FAST).start()
    restart: list[asyncio.Task[None]] = []

    published_at: list[float] = []

    async def restart_midstream(n: int) -> None:
        nonlocal current
        published_at.append(time.monotonic())
        if n != 40:
            return
        draining = current
        if takeover:
            current = servers[1]
            proxy.target = current.port
            proxy.refuse_until = time.monotonic() + 0.4  # so the subscriber is away while messages go on
        else:
            proxy.refuse_until = float("inf")  # until the restarted task is registered

        async def replace() -> None:
            nonlocal current
            await draining.stop()
            if not takeover:
                current = await Server.start(port=draining.port, env=env)
                servers.append(current)
                proxy.refuse_until = time.monotonic() + 0.4

        restart.append(asyncio.create_task(replace()))

    count = 120
    try:
        await publish_stream(recorder.project_id, count, lambda: current.port, restart_midstream)
        await until(restart[0])
        await wait_for("every message", lambda: len(recorder.received) >= count)
        await asyncio.sleep(0.2)  # a duplicate would arrive now
        assert recorder.received == list(range(count)), "every message exactly once, in order"
        assert recorder.resets == []
        drained = next(change for _, change in recorder.states if change.state is ConnectionState.DISCONNECTED)
        assert drained.code == 1012
        assert drained.reconnect_in is not None and drained.reconnect_in <= 0.3
        assert recorder.client.state is ConnectionState.CONNECTED
        drained_at = next(at for at, change in recorder.states if change.state is ConnectionState.DISCONNECTED)
        reconnected_at = next(
            at for at, change in recorder.states if change.state is ConnectionState.CONNECTED and at > drained_at
        )
        missed = [at for at in published_at if drained_at < at < reconnected_at]
        assert missed, "messages were published while the subscriber was away: the resume replayed them"
    finally:
        await recorder.stop()
        proxy.close()
        for server in servers:
            server.kill()


def test_drained_server_restarted_on_the_same_port_loses_nothing() -> None:
    asyncio.run(drain_scenario(takeover=False))


def test_another_task_takes_over_and_loses_nothing() -> None:
    asyncio.run(drain_scenario(takeover=True))


def answer_tokens(count: int) -> list[str]:
    """The tokens of an agent's answer (some multibyte): what a viewer's copy must end as, joined."""
    return [f"wört{n} " if n % 7 == 3 else f"👋{n} " if n % 11 == 5 else f"tok{n} " for n in range(count)]


async def stream_drain_scenario(takeover: bool) -> None:
    """An agent (the library's AgentStream) streams 150 tokens, one every 15 ms without waiting
    for the answers, while a viewer follows; each reaches the gateway through its own proxy, and
    mid-stream their server drains (1012) and restarts on the same port, or another task takes
    over, sharing Redis, where the stream lives. The viewer's proxy refuses it 0.4 s longer than
    the agent's, so tokens go on while it is away; its resubscribe brings a snapshot holding them,
    and it ends with the exact text, every token once, in order."""
    assert REDIS_URL, "REDIS_PORT is set (scripts/checks/client-tests.sh starts Redis)"
    env = {"REDIS_URL": REDIS_URL}
    servers = [await Server.start(env=env)]
    if takeover:
        servers.append(await Server.start(env=env))
    current = servers[0]
    proxy = await Proxy(current.port).start()
    agent_proxy = await Proxy(current.port).start()
    project_id = unique_project("stream-takeover" if takeover else "stream-restart")
    viewer = await Recorder(proxy.url, project_id, **FAST).start()
    agent = Client(agent_proxy.url, **FAST)
    restart: list[asyncio.Task[None]] = []

    async def drain() -> None:
        nonlocal current
        draining = current
        if takeover:
            current = servers[1]
            proxy.target = agent_proxy.target = current.port
            proxy.refuse_until = time.monotonic() + 0.4  # so the viewer is away while tokens go on
        else:
            proxy.refuse_until = agent_proxy.refuse_until = float("inf")  # until the restarted task is registered
        await draining.stop()
        if not takeover:
            current = await Server.start(port=draining.port, env=env)
            servers.append(current)
            agent_proxy.refuse_until = 0.0
            proxy.refuse_until = time.monotonic() + 0.4

    try:
        await until(agent.connect())
        stream = await agent.start_stream(project_id, agent="dev", event="answer", data={"task": "drain"})
        tokens = answer_tokens(150)
        expected = "".join(tokens)
        appended = []
        for n, token in enumerate(tokens):
            appended.append(stream.append(token))
            if n == 40:
                restart.append(asyncio.create_task(drain()))
            await asyncio.sleep(0.015)
        await until(restart[0], 30)
        lengths = await until(asyncio.gather(*appended), 30)
        assert lengths[-1] == utf8_length(expected), "the agent's last append confirmed the whole text"
        ended = await until(stream.end("completed"))
        assert (ended["status"], ended["length"]) == ("completed", utf8_length(expected)), "every token once"

        def copy_ended() -> bool:
            copy = viewer.subscription.streams.get(stream.stream_id)
            return copy is not None and copy.status == "completed"

        await wait_for("the viewer's copy, ended", copy_ended)
        copy = viewer.subscription.streams[stream.stream_id]
        assert copy.text == expected, "the viewer's copy is the exact text"
        assert (copy.length, copy.stale, copy.agent, copy.event) == (utf8_length(expected), False, "dev", "answer")
        assert viewer.codes(ConnectionState.DISCONNECTED)[0] == 1012, "the viewer was drained with 1012"
        drained_at = next(at for at, change in viewer.states if change.state is ConnectionState.DISCONNECTED)
        reconnected_at = next(at for at, change in viewer.states if change.state is ConnectionState.CONNECTED and at > drained_at)
        snapshot = next(length for at, kind, length in viewer.stream_updates if kind == "stream_snapshot" and at >= reconnected_at)
        before = ([length for at, _, length in viewer.stream_updates if at <= drained_at] or [0])[-1]
        assert snapshot > before, f"the snapshot held text appended while the viewer was away ({before} -> {snapshot} bytes)"
    finally:
        await agent.close()
        await viewer.stop()
        proxy.close()
        agent_proxy.close()
        for server in servers:
            server.kill()


def test_agent_stream_viewer_drained_midstream_server_restarted_ends_with_the_exact_text() -> None:
    asyncio.run(stream_drain_scenario(takeover=False))


def test_agent_stream_viewer_drained_midstream_another_task_takes_over_ends_with_the_exact_text() -> None:
    asyncio.run(stream_drain_scenario(takeover=True))


def test_agent_stream_late_joiner_gets_the_snapshot_then_the_appends() -> None:
    async def scenario() -> None:
        server = await Server.start()
        project_id = unique_project("stream")
        early = await Recorder(server.url, project_id).start()
        late: Optional[Recorder] = None
        try:
            async with Client(server.url) as agent:
                stream = await agent.start_stream(project_id, agent="qa", event="test-log", data={"suite": "login"})
                assert stream.started["type"] == "stream_started" and stream.started.get("started_at")
                tokens = answer_tokens(60)
                await until(asyncio.gather(*[stream.append(token) for token in tokens[:30]]))
                late = await Recorder(server.url, project_id).start()
                late_view = late.subscription.streams
                # The snapshot may be a rollup window behind what the agent was answered: the
                # appends that follow it bring the copy up to date.
                so_far = "".join(tokens[:30])
                await wait_for("the late joiner's copy, caught up", lambda: stream.stream_id in late_view and late_view[stream.stream_id].text == so_far)
                assert late_view[stream.stream_id].status == "open"
                for token in tokens[30:]:
                    stream.append(token)
                ended = await until(stream.end("completed", data={"passed": 12}))
                expected = "".join(tokens)
                assert (ended["status"], ended["length"]) == ("completed", utf8_length(expected))
                for viewer in (early, late):
                    streams = viewer.subscription.streams
                    await wait_for("the viewer's copy, ended", lambda: streams[stream.stream_id].status == "completed")
                    copy = streams[stream.stream_id]
                    assert (copy.text, copy.length, copy.agent, copy.event, copy.stale) == (expected, utf8_length(expected), "qa", "test-log", False)
                assert early.stream_updates[0][1] == "stream_started", "a subscriber from the start sees the start"
                assert late.stream_updates[0][1] == "stream_snapshot", "a late joiner starts from the snapshot"
                with pytest.raises(RequestError) as after_end:
                    await stream.append("after the end")
                assert after_end.value.code == "stream_ended"
        finally:
            await early.stop()
            if late:
                await late.stop()
            server.kill()

    asyncio.run(scenario())


def test_restart_without_redis_calls_on_reset() -> None:
    async def scenario() -> None:
        server = await Server.start()
        recorder = await Recorder(server.url, unique_project("reset"), **FAST).start()
        try:
            for n in range(3):
                assert await publish(server.port, recorder.project_id, {"n": n})
            await wait_for("the first messages", lambda: len(recorder.received) == 3)
            await server.stop()
            server = await Server.start(port=server.port)  # a new epoch: offsets start again
            await wait_for("the reset", lambda: len(recorder.resets) == 1)
            for n in (3, 4):
                assert await publish(server.port, recorder.project_id, {"n": n})
            await wait_for("the messages after the reset", lambda: len(recorder.received) == 5)
            assert recorder.received == [0, 1, 2, 3, 4]
            reset = recorder.resets[0]
            assert reset.project_id == recorder.project_id
            assert reset.position is not None and reset.position.offset == 0
        finally:
            await recorder.stop()
            server.kill()

    asyncio.run(scenario())


def test_history_shorter_than_the_gap_calls_on_reset_at_the_current_position() -> None:
    async def scenario() -> None:
        assert REDIS_URL, "REDIS_PORT is set"
        env = {"REDIS_URL": REDIS_URL, "HISTORY_SIZE": "3"}
        first, second = await Server.start(env=env), await Server.start(env=env)
        proxy = await Proxy(first.port).start()
        recorder = await Recorder(proxy.url, unique_project("short-history"), **FAST).start()
        try:
            assert await publish(first.port, recorder.project_id, {"n": 0})
            await wait_for("the first message", lambda: recorder.received == [0])
            await first.stop()  # the proxy still sends the subscriber there: it stays away
            for n in range(1, 10):
                assert await publish(second.port, recorder.project_id, {"n": n})
            proxy.target = second.port
            await wait_for("the reset", lambda: len(recorder.resets) == 1)
            position = recorder.resets[0].position
            assert position is not None and position.offset == 10, "the reset tells the current position"
            assert await publish(second.port, recorder.project_id, {"n": 10})
            await wait_for("the message after the reset", lambda: len(recorder.received) == 2)
            assert recorder.received == [0, 10], "what the history no longer held is not replayed"
        finally:
            await recorder.stop()
            proxy.close()
            first.kill()
            second.kill()

    asyncio.run(scenario())


def test_resume_larger_than_the_outbound_queue_is_replayed_whole_without_a_reconnect_loop() -> None:
    """600 publications of 2 KB missed (more than the server's 1 MiB outbound queue)."""

    async def scenario() -> None:
        server = await Server.start()
        proxy = await Proxy(server.port).start()
        recorder = await Recorder(proxy.url, unique_project("long-resume"), **FAST).start()
        try:
            assert await publish(server.port, recorder.project_id, {"n": 0})
            await wait_for("the first message", lambda: len(recorder.received) == 1)
            proxy.refuse_until = float("inf")  # away until the 600 are published
            proxy.cut()
            await wait_for("the disconnection", lambda: recorder.client.state is ConnectionState.DISCONNECTED)
            pad = "x" * 2000
            for n in range(1, 601):
                assert await publish(server.port, recorder.project_id, {"n": n, "pad": pad})
            reopened = time.monotonic()
            proxy.refuse_until = 0.0
            await wait_for("every message", lambda: len(recorder.received) >= 601)
            await asyncio.sleep(0.3)  # a duplicate, or a close of the resumed connection, would show now
            assert recorder.received == list(range(601)), "every message once, in order"
            assert recorder.resets == [], "the history covered the gap: no reset"
            resumed_at = next(
                at for at, change in recorder.states if change.state is ConnectionState.CONNECTED and at >= reopened
            )
            closed_since = [
                change.code
                for at, change in recorder.states
                if change.state is ConnectionState.DISCONNECTED and at > resumed_at
            ]
            assert closed_since == [], f"the resumed connection stays open, no reconnect loop: {closed_since}"
            assert recorder.client.state is ConnectionState.CONNECTED
        finally:
            await recorder.stop()
            proxy.close()
            server.kill()

    asyncio.run(scenario())


def test_upgrade_refused_while_the_server_drains_backs_off_until_the_next_one() -> None:
    async def scenario() -> None:
        # Another connection's forward, stuck on a failing queue, keeps the server draining for
        # FORWARD_DEADLINE_SECS after this client was told to go: its upgrades get HTTP 503.
        env = {"DRAIN_SECONDS": "1", "FORWARD_DEADLINE_SECS": "3"}
        server = await Server.start(env=env, prepare=failing_dev_queue)
        states: list[StateChange] = []
        client = Client(server.url, restart_delay_max=0.1, backoff_base=0.1, backoff_max=0.3, on_state=states.append)
        try:
            await client.connect()
            async with connect(server.url) as other:
                await other.send(json.dumps({"action": "forward", "type": "dev", "project_id": "p", "data": None}))
                await asyncio.sleep(0.1)
                stopped = asyncio.create_task(server.stop())
                await wait_for("an upgrade refused with 503", lambda: any("HTTP 503" in c.reason for c in states))
            await stopped
            server = await Server.start(port=server.port)
            await wait_for("the reconnection", lambda: client.state is ConnectionState.CONNECTED)
            lost = [change for change in states if change.state is ConnectionState.DISCONNECTED]
            assert lost[0].code == 1012
            assert all(change.code == 1006 for change in lost[1:])
            for attempt, change in enumerate(lost[1:]):
                assert change.reconnect_in is not None and change.reconnect_in <= min(0.3, 0.1 * 2**attempt)
        finally:
            await client.close()
            server.kill()

    asyncio.run(scenario())


def test_token_refreshed_across_expiries_on_the_same_connection() -> None:
    async def scenario() -> None:
        server = await Server.start(env={"JWT_SECRET": JWT_SECRET, "JWT_LEEWAY_SECS": "0"})
        project_id = unique_project("refresh")
        minted: list[str] = []

        async def get_token() -> str:
            minted.append(await asyncio.to_thread(mint_token, project_id, 3))
            return minted[-1]

        recorder = await Recorder(server.url, project_id, get_token=get_token).start()
        try:
            await asyncio.sleep(7)  # past two expiries of a 3 s token
            assert await publish(server.port, project_id, {"n": 0})
            await wait_for("the message after the expiries", lambda: recorder.received == [0])
            assert len(minted) >= 3, f"refreshed before each expiry ({len(minted)} tokens)"
            assert [change.state for _, change in recorder.states] == [
                ConnectionState.CONNECTING,
                ConnectionState.CONNECTED,
            ], "never disconnected"
        finally:
            await recorder.stop()
            server.kill()

    asyncio.run(scenario())


def test_token_expired_3005_reconnects_with_a_fresh_token_and_resumes() -> None:
    async def scenario() -> None:
        server = await Server.start(env={"JWT_SECRET": JWT_SECRET, "JWT_LEEWAY_SECS": "0"})
        project_id = unique_project("expired")
        first = mint_token(project_id, 2)
        calls = 0

        def get_token() -> str:
            # The identity provider hands back the same (expiring) token at refresh time.
            nonlocal calls
            calls += 1
            return first if calls <= 2 else mint_token(project_id, 60)

        recorder = await Recorder(server.url, project_id, get_token=get_token, backoff_base=0.1).start()
        try:
            assert await publish(server.port, project_id, {"n": 0})
            await wait_for("the 3005 close", lambda: 3005 in recorder.codes(ConnectionState.DISCONNECTED), 6)
            await wait_for("the reconnection", lambda: recorder.states[-1][1].state is ConnectionState.CONNECTED)
            assert await publish(server.port, project_id, {"n": 1})
            await wait_for("the message after the reconnection", lambda: len(recorder.received) == 2)
            assert recorder.received == [0, 1]
            assert recorder.resets == []
        finally:
            await recorder.stop()
            server.kill()

    asyncio.run(scenario())


def test_invalid_token_3500_is_retried_once_then_the_client_stops() -> None:
    async def scenario() -> None:
        server = await Server.start(env={"JWT_SECRET": JWT_SECRET})
        states: list[StateChange] = []
        client = Client(server.url, get_token=lambda: "not-a-token", backoff_base=0.05, on_state=states.append)
        try:
            with pytest.raises(RequestError) as refused:
                await until(client.connect())
            assert refused.value.code == "unauthorized"
            assert client.state is ConnectionState.CLOSED
            assert [change.state for change in states if change.code == 3500] == [
                ConnectionState.DISCONNECTED,
                ConnectionState.CLOSED,
            ]
        finally:
            await client.close()
            server.kill()

    asyncio.run(scenario())


def disconnections(states: list[StateChange]) -> list[StateChange]:
    return [change for change in states if change.state is ConnectionState.DISCONNECTED]


def test_get_token_that_raises_is_named_in_the_disconnected_state_and_on_error() -> None:
    async def scenario() -> None:
        states: list[StateChange] = []
        errors: list[Exception] = []

        def get_token() -> str:
            raise OSError("identity provider unreachable")

        client = Client(
            "ws://127.0.0.1:9/ws", get_token=get_token, backoff_base=0.02, on_state=states.append, on_error=errors.append
        )
        connecting = asyncio.create_task(client.connect())
        try:
            await wait_for("two attempts", lambda: len(disconnections(states)) >= 2)
            assert {(change.code, change.reason) for change in disconnections(states)} == {
                (1006, "token_unavailable: get_token failed: identity provider unreachable")
            }
            assert isinstance(errors[0], RequestError) and errors[0].code == "token_unavailable"
        finally:
            await client.close()
        with pytest.raises(RequestError):
            await connecting

    asyncio.run(scenario())


def test_forward_confirmed_and_refused_codes() -> None:
    async def scenario() -> None:
        server = await Server.start(env={"JWT_SECRET": JWT_SECRET})
        allowed = unique_project("fwd")
        try:
            async with Client(server.url, token=mint_token(allowed)) as client:
                sqs_id = await client.forward("dev", allowed, {"task": "fix the login"}, message_id="m-1")
                assert sqs_id.startswith("local-")
                with pytest.raises(RequestError) as unknown:
                    await client.forward("fly", allowed, {})
                assert unknown.value.code == "unknown_message_type"
                with pytest.raises(RequestError) as forbidden:
                    await client.forward("dev", "not-in-the-token", {})
                assert forbidden.value.code == "forbidden"
                with pytest.raises(RequestError) as no_scope:
                    await client.publish(allowed, "status", {})
                assert no_scope.value.code == "forbidden"
                assert (await client.ping())["type"] == "pong"
        finally:
            server.kill()

    asyncio.run(scenario())


def test_forward_failed_names_the_message_when_the_queue_cannot_take_it() -> None:
    async def scenario() -> None:
        server = await Server.start(env={"FORWARD_DEADLINE_SECS": "1"}, prepare=failing_dev_queue)
        try:
            async with Client(server.url) as client:
                with pytest.raises(RequestError) as failed:
                    await client.forward("dev", "failing", {"n": 1}, message_id="doomed")
                assert failed.value.code == "forward_failed"
                assert failed.value.message_id == "doomed"
                assert (await client.forward("qa", "failing", {"n": 2})).startswith("local-"), "other queues work"
        finally:
            server.kill()

    asyncio.run(scenario())


def test_frame_over_max_frame_bytes_1009_fails_the_request_and_the_client_reconnects() -> None:
    async def scenario() -> None:
        server = await Server.start(env={"MAX_FRAME_BYTES": "4096"})
        states: list[StateChange] = []
        try:
            async with Client(server.url, backoff_base=0.05, on_state=states.append) as client:
                with pytest.raises(RequestError) as too_big:
                    await client.forward("dev", "big", "x" * 8192)
                assert too_big.value.code == "message_too_big"
                assert next(c.code for c in states if c.state is ConnectionState.DISCONNECTED) == 1009
                assert (await client.ping())["type"] == "pong", "reconnected"
            local = Client(server.url, max_frame_bytes=4096)
            with pytest.raises(RequestError) as refused:
                await local.forward("dev", "big", "x" * 8192)
            assert refused.value.code == "message_too_big", "refused before sending"
        finally:
            server.kill()

    asyncio.run(scenario())


def test_forward_busy_when_too_many_in_flight() -> None:
    async def scenario() -> None:
        server = await Server.start(env={"MAX_INFLIGHT_PER_CONNECTION": "1"})
        try:
            async with Client(server.url) as client:
                results = await asyncio.gather(
                    *(client.forward("qa", "busy-test", {"n": n}) for n in range(20)), return_exceptions=True
                )
            codes = {result.code if isinstance(result, RequestError) else "confirmed" for result in results}
            assert codes == {"confirmed", "busy"}, results
        finally:
            server.kill()

    asyncio.run(scenario())


def test_forward_made_while_the_server_is_down_is_sent_once_it_is_back() -> None:
    async def scenario() -> None:
        server = await Server.start()
        client = Client(server.url, **FAST)
        try:
            await client.connect()
            await server.stop()
            await wait_for("the disconnection", lambda: client.state is ConnectionState.DISCONNECTED)
            forwarded = asyncio.create_task(client.forward("ops", "down-test", {"deploy": True}, message_id="while-down"))
            await asyncio.sleep(0.3)
            server = await Server.start(port=server.port)
            assert (await until(forwarded)).startswith("local-")
            published = await client.publish("down-test", "status", {"ok": True})
            assert published["type"] == "publish_confirmed", "an open loopback server lets a connection publish"
            assert published["offset"] == 1
        finally:
            await client.close()
            server.kill()

    asyncio.run(scenario())


def test_backoff_waits_are_random_within_their_bound_and_as_announced() -> None:
    async def scenario() -> None:
        changes: list[tuple[float, StateChange]] = []
        client = Client(
            f"ws://127.0.0.1:{free_port()}/ws",  # nothing listens there
            backoff_base=0.1,
            backoff_max=0.4,
            on_state=lambda change: changes.append((time.monotonic(), change)),
        )
        connecting = asyncio.create_task(client.connect())
        try:
            await wait_for(
                "seven attempts", lambda: sum(c.state is ConnectionState.CONNECTING for _, c in changes) >= 7
            )
        finally:
            await client.close()
            with pytest.raises(RequestError):
                await connecting
        waits = [(at, index, change) for index, (at, change) in enumerate(changes) if change.state is ConnectionState.DISCONNECTED]
        for attempt, (at, index, change) in enumerate(waits[:6]):
            bound = min(0.4, 0.1 * 2**attempt)
            assert change.code == 1006
            assert change.reconnect_in is not None and 0 <= change.reconnect_in <= bound
            waited = changes[index + 1][0] - at
            assert change.reconnect_in - 0.005 <= waited <= change.reconnect_in + 0.5

    asyncio.run(scenario())
    for attempt in range(40):
        assert 0 <= backoff_delay(attempt, 0.5, 30) <= min(30, 0.5 * 2**attempt)


def user_ids(presence: Presence) -> list[Optional[str]]:
    return sorted(member.user_id or "" for member in presence.clients)


class PresenceLog:
    """A subscription with join_leave: the user ids that joined and left, and the lists handed over."""

    def __init__(self, client: Client, project_id: str) -> None:
        self.joins: list[Optional[str]] = []
        self.leaves: list[Optional[str]] = []
        self.lists: list[list[Optional[str]]] = []
        self.subscription = client.subscribe(
            project_id,
            join_leave=True,
            on_join=self._joined,
            on_leave=lambda event: self.leaves.append(event.client.user_id),
            on_presence=lambda presence: self.lists.append(user_ids(presence)),
        )

    def _joined(self, event: JoinLeave) -> None:
        assert event.type == "join"
        self.joins.append(event.client.user_id)


def test_presence_join_and_leave_events_presence_stats_and_forbidden() -> None:
    async def scenario() -> None:
        server = await Server.start(env={"JWT_SECRET": JWT_SECRET})
        project_id = unique_project("p-members")
        alice = Client(server.url, token=mint_token("p-*", 600, sub="alice"))
        bob = Client(server.url, token=mint_token("p-*", 600, sub="bob"))
        try:
            await until(alice.connect())
            seen = PresenceLog(alice, project_id)
            await until(seen.subscription.ready())
            await wait_for("alice's first member list", lambda: seen.lists)
            assert seen.lists == [["alice"]], "after subscribing: the list, herself in it"
            await until(bob.connect())
            await until(bob.subscribe(project_id).ready())
            await wait_for("bob's join", lambda: seen.joins)
            assert seen.joins == ["bob"]
            presence = await bob.presence(project_id)
            assert presence.project_id == project_id
            assert user_ids(presence) == ["alice", "bob"]
            assert not presence.truncated and presence.num_clients == 2 and presence.num_users == 2
            assert all(member.connection_id and member.connected_at for member in presence.clients)
            stats = await alice.presence_stats(project_id)
            assert (stats.num_clients, stats.num_users) == (2, 2)
            for ask in (alice.presence, alice.presence_stats):
                with pytest.raises(RequestError) as forbidden:
                    await ask("q-not-in-the-token")
                assert forbidden.value.code == "forbidden"
            await bob.close()
            await wait_for("bob's leave", lambda: seen.leaves)
            assert seen.leaves == ["bob"]
            assert seen.joins == ["bob"], "a connection is not told about itself"
        finally:
            await alice.close()
            await bob.close()
            server.kill()

    asyncio.run(scenario())


def test_presence_after_a_restart_hands_over_the_members_missed_while_away() -> None:
    async def scenario() -> None:
        assert REDIS_URL, "REDIS_PORT is set (scripts/checks/client-tests.sh starts Redis)"
        env = {"REDIS_URL": REDIS_URL, "JWT_SECRET": JWT_SECRET}
        restarting = await Server.start(env=env)
        other = await Server.start(env=env)  # another task of the same service, up throughout
        project_id = unique_project("p-reconcile")
        alice = Client(restarting.url, token=mint_token("p-*", 600, sub="alice"), **FAST)
        bob = Client(other.url, token=mint_token("p-*", 600, sub="bob"))
        carol = Client(other.url, token=mint_token("p-*", 600, sub="carol"))
        try:
            await until(bob.connect())
            await until(bob.subscribe(project_id).ready())
            await until(alice.connect())
            seen = PresenceLog(alice, project_id)
            await wait_for("alice's first member list", lambda: seen.lists)
            assert seen.lists == [["alice", "bob"]]
            await restarting.stop()
            # Carol joins while alice is away: that join event is never sent to her.
            await until(carol.connect())
            await until(carol.subscribe(project_id).ready())
            restarting = await Server.start(port=restarting.port, env=env)
            await wait_for("the member list after the resubscribe", lambda: len(seen.lists) == 2)
            assert {"bob", "carol"} <= set(seen.lists[1]), f"after the restart: {seen.lists[1]}"
            assert "carol" not in seen.joins, "the join made while away was not announced: the list tells it"
        finally:
            for client in (alice, bob, carol):
                await client.close()
            restarting.kill()
            other.kill()

    asyncio.run(scenario())


# With a publish key configured, a plain connection is a client and gets the client budget.
LIMITED = {"PUBLISH_API_KEYS": "k", "CLIENT_RATE_PER_SECOND": "2", "CLIENT_RATE_BURST": "2"}


def test_rate_limited_request_raises_with_retry_after_and_a_refused_forward_is_sent_again_once() -> None:
    async def scenario() -> None:
        server = await Server.start(env=LIMITED)
        try:
            async with Client(server.url) as client:
                pings = await asyncio.gather(*(client.ping() for _ in range(4)), return_exceptions=True)
                refused = [result for result in pings if isinstance(result, RequestError)]
                assert len(refused) >= 2, f"over a burst of 2: {pings}"
                assert all(error.code == "rate_limited" and (error.retry_after_ms or 0) > 0 for error in refused)
                # The budget is spent: the forwards are refused first, then sent again as it refills.
                ids = [f"limited-{n}" for n in range(4)]
                started = time.monotonic()
                sqs_ids = await until(
                    asyncio.gather(*(client.forward("dev", "limited", {"n": n}, message_id=ids[n]) for n in range(4)))
                )
                assert all(sqs_id.startswith("local-") for sqs_id in sqs_ids)
                assert time.monotonic() - started >= 1.0, "four forwards at 2/s from an empty budget were held back"
            lines = (server.data_dir / "spool" / "dev.jsonl").read_text().splitlines()
            assert sorted(json.loads(line)["body"]["message_id"] for line in lines) == ids, "each queued once"
        finally:
            server.kill()

    asyncio.run(scenario())


def test_too_many_connections_3504_stops_the_client() -> None:
    async def scenario() -> None:
        server = await Server.start(env={"JWT_SECRET": JWT_SECRET, "MAX_CONNECTIONS_PER_USER": "1"})
        token = mint_token("p-*", 600, sub="dave")
        states: list[StateChange] = []
        first = Client(server.url, token=token)
        second = Client(server.url, token=token, backoff_base=0.05, on_state=states.append)
        try:
            await until(first.connect())
            with pytest.raises(RequestError) as refused:
                await until(second.connect())
            assert refused.value.code == "too_many_connections"
            await asyncio.sleep(0.5)  # a reconnect loop would show now
            assert second.state is ConnectionState.CLOSED
            assert [(change.state, change.code) for change in states] == [
                (ConnectionState.CONNECTING, None),
                (ConnectionState.CLOSED, 3504),
            ]
            assert (await first.ping())["type"] == "pong", "the first connection is untouched"
        finally:
            await first.close()
            await second.close()
            server.kill()

    asyncio.run(scenario())


def test_abusive_client_3509_waits_a_minute_before_reconnecting() -> None:
    async def scenario() -> None:
        server = await Server.start(env={**LIMITED, "CLIENT_RATE_CLOSE_AFTER": "3"})
        states: list[StateChange] = []
        client = Client(server.url, on_state=states.append)
        try:
            await until(client.connect())
            # One ping after another, ignoring rate_limited (ten at once: see the JavaScript test).
            codes: list[str] = []
            while len(codes) < 10 and "disconnected" not in codes:
                try:
                    await client.ping(timeout=3)
                    codes.append("pong")
                except RequestError as error:
                    codes.append(error.code)
            assert "rate_limited" in codes, codes
            closed = await wait_for("the 3509 close", lambda: next((c for c in states if c.code == 3509), None))
            assert closed.state is ConnectionState.DISCONNECTED
            assert closed.reconnect_in is not None and closed.reconnect_in >= 60, closed
        finally:
            await client.close()
            server.kill()

    asyncio.run(scenario())
