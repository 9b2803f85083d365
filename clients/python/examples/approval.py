"""An approval end to end, runnable against a gateway without AWS (its queues are the local spool):

    WEBSOCKET_HOST=127.0.0.1 cargo run --release     # from the repository root, in another shell
    python clients/python/examples/approval.py       # with agenticai_websocket importable

Environment: GATEWAY_URL (ws://127.0.0.1:8080/ws), SPOOL_DIR (data/spool: the gateway's
DATA_DIR/spool), PROJECT_ID (proj-42).

The Ops agent asks "deploy?", a person (a viewer of the project) approves, and the agent reads the
decision from its queue. With SQS the same body arrives by ReceiveMessage on SQS_QUEUE_URL_OPS,
with the message attribute Kind=approval_decision.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

from agenticai_websocket import Approval, Client, RequestError

URL = os.environ.get("GATEWAY_URL", "ws://127.0.0.1:8080/ws")
OPS_QUEUE = Path(os.environ.get("SPOOL_DIR", "data/spool")) / "ops.jsonl"
PROJECT_ID = os.environ.get("PROJECT_ID", "proj-42")


async def decide(approval: Approval) -> None:
    try:
        await approval.decide("approve", "green build, ship it")
    except RequestError as error:
        # already_decided: someone was faster (error.decision, error.decided_by); not_found: expired.
        print(f"person's decision lost: {error.code} {error.decision or ''}")


async def decision_for(approval_id: str) -> dict[str, Any]:
    """The decision, from the agent's queue: at least once (drop a repeat by approval_id);
    "expired" when nobody answered by expires_at."""
    while True:
        lines = OPS_QUEUE.read_text().splitlines() if OPS_QUEUE.exists() else []
        for line in lines:
            body = json.loads(line)["body"]
            if body.get("kind") == "approval_decision" and body.get("approval_id") == approval_id:
                return dict(body)
        await asyncio.sleep(0.1)


async def main() -> None:
    decisions: set[asyncio.Task[None]] = set()

    def on_requested(approval: Approval) -> None:
        # Called again after each reconnect while it is pending.
        print(f"person sees: {approval.data['title']} [{'/'.join(approval.options)}] until {approval.expires_at}")
        task = asyncio.ensure_future(decide(approval))
        decisions.add(task)
        task.add_done_callback(decisions.discard)

    def on_resolved(approval: Approval) -> None:
        assert approval.resolution is not None
        print(f"person sees it resolved: {approval.resolution.decision}")

    async with Client(URL) as person, Client(URL) as agent:
        await person.subscribe(PROJECT_ID, on_approval_requested=on_requested, on_approval_resolved=on_resolved).ready()
        asked = await agent.request_approval(
            PROJECT_ID, agent="ops", data={"title": "Deploy build 142 to prod?"}, options=["approve", "reject"], expires_in_secs=600
        )
        body = await decision_for(asked["approval_id"])
        decided_by = body.get("user_id") or "anonymous"
        print(f"agent got: {body['decision']} ({body.get('comment') or 'no comment'}) by {decided_by} for \"{body['data']['title']}\"")


asyncio.run(main())
