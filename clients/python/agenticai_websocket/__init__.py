"""Client of the AgenticAI WebSocket gateway (docs/protocol.md): reconnects, resumes its
subscriptions and refreshes its token on its own.

    async with Client("wss://example.com/ws", get_token=fetch_token) as client:
        subscription = client.subscribe("proj-42", on_reset=reload)
        sqs_id = await client.forward("dev", "proj-42", {"task": "fix the login"})
        async for message in subscription:
            print(message.event, message.data)

An agent streams its output with ``stream = await client.start_stream("proj-42", agent="dev")``,
``stream.append(text)`` and ``await stream.end()``; a subscription made with ``on_stream`` keeps
each stream's text in ``subscription.streams`` (README.md, "Agent streams"). ``client.cancel()``
asks a stream's agent to stop; ``subscription.approvals`` holds the project's pending approvals,
each with ``await approval.decide("approve")``; an agent asks with ``client.request_approval()``
and gets the decision in its queue (README.md, "Cancel and approvals").
"""

from .client import (
    AgentStream,
    Approval,
    ApprovalResolution,
    Client,
    ConnectionState,
    JoinLeave,
    Message,
    Position,
    Presence,
    PresenceClient,
    PresenceStats,
    RequestError,
    Reset,
    StateChange,
    Stream,
    StreamUpdate,
    Subscription,
    backoff_delay,
    utf8_length,
)

__all__ = [
    "AgentStream",
    "Approval",
    "ApprovalResolution",
    "Client",
    "ConnectionState",
    "JoinLeave",
    "Message",
    "Position",
    "Presence",
    "PresenceClient",
    "PresenceStats",
    "RequestError",
    "Reset",
    "StateChange",
    "Stream",
    "StreamUpdate",
    "Subscription",
    "backoff_delay",
    "utf8_length",
]
