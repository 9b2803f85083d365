"""Agent control in the Python client against the real gateway binary (local spool mode: the
agents' queues are DATA_DIR/spool/<role>.jsonl, so cancels and decisions are confirmed without
AWS): cancel of a streaming agent, and approvals as the viewers and the agent see them."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytest

from agenticai_websocket import Approval, Client, ConnectionState, RequestError, StateChange, StreamUpdate
from harness import JWT_SECRET, Proxy, Server, mint_token, queue_messages, unique_project, until, wait_for

FAST: dict[str, Any] = {"backoff_base": 0.05, "backoff_max": 0.2}


class Viewer:
    """A client following one project, recording its approval callbacks, stream updates and states."""

    def __init__(self, url: str, project_id: str, **options: Any) -> None:
        self.requested: list[Approval] = []
        self.resolved: list[Approval] = []
        self.stream_updates: list[tuple[str, bool, str]] = []  # type, cancel_requested, status
        self.states: list[ConnectionState] = []
        self.client = Client(url, on_state=self._state, **{**FAST, **options})
        self.subscription = self.client.subscribe(
            project_id,
            on_approval_requested=self.requested.append,
            on_approval_resolved=self.resolved.append,
            on_stream=self._stream,
        )

    def _state(self, change: StateChange) -> None:
        self.states.append(change.state)

    def _stream(self, update: StreamUpdate) -> None:
        self.stream_updates.append((update.type, update.stream.cancel_requested, update.stream.status))

    def connections(self) -> int:
        return self.states.count(ConnectionState.CONNECTED)

    async def start(self) -> "Viewer":
        await until(self.client.connect())
        await until(self.subscription.ready())
        return self


def test_cancel_one_queue_message_then_viewers_see_cancel_requested_and_the_end_cancelled() -> None:
    async def scenario() -> None:
        server = await Server.start()
        project_id = unique_project("cancel")
        viewer = await Viewer(server.url, project_id).start()
        agent, person = Client(server.url, **FAST), Client(server.url, **FAST)
        try:
            await agent.connect()
            await person.connect()
            stream = await agent.start_stream(project_id, agent="dev", event="answer")
            await stream.append("Working on the wrong branch")
            message_id = await person.cancel(project_id, stream.stream_id, "wrong branch")
            assert message_id
            assert await person.cancel(project_id, stream.stream_id, "again") == message_id, "a repeat: the first one's id"
            cancels = [message for message in queue_messages(server, "dev") if message["body"]["kind"] == "cancel"]
            assert len(cancels) == 1, "one queue message for two cancels"
            body, attributes = cancels[0]["body"], cancels[0]["attributes"]
            assert (attributes["Kind"], attributes["MessageId"]) == ("cancel", message_id)
            assert (body["project_id"], body["stream_id"], body["reason"]) == (project_id, stream.stream_id, "wrong branch")
            copy = await wait_for(
                "the viewer's copy asked to stop",
                lambda: (s := viewer.subscription.streams.get(stream.stream_id)) is not None and s.cancel_requested and s,
            )
            assert copy.status == "open", "still open until the agent ends it"
            await stream.end("cancelled")
            await wait_for("the viewer's copy ended", lambda: copy.status == "cancelled")
            assert not copy.cancel_requested
            types = [update[0] for update in viewer.stream_updates]
            assert types[types.index("stream_cancel_requested") :] == ["stream_cancel_requested", "stream_ended"]
            with pytest.raises(RequestError) as refused:
                await person.cancel(project_id, stream.stream_id)
            assert refused.value.code == "stream_ended"

            unattended = await agent.start_stream(project_id, event="note")
            assert await person.cancel(project_id, unattended.stream_id) is None, "no agent, no queue message"
            await wait_for(
                "a stream without an agent, ended at once",
                lambda: (s := viewer.subscription.streams.get(unattended.stream_id)) is not None and s.status == "cancelled",
            )
        finally:
            for client in (viewer.client, agent, person):
                await client.close()
            server.kill()

    asyncio.run(scenario())


def test_a_viewer_that_reconnects_sees_a_pending_approval_again_and_once_decided_never_again() -> None:
    async def scenario() -> None:
        server = await Server.start()
        proxy = await Proxy(server.port).start()
        project_id = unique_project("approval-reconnect")
        viewer = await Viewer(proxy.url, project_id).start()
        agent, decider = Client(server.url, **FAST), Client(server.url, **FAST)

        async def reconnect(count: int) -> None:
            proxy.cut()
            await wait_for(f"reconnection {count}", lambda: viewer.connections() == count + 1)
            await asyncio.sleep(0.3)  # the pending approvals follow the confirmation; a stale one would come now

        try:
            await agent.connect()
            await decider.connect()
            asked = await agent.request_approval(
                project_id, agent="ops", data={"title": "Deploy build 142 to prod?"}, options=["approve", "reject"], expires_in_secs=600
            )
            assert asked["approval_id"] and asked["expires_at"]
            approval: Approval = await wait_for("the approval", lambda: viewer.subscription.approvals.get(asked["approval_id"]))
            assert (approval.agent, approval.data, approval.options, approval.expires_at, approval.resolution) == (
                "ops",
                {"title": "Deploy build 142 to prod?"},
                ["approve", "reject"],
                asked["expires_at"],
                None,
            )
            await reconnect(1)
            assert list(viewer.subscription.approvals) == [asked["approval_id"]], "pending again after the reconnect"
            assert len(viewer.requested) == 2 and viewer.requested[1] is approval, "on_approval_requested again, same object"
            decided = await decider.decide_approval(project_id, asked["approval_id"], "approve", comment="go")
            assert decided["decision"] == "approve"
            await wait_for("the resolution", lambda: len(viewer.resolved) == 1)
            assert viewer.subscription.approvals == {}
            assert approval.resolution is not None
            assert (approval.resolution.decision, approval.resolution.comment) == ("approve", "go")
            await reconnect(2)
            assert viewer.subscription.approvals == {}, "decided: never again"
            assert len(viewer.requested) == 2
        finally:
            for client in (viewer.client, agent, decider):
                await client.close()
            proxy.close()
            server.kill()

    asyncio.run(scenario())


def test_an_approval_resolved_while_the_viewer_was_away_is_gone_after_its_reconnect() -> None:
    async def scenario() -> None:
        server = await Server.start()
        proxy = await Proxy(server.port).start()
        project_id = unique_project("approval-away")
        viewer = await Viewer(proxy.url, project_id).start()
        agent = Client(server.url, **FAST)
        try:
            await agent.connect()
            kept = await agent.request_approval(project_id, agent="ops", data={"title": "kept"})
            gone = await agent.request_approval(project_id, agent="ops", data={"title": "gone"})
            await wait_for("both approvals", lambda: len(viewer.subscription.approvals) == 2)
            proxy.refuse_until = time.monotonic() + 1.0
            proxy.cut()
            await agent.decide_approval(project_id, gone["approval_id"], "reject")
            await wait_for("the reconnection", lambda: viewer.connections() == 2)
            await wait_for("the pending one again", lambda: len(viewer.requested) == 3)
            await asyncio.sleep(0.3)
            assert list(viewer.subscription.approvals) == [kept["approval_id"]]
            resolved = [(approval.approval_id, approval.resolution and approval.resolution.decision) for approval in viewer.resolved]
            assert resolved == [(gone["approval_id"], "reject")], "the resume replayed the resolution"
        finally:
            await viewer.client.close()
            await agent.close()
            proxy.close()
            server.kill()

    asyncio.run(scenario())


def test_two_viewers_deciding_at_once_one_wins_the_other_is_told_the_same_decision() -> None:
    async def scenario() -> None:
        server = await Server.start()
        project_id = unique_project("approval-race")
        alice = await Viewer(server.url, project_id).start()
        bob = await Viewer(server.url, project_id).start()
        agent = Client(server.url, **FAST)
        try:
            await agent.connect()
            asked = await agent.request_approval(project_id, agent="ops", data={"title": "Deploy?"})
            approval_id = asked["approval_id"]
            mine = [await wait_for("the approval", lambda v=v: v.subscription.approvals.get(approval_id)) for v in (alice, bob)]
            outcomes = await asyncio.gather(mine[0].decide("approve", "alice says go"), mine[1].decide("reject"), return_exceptions=True)
            won = [outcome for outcome in outcomes if isinstance(outcome, dict)]
            lost = [outcome for outcome in outcomes if isinstance(outcome, RequestError)]
            assert len(won) == 1 and len(lost) == 1, outcomes
            assert won[0]["type"] == "approval_decided"
            assert (lost[0].code, lost[0].decision) == ("already_decided", won[0]["decision"])
            for viewer in (alice, bob):
                await wait_for("the resolution", lambda v=viewer: len(v.resolved) == 1)
                resolution = viewer.resolved[0].resolution
                assert resolution is not None and resolution.decision == won[0]["decision"], "everybody is told the same winner"
                assert viewer.subscription.approvals == {}
            decisions = [message for message in queue_messages(server, "ops") if message["body"]["approval_id"] == approval_id]
            assert len(decisions) == 1, "one queue message"
            body, attributes = decisions[0]["body"], decisions[0]["attributes"]
            assert (attributes["Kind"], attributes["MessageId"]) == ("approval_decision", won[0]["message_id"])
            assert (body["kind"], body["project_id"], body["decision"], body["data"]) == (
                "approval_decision",
                project_id,
                won[0]["decision"],
                {"title": "Deploy?"},
            )
            with pytest.raises(RequestError) as refused:
                await agent.decide_approval(project_id, "no-such-approval", "approve")
            assert refused.value.code == "not_found"
        finally:
            for client in (alice.client, bob.client, agent):
                await client.close()
            server.kill()

    asyncio.run(scenario())


def test_a_request_naming_its_approval_id_asks_once_however_often_it_is_sent() -> None:
    async def scenario() -> None:
        server = await Server.start()
        project_id = unique_project("approval-named")
        viewer = await Viewer(server.url, project_id).start()
        agent = Client(server.url, **FAST)
        try:
            await agent.connect()
            answers = [
                await agent.request_approval(project_id, agent="ops", data={"title": "Deploy build 143?"}, approval_id="deploy-143")
                for _ in range(2)
            ]
            assert [answer["approval_id"] for answer in answers] == ["deploy-143", "deploy-143"]
            await wait_for("the approval", lambda: "deploy-143" in viewer.subscription.approvals)
            await asyncio.sleep(0.3)  # a second question would be announced now
            assert len(viewer.requested) == 1, "one question"
        finally:
            await viewer.client.close()
            await agent.close()
            server.kill()

    asyncio.run(scenario())


def test_approvals_with_tokens_the_loser_is_told_who_won_and_deciding_needs_the_approve_scope() -> None:
    async def scenario() -> None:
        server = await Server.start(env={"JWT_SECRET": JWT_SECRET})
        project_id = unique_project("p-approval-tokens")

        def token(sub: str, scope: Optional[str]) -> str:
            return mint_token(projects="p-*", ttl=600, sub=sub, scope=scope)

        alice = await Viewer(server.url, project_id, token=token("alice", "subscribe approve")).start()
        bob = await Viewer(server.url, project_id, token=token("bob", "subscribe approve")).start()
        carol = await Viewer(server.url, project_id, token=token("carol", None)).start()
        agent = Client(server.url, token=token("ops-agent", "subscribe publish"), **FAST)
        try:
            await agent.connect()
            asked = await agent.request_approval(project_id, agent="ops", data={"title": "Rotate the keys?"})
            approval_id = asked["approval_id"]
            mine = [await wait_for("the approval", lambda v=v: v.subscription.approvals.get(approval_id)) for v in (alice, bob, carol)]
            assert mine[0].requested_by == "ops-agent"
            with pytest.raises(RequestError) as refused:
                await mine[2].decide("approve")
            assert refused.value.code == "forbidden", "carol's token lacks the approve scope"
            outcomes = await asyncio.gather(mine[0].decide("approve"), mine[1].decide("reject"), return_exceptions=True)
            winner = "alice" if isinstance(outcomes[0], dict) else "bob"
            won = next(outcome for outcome in outcomes if isinstance(outcome, dict))
            loss = next(outcome for outcome in outcomes if isinstance(outcome, RequestError))
            assert (loss.code, loss.decision, loss.decided_by) == ("already_decided", won["decision"], winner)
            for viewer in (alice, bob, carol):
                await wait_for("the resolution", lambda v=viewer: len(v.resolved) == 1)
                resolution = viewer.resolved[0].resolution
                assert resolution is not None and (resolution.decision, resolution.decided_by) == (won["decision"], winner)
            queued = [message for message in queue_messages(server, "ops") if message["body"]["approval_id"] == approval_id]
            assert [message["body"]["user_id"] for message in queued] == [winner], "the agent learns who decided"
        finally:
            for client in (alice.client, bob.client, carol.client, agent):
                await client.close()
            server.kill()

    asyncio.run(scenario())


def test_the_readme_approval_example_runs() -> None:
    async def scenario() -> None:
        server = await Server.start()
        example = Path(__file__).resolve().parent.parent / "examples" / "approval.py"
        env = {
            **os.environ,
            "GATEWAY_URL": server.url,
            "SPOOL_DIR": str(server.data_dir / "spool"),
            "PROJECT_ID": unique_project("example"),
            "PYTHONPATH": str(example.parent.parent),
        }
        try:
            run = await asyncio.create_subprocess_exec(sys.executable, str(example), env=env, stdout=asyncio.subprocess.PIPE)
            stdout, _ = await until(run.communicate(), 20)
            assert run.returncode == 0
            output = stdout.decode()
            assert "person sees: Deploy build 142 to prod? [approve/reject]" in output
            assert 'agent got: approve (green build, ship it) by anonymous for "Deploy build 142 to prod?"' in output
        finally:
            server.kill()

    asyncio.run(scenario())
