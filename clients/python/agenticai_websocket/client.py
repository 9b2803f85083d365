"""The client: one connection at a time, replaced on its own.

A :class:`Client` authenticates with the first frame, refreshes its token at ``refresh_at``,
reconnects with exponential backoff and full jitter (a short random delay after 1012), resumes
every subscription from its last offset and epoch, and re-sends forwards not yet confirmed with
their ``message_id``, or refused with ``rate_limited`` (not executed: sent again after
``retry_after_ms``). Join/leave events are at most once, so after every (re)subscribe with
``join_leave`` it asks ``presence`` and hands the fresh member list to ``on_presence``.
Agent streams: an :class:`AgentStream` sends appends one at a time, each with ``at`` (the length
before it), so one re-sent after a reconnect is applied once; a :class:`Subscription` keeps a
copy of each of its project's streams, replaced by every snapshot and grown by appends that
continue it.
Agent control: :meth:`Client.cancel` asks a stream's agent to stop (re-sent across reconnects:
the server answers a repeat with the first cancel's message id); a :class:`Subscription` keeps
its project's pending approvals, emptied at every (re)subscribe confirmation and filled again by
the ``approval_requested`` frames that follow it, so one resolved while away does not linger.
What it does on each close code: README.md, "Close codes".
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import itertools
import json
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, TypeVar, Union

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

NORMAL = 1000
ABNORMAL = 1006  # no close frame: the network, a refused upgrade, a timeout
PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007  # a text frame that is not UTF-8
MESSAGE_TOO_BIG = 1009
SERVICE_RESTART = 1012
TOKEN_EXPIRED = 3005
INVALID_TOKEN = 3500
AUTHENTICATION_TIMEOUT = 3502
TOO_MANY_CONNECTIONS = 3504
ABUSIVE_CLIENT = 3509

# An append frame carries at most this much text (more goes in the next one), so a batch of
# queued appends stays well under the server's MAX_FRAME_BYTES once JSON-escaped.
APPEND_BATCH_BYTES = 64 * 1024
STREAM_FRAMES = frozenset({"stream_started", "stream_append", "stream_snapshot", "stream_ended", "stream_cancel_requested"})
APPROVAL_FRAMES = frozenset({"approval_requested", "approval_resolved"})
# How long an AgentStream waits before sending an append refused with ``busy`` (the connection
# had too many requests in flight: not executed) again.
BUSY_RETRY = 0.1

T = TypeVar("T")
TokenSource = Callable[[], Union[Optional[str], Awaitable[Optional[str]]]]


class ConnectionState(str, enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # lost; a reconnect is scheduled
    CLOSED = "closed"  # for good: close() was called, or a close code says not to reconnect


@dataclass(frozen=True)
class StateChange:
    state: ConnectionState
    code: Optional[int] = None  # on DISCONNECTED and CLOSED; 1006 when there was no close frame
    reason: str = ""
    reconnect_in: Optional[float] = None  # on DISCONNECTED: seconds until the next attempt
    attempt: int = 0  # on CONNECTING: failed attempts since the last connection


@dataclass(frozen=True)
class Position:
    offset: int
    epoch: str


@dataclass(frozen=True)
class Message:
    """A publication pushed to a project's subscribers."""

    id: str
    project_id: str
    event: Optional[str]
    data: Any
    published_at: str
    offset: Optional[int]  # None only on a publication made while the server's Redis was down
    epoch: Optional[str]

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> "Message":
        return cls(
            id=frame.get("id", ""),
            project_id=frame["project_id"],
            event=frame.get("event"),
            data=frame.get("data"),
            published_at=frame.get("published_at", ""),
            offset=frame.get("offset"),
            epoch=frame.get("epoch"),
        )


@dataclass(frozen=True)
class PresenceClient:
    """A connection subscribed to a project, as ``presence`` lists it and join/leave events name it."""

    connection_id: str
    user_id: Optional[str]  # the token's sub; None for an anonymous connection
    connected_at: str  # ISO 8601 UTC
    info: Any  # the token's info claim; None without one

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> "PresenceClient":
        return cls(
            connection_id=frame.get("connection_id", ""),
            user_id=frame.get("user_id"),
            connected_at=frame.get("connected_at", ""),
            info=frame.get("info"),
        )


@dataclass(frozen=True)
class PresenceStats:
    project_id: str
    num_clients: int
    num_users: int  # distinct user ids (anonymous connections are clients, not users)


@dataclass(frozen=True)
class Presence:
    """Who is subscribed to a project: at most 1,000 members, ``truncated`` when there are more."""

    project_id: str
    clients: list[PresenceClient]
    num_clients: int
    num_users: int
    truncated: bool

    @classmethod
    def from_frame(cls, frame: dict[str, Any]) -> "Presence":
        return cls(
            project_id=frame["project_id"],
            clients=[PresenceClient.from_frame(member) for member in frame.get("clients", [])],
            num_clients=frame.get("num_clients", 0),
            num_users=frame.get("num_users", 0),
            truncated=frame.get("truncated", False),
        )


@dataclass(frozen=True)
class JoinLeave:
    """Another connection subscribed to (``join``) or stopped following (``leave``) the project.
    At most once: reconcile with the lists :attr:`Subscription.on_presence` receives."""

    type: str  # "join" or "leave"
    project_id: str
    client: PresenceClient


@dataclass(frozen=True)
class Reset:
    """The server could not replay what was missed: reload from the source of truth."""

    project_id: str
    position: Optional[Position]  # the project's current position, when the server could read it


def utf8_length(text: str) -> int:
    """The length of ``text`` in UTF-8 bytes, what stream lengths count (a lone surrogate, sent
    as U+FFFD, counts 3)."""
    return len(text.encode("utf-8", "surrogatepass"))


@dataclass
class Stream:
    """A subscriber's copy of one agent stream (:attr:`Subscription.streams`), updated in place:
    exact once snapshots (which replace it) and appends (which continue it) apply."""

    stream_id: str
    project_id: str
    text: str = ""
    length: int = 0  # in UTF-8 bytes
    status: str = "open"  # or completed, failed, cancelled, abandoned
    agent: Optional[str] = None
    event: Optional[str] = None
    data: Any = None  # the start's
    started_at: Optional[str] = None
    result: Any = None  # the end's data (a live end's ``data``, a snapshot's ``result``)
    # True when the copy missed text (an append that does not continue it: not expected); it
    # stays as it is until the next snapshot, which every resubscribe brings.
    stale: bool = False
    # True from a stream_cancel_requested (someone asked the agent to stop) until the stream ends.
    cancel_requested: bool = False

    def _describe(self, frame: dict[str, Any]) -> None:
        self.agent = frame.get("agent")
        self.event = frame.get("event")
        self.data = frame.get("data")
        self.started_at = frame.get("started_at")


@dataclass(frozen=True)
class StreamUpdate:
    """What changed a stream: its ``type`` is the frame's (``stream_started``, ``stream_append``,
    ``stream_snapshot``: the copy was replaced, ``stream_cancel_requested``: someone asked the
    agent to stop, ``user_id`` who; ``stream_ended``); ``text`` what an append added."""

    type: str
    stream: Stream
    text: str = ""
    user_id: Optional[str] = None


@dataclass(frozen=True)
class ApprovalResolution:
    """How an approval was resolved (``approval_resolved``)."""

    decision: str  # one of the request's options, or "expired" when nobody answered in time
    decided_by: Optional[str]  # the decider's user id; None when anonymous or expired
    comment: Optional[str]
    decided_at: Optional[str]


class Approval:
    """A question an agent asked the project's people (``approval_requested``), as a
    :class:`Subscription` keeps it in ``approvals`` until it is resolved; :meth:`decide` answers
    it, and exactly one decision wins."""

    def __init__(self, client: "Client", frame: dict[str, Any]) -> None:
        self._client = client
        self.approval_id: str = frame["approval_id"]
        self.project_id: str = frame["project_id"]
        self.agent: Optional[str] = frame.get("agent")  # whose queue gets the decision
        self.data: Any = frame.get("data")  # the agent's question ({"title": ...})
        self.options: list[str] = list(frame.get("options") or [])
        self.expires_at: Optional[str] = frame.get("expires_at")
        self.requested_at: Optional[str] = frame.get("requested_at")
        self.requested_by: Optional[str] = frame.get("requested_by")
        self.resolution: Optional[ApprovalResolution] = None  # None while pending

    def __repr__(self) -> str:
        return f"Approval({self.approval_id!r}, agent={self.agent!r}, data={self.data!r}, resolution={self.resolution!r})"

    async def decide(self, decision: str, comment: Optional[str] = None, *, timeout: Optional[float] = None) -> dict[str, Any]:
        """Answers with one of ``options``; returns the ``approval_decided`` answer once the agent's
        queue has the decision. Raises :class:`RequestError`: ``already_decided`` (someone else won:
        its ``decision`` and ``decided_by``), ``not_found`` (unknown or expired),
        ``invalid_request`` (not an option), ``forbidden`` (no ``approve`` scope),
        ``disconnected`` (its fate is unknown: not re-sent)."""
        return await self._client.decide_approval(self.project_id, self.approval_id, decision, comment=comment, timeout=timeout)


class RequestError(Exception):
    """A refused request: the server's error ``code``, or one of the client's own (``timeout``,
    ``disconnected``: the connection ended before the answer and the request's fate is unknown,
    ``closed``, ``message_too_big``, ``token_unavailable``)."""

    def __init__(self, code: str, message: str, reply: Optional[dict[str, Any]] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.reply: dict[str, Any] = reply or {}
        self.message_id: Optional[str] = self.reply.get("message_id")
        self.project_id: Optional[str] = self.reply.get("project_id")
        self.retry_after_ms: Optional[int] = self.reply.get("retry_after_ms")
        # On already_decided: the winning decision and who took it (None when anonymous).
        self.decision: Optional[str] = self.reply.get("decision")
        self.decided_by: Optional[str] = self.reply.get("decided_by")


def backoff_delay(attempt: int, base: float = 0.5, maximum: float = 30.0) -> float:
    """The delay before reconnect attempt ``attempt`` (0 first): full jitter, uniformly random
    in [0, min(maximum, base * 2**attempt)]."""
    return random.uniform(0, min(maximum, base * 2 ** min(attempt, 30)))


class Subscription:
    """One project followed across reconnects; iterate it for its messages (each once, in order)."""

    def __init__(
        self,
        client: "Client",
        project_id: str,
        on_reset: Optional[Callable[[Reset], Any]],
        join_leave: bool = False,
        on_join: Optional[Callable[[JoinLeave], Any]] = None,
        on_leave: Optional[Callable[[JoinLeave], Any]] = None,
        on_presence: Optional[Callable[[Presence], Any]] = None,
        on_stream: Optional[Callable[[StreamUpdate], Any]] = None,
        on_approval_requested: Optional[Callable[[Approval], Any]] = None,
        on_approval_resolved: Optional[Callable[[Approval], Any]] = None,
    ) -> None:
        self._client = client
        self.project_id = project_id
        self.on_reset = on_reset
        self.join_leave = join_leave
        self.on_join = on_join
        self.on_leave = on_leave
        self.on_presence = on_presence
        self.on_stream = on_stream
        self.on_approval_requested = on_approval_requested
        self.on_approval_resolved = on_approval_resolved
        # The project's agent streams by id: the open ones, and ended ones until deleted.
        self.streams: dict[str, Stream] = {}
        # The project's pending approval requests by id, rebuilt after every (re)subscribe.
        self.approvals: dict[str, Approval] = {}
        # The list before the last confirmation: an approval coming back keeps its object, and a
        # replayed approval_resolved of one that did not come back is still reported.
        self._previous_approvals: dict[str, Approval] = {}
        self.position: Optional[Position] = None
        self.confirmed = False
        self.resets: list[Reset] = []
        # Messages, then None (iteration ends) or the error that ended the subscription.
        self._queue: asyncio.Queue[Union[Message, RequestError, None]] = asyncio.Queue()
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def ready(self) -> "Subscription":
        """Waits for the first confirmation; raises :class:`RequestError` if it was refused."""
        await asyncio.shield(self._ready)
        return self

    async def unsubscribe(self) -> None:
        await self._client.unsubscribe(self.project_id)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        item = await self._queue.get()
        if isinstance(item, Message):
            return item
        self._queue.put_nowait(None)  # iterating again ends at once
        if item is None:
            raise StopAsyncIteration
        raise item

    def _confirm(self, reply: dict[str, Any]) -> None:
        position = Position(reply["offset"], reply["epoch"]) if "offset" in reply else None
        recovered = reply.get("recovered")
        # A resume (we sent since) says whether the gap was replayed; a subscription confirmed
        # before but never given a position cannot know what it missed either.
        lost = recovered is False or (recovered is None and self.confirmed)
        if recovered is not True:
            self.position = position
        self.confirmed = True
        # The server sends every approval still pending after the confirmation (and a resume's
        # replay brings the ones resolved meanwhile): what is not sent again is no longer pending.
        self._previous_approvals, self.approvals = self.approvals, {}
        if not self._ready.done():
            self._ready.set_result(None)
        if lost:
            # A stream that ended in the gap would stay open here for good; the open ones come
            # back with the snapshots that follow the confirmation.
            for stream_id in [key for key, stream in self.streams.items() if stream.status == "open"]:
                del self.streams[stream_id]
            reset = Reset(self.project_id, position)
            self.resets.append(reset)
            if self.on_reset:
                self.on_reset(reset)

    def _end(self, error: Optional[RequestError]) -> None:
        if not self._ready.done():
            self._ready.set_exception(error or RequestError("closed", "unsubscribed"))
            self._ready.exception()  # retrieved: ready() re-raises it for whoever awaits
        self._queue.put_nowait(error)

    def _accept(self, offset: Optional[int], epoch: Optional[str]) -> bool:
        """True when new: not at or before the last offset seen in the same epoch."""
        if offset is None or epoch is None:
            return True
        seen = self.position
        if seen and seen.epoch == epoch and offset <= seen.offset:
            return False
        self.position = Position(offset, epoch)
        return True

    def _apply_stream(self, frame: dict[str, Any]) -> Optional[StreamUpdate]:
        """Applies a stream frame to the copy; None when it changed nothing (a repeat, or an
        append the copy cannot continue: it waits for the next snapshot)."""
        if not self._accept(frame.get("offset"), frame.get("epoch")):
            return None  # a start or end replayed twice
        kind = frame["type"]
        stream_id = str(frame.get("stream_id", ""))
        stream = self.streams.get(stream_id)
        if kind == "stream_snapshot":
            stream = stream or Stream(stream_id, self.project_id)
            stream._describe(frame)
            stream.text = frame.get("text", "")
            stream.length = frame.get("length", 0)
            stream.status = frame.get("status", "open")
            stream.result = frame.get("result")
            stream.stale = False
            # A snapshot does not say whether a cancel is under way: the cancel's own frame (live
            # or replayed before the snapshot) does, until the stream ends.
            if stream.status != "open":
                stream.cancel_requested = False
            self.streams[stream_id] = stream
            return StreamUpdate(kind, stream)
        if kind == "stream_started":
            if stream:
                return None
            stream = self.streams[stream_id] = Stream(stream_id, self.project_id)
            stream._describe(frame)
            return StreamUpdate(kind, stream)
        if stream is None:
            return None
        if kind == "stream_cancel_requested":
            if stream.status != "open":
                return None
            stream.cancel_requested = True
            return StreamUpdate(kind, stream, user_id=frame.get("user_id"))
        if kind == "stream_append":
            text, length = frame.get("text", ""), frame.get("length", 0)
            if stream.stale or length <= stream.length:
                return None
            if stream.length + utf8_length(text) != length:
                stream.stale = True  # text was missed: only a snapshot can repair the copy
                return None
            stream.text += text
            stream.length = length
            return StreamUpdate(kind, stream, text)
        stream.status = frame.get("status", "completed")
        stream.result = frame.get("data")
        stream.cancel_requested = False
        if frame.get("length") != stream.length:
            stream.stale = True
        return StreamUpdate(kind, stream)

    def _apply_approval(self, frame: dict[str, Any]) -> Optional[Approval]:
        """Applies an approval frame to the pending list; the approval it added or resolved, or
        None (a repeat, or the resolution of one this subscription never saw)."""
        if not self._accept(frame.get("offset"), frame.get("epoch")):
            return None  # replayed twice
        approval_id = str(frame.get("approval_id", ""))
        if frame["type"] == "approval_requested":
            if approval_id in self.approvals:
                return None  # sent again: a resubscribe, a re-read
            approval = self._previous_approvals.pop(approval_id, None) or Approval(self._client, frame)
            self.approvals[approval_id] = approval
            return approval
        approval = self.approvals.pop(approval_id, None) or self._previous_approvals.pop(approval_id, None)
        if approval is None:
            return None
        approval.resolution = ApprovalResolution(
            str(frame.get("decision", "")), frame.get("user_id"), frame.get("comment"), frame.get("decided_at")
        )
        return approval


@dataclass
class _Chunk:
    text: str
    start: int
    end: int


class AgentStream:
    """The agent's side of one stream; created by :meth:`Client.start_stream`. Appends go out one
    frame at a time, each with ``at``, the stream's length before it (appends made meanwhile are
    batched into the next frame), and are re-sent across reconnects: the server applies each
    once. The handle keeps the text it appended, so a ``stream_conflict`` is followed wherever
    the server's length is: ahead (an append whose answer was lost was applied) or behind (the
    rest is sent again)."""

    def __init__(self, client: "Client", started: dict[str, Any]) -> None:
        self._client = client
        self.project_id: str = started["project_id"]
        self.stream_id: str = started["stream_id"]
        self.started = started  # the stream_started answer: agent, event, data, started_at, offset, epoch
        self.status: str = started.get("status", "open")  # or the final status, once ended
        self.length: int = started.get("length", 0)  # in UTF-8 bytes, as the server last confirmed it
        self._base = self.length  # where _chunks begin
        self._chunks: list[_Chunk] = []  # every text appended from _base on, in order
        self._total = self.length  # the stream's length once every chunk is applied
        self._waiting: list[tuple[int, asyncio.Future[int]]] = []  # (end, future) of appends not yet confirmed
        self._sending = False
        self._ending = False

    def append(self, text: str) -> "asyncio.Future[int]":
        """Queues ``text`` at once; the future (await it, or only :meth:`end`) gives the stream's
        length after it once applied, or raises :class:`RequestError` with the server's code
        (``stream_ended``, ``stream_too_large``, ...; ``rate_limited`` and ``busy`` are waited out): then so
        does every append made after it, as their text would follow a missing piece."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self._ending or self.status != "open":
            state = "ending" if self._ending else self.status
            future.set_exception(RequestError("stream_ended", f"the stream is {state}", {"stream_id": self.stream_id}))
            future.exception()  # retrieved: whoever awaits it still gets it
            return future
        start = self._total
        self._total += utf8_length(text)
        if self._total == start and not self._waiting:
            future.set_result(self.length)  # nothing to send, nothing before it
            return future
        self._chunks.append(_Chunk(text, start, self._total))
        self._waiting.append((self._total, future))
        self._pump()
        return future

    async def end(self, status: str = "completed", *, data: Any = None, timeout: Optional[float] = None) -> dict[str, Any]:
        """Ends the stream after every append made before it; returns the ``stream_ended`` answer
        (``status``, ``length``, ``offset``, ``epoch``). Re-sent across reconnects: an end already
        applied (its answer lost) is answered ``stream_ended`` with the same status, which counts
        as done."""
        self._ending = True
        if self._waiting:
            await asyncio.wait([self._waiting[-1][1]])
        frame: dict[str, Any] = {"action": "stream_end", "project_id": self.project_id, "stream_id": self.stream_id, "status": status}
        if data is not None:
            frame["data"] = data
        try:
            reply = await self._client._request(frame, "stream_ended", timeout=timeout, resend=True)
        except RequestError as error:
            if error.code != "stream_ended" or error.reply.get("status") != status:
                raise
            reply = error.reply
        self.status = reply.get("status", status)
        self.length = reply.get("length", self.length)
        return reply

    def _pump(self) -> None:
        if self._sending or self.length >= self._total:
            return
        self._sending = True
        self._client._background(self._send())

    async def _send(self) -> None:
        at = self.length
        text = self._text_from(at)
        frame = {"action": "stream_append", "project_id": self.project_id, "stream_id": self.stream_id, "text": text, "at": at}
        try:
            reply = await self._client._request(frame, "stream_appended", resend=True)
            length = reply.get("length")
            self._follow(length if isinstance(length, int) else at + utf8_length(text))
        except RequestError as error:
            if error.code == "busy":
                await asyncio.sleep(BUSY_RETRY)  # then again
            else:
                self._refused(error)
        finally:
            self._sending = False
            self._pump()

    def _text_from(self, at: int) -> str:
        """The text from byte ``at`` on: whole chunks up to APPEND_BATCH_BYTES (at least one)."""
        index = len(self._chunks) - 1
        while index > 0 and self._chunks[index].start > at:
            index -= 1
        first = self._chunks[index]
        encoded = first.text.encode("utf-8", "surrogatepass")
        parts = [first.text if at == first.start else encoded[at - first.start :].decode("utf-8", "replace")]
        size = first.end - at
        for chunk in self._chunks[index + 1 :]:
            if size + chunk.end - chunk.start > APPEND_BATCH_BYTES:
                break
            parts.append(chunk.text)
            size += chunk.end - chunk.start
        return "".join(parts)

    def _refused(self, error: RequestError) -> None:
        if error.code == "timeout":
            return  # its fate is unknown: the pump sends it again, with the same ``at``
        length = error.reply.get("length")
        if error.code == "stream_conflict" and isinstance(length, int) and length >= self._base:
            self._follow(length)
            return
        if error.code == "stream_ended":
            self.status = error.reply.get("status", "ended")
        self._fail(error)

    def _follow(self, length: int) -> None:
        """The server holds ``length`` bytes: the appends within them are applied, the rest (if
        the server is behind what it confirmed before) goes again from there."""
        self.length = length
        if length > self._total:
            # More than this handle ever appended (another writer): its appends are in, and
            # what follows is appended after the server's length.
            self._chunks = []
            self._base = self._total = length
            waiting, self._waiting = self._waiting, []
            for _, future in waiting:
                _resolve(future, length)
            return
        while self._waiting and self._waiting[0][0] <= length:
            end, future = self._waiting.pop(0)
            _resolve(future, end)

    def _fail(self, error: RequestError) -> None:
        """Fails every append not yet confirmed; the next one continues from the server's length."""
        waiting, self._waiting = self._waiting, []
        for _, future in waiting:
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: whoever awaits it still gets it
        self._chunks = [chunk for chunk in self._chunks if chunk.end <= self.length]
        if (self._chunks[-1].end if self._chunks else self._base) != self.length:
            self._chunks = []
            self._base = self.length
        self._total = self.length


def _resolve(future: "asyncio.Future[int]", length: int) -> None:
    if not future.done():
        future.set_result(length)


@dataclass
class _Pending:
    text: str
    expect: str
    future: "asyncio.Future[dict[str, Any]]"
    resend: bool = False
    subscription: Optional[Subscription] = None
    sent: bool = False


@dataclass
class _Token:
    token: str
    expires_at: int
    refresh_at: float


class Client:
    """A client of the gateway. Use as ``async with Client(url) as client:`` or call
    :meth:`connect` and :meth:`close`."""

    def __init__(
        self,
        url: str,
        *,
        token: Optional[str] = None,
        get_token: Optional[TokenSource] = None,
        on_state: Optional[Callable[[StateChange], Any]] = None,
        on_error: Optional[Callable[[Exception], Any]] = None,
        on_message: Optional[Callable[[Message], Any]] = None,
        request_timeout: float = 10.0,
        forward_timeout: float = 30.0,  # the server may take FORWARD_DEADLINE_SECS (10 s): forwards, cancels, decisions
        connect_timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        restart_delay_max: float = 5.0,  # after 1012, as docs/protocol.md advises
        abuse_delay: float = 60.0,  # after 3509
        max_frame_bytes: int = 256 * 1024,  # the server's default MAX_FRAME_BYTES
    ) -> None:
        self.url = url
        self._static_token = token
        self._get_token = get_token
        self._on_state = on_state
        self._on_error = on_error
        self._on_message = on_message
        self.request_timeout = request_timeout
        self.forward_timeout = forward_timeout
        self.connect_timeout = connect_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.restart_delay_max = restart_delay_max
        self.abuse_delay = abuse_delay
        self.max_frame_bytes = max_frame_bytes
        self.state = ConnectionState.CLOSED
        self._stopped = True
        self._ws: Optional[ClientConnection] = None
        self._runner: Optional[asyncio.Task[None]] = None
        self._refresher: Optional[asyncio.Task[None]] = None
        self._first_connection: Optional[asyncio.Future[None]] = None
        self._attempt = 0
        self._token: Optional[_Token] = None
        self._sent_token: Optional[str] = None
        self._refused_token: Optional[str] = None
        self._subscriptions: dict[str, Subscription] = {}
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        # The event loop keeps only weak references to tasks: sends and subscribes live here until done.
        self._tasks: set[asyncio.Future[Any]] = set()

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        """Starts connecting (and reconnecting); returns once connected, raises
        :class:`RequestError` if the client stops first."""
        if self._runner is None or self._runner.done():
            self._stopped = False
            self._first_connection = asyncio.get_running_loop().create_future()
            self._attempt = 0
            self._runner = asyncio.create_task(self._run())
        assert self._first_connection is not None
        await asyncio.shield(self._first_connection)

    async def close(self) -> None:
        """Closes for good; requests not yet answered fail with ``closed``."""
        if self._runner and not self._runner.done():
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self._stop(NORMAL, "closed by the client", "closed")

    async def _stop(self, code: int, reason: str, fail_with: str) -> None:
        self._stopped = True
        self._cancel_refresh()
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        for request_id in list(self._pending):
            self._settle(request_id, error=RequestError(fail_with, reason))
        # Iterations end: cleanly after close(), with the reason after a close code.
        for subscription in self._subscriptions.values():
            subscription._end(None if code == NORMAL else RequestError(fail_with, reason))
        self._subscriptions.clear()
        if self._first_connection and not self._first_connection.done():
            self._first_connection.set_exception(RequestError(fail_with, reason))
            self._first_connection.exception()  # retrieved: connect() re-raises it
        if self.state is not ConnectionState.CLOSED:
            self._set_state(StateChange(ConnectionState.CLOSED, code, reason))

    def _set_state(self, change: StateChange) -> None:
        self.state = change.state
        self._call(self._on_state, change)

    def _call(self, callback: Optional[Callable[[Any], Any]], value: Any) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception as error:  # a listener's bug must not end the connection
            if callback is not self._on_error:
                self._call(self._on_error, error)

    def _error(self, error: Exception) -> None:
        self._call(self._on_error, error)

    async def _run(self) -> None:
        while True:
            self._set_state(StateChange(ConnectionState.CONNECTING, attempt=self._attempt))
            code, reason = await self._connection()
            delay = self._reconnect_delay(code)
            if delay is None:
                fail_with = {INVALID_TOKEN: "unauthorized", TOO_MANY_CONNECTIONS: "too_many_connections"}.get(code, "closed")
                await self._stop(code, reason, fail_with)
                return
            self._set_state(StateChange(ConnectionState.DISCONNECTED, code, reason, reconnect_in=delay))
            await asyncio.sleep(delay)

    async def _connection(self) -> tuple[int, str]:
        """One connection, from opening to its end; returns its close code and reason."""
        try:
            token = await self._current_token()
        except Exception as error:
            unavailable = RequestError("token_unavailable", f"get_token failed: {error}")
            self._error(unavailable)
            # The state change carries the cause too: an application logging only its states
            # would otherwise see a silent connecting/disconnected loop.
            return ABNORMAL, str(unavailable)
        try:
            ws = await connect(self.url, open_timeout=self.connect_timeout, max_size=None)
        except InvalidStatus as error:
            # 429/503 (overloaded, draining) and the rest: back off; a browser sees only 1006.
            return ABNORMAL, f"upgrade refused with HTTP {error.response.status_code}"
        except (OSError, asyncio.TimeoutError, WebSocketException) as error:
            return ABNORMAL, f"cannot connect: {error}"
        self._ws = ws
        reader = asyncio.create_task(self._read(ws))
        try:
            await asyncio.wait_for(self._handshake(token), self.connect_timeout)
        except asyncio.TimeoutError:
            await ws.close()  # a hung handshake is abandoned
        except RequestError:
            # After unauthorized the server closes with 3500, the code that decides what follows.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), self.connect_timeout)
            await ws.close()
        await reader
        self._ws = None
        self._cancel_refresh()
        code = ws.close_code if ws.close_code is not None else ABNORMAL
        reason = ws.close_reason or ""
        self._lost(code, reason)
        return code, reason

    async def _read(self, ws: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in ws:
                self._receive(frame)

    async def _handshake(self, token: Optional[str]) -> None:
        if token:
            try:
                await self._authenticate(token)
            except RequestError as error:
                if error.code != "invalid_request":  # an anonymous server takes no token
                    raise
                self._error(error)
        self._attempt = 0
        for subscription in self._subscriptions.values():
            self._send_subscribe(subscription)
        for pending in self._pending.values():
            if not pending.sent:
                self._transmit(pending)
        self._set_state(StateChange(ConnectionState.CONNECTED))
        if self._first_connection and not self._first_connection.done():
            self._first_connection.set_result(None)

    def _lost(self, code: int, reason: str) -> None:
        too_big = code == MESSAGE_TOO_BIG
        # What was sent on that connection and is not re-sent has an unknown fate: fail it now.
        for request_id, pending in list(self._pending.items()):
            # A subscribe waiting out rate_limited is not carried over: the next connection resubscribes.
            if (pending.sent or pending.subscription) and (too_big or not pending.resend):
                fail_with = "message_too_big" if too_big else "disconnected"
                self._settle(request_id, error=RequestError(fail_with, reason or f"closed with {code}"))
            pending.sent = False

    def _next_backoff(self) -> float:
        delay = backoff_delay(self._attempt, self.backoff_base, self.backoff_max)
        self._attempt += 1
        return delay

    def _reconnect_delay(self, code: int) -> Optional[float]:
        """Seconds before reconnecting after a close with ``code``, or None: do not reconnect."""
        if code == SERVICE_RESTART:
            return random.uniform(0, self.restart_delay_max)
        if code == TOKEN_EXPIRED:
            self._token = None
            return random.uniform(0, self.backoff_base) if self._get_token else None
        if code == INVALID_TOKEN:
            # Only a different token is worth a new connection: get_token is asked on the next
            # attempt, and the client stops if the server refuses the same token twice.
            self._token = None
            if not self._get_token or self._sent_token == self._refused_token:
                return None
            self._refused_token = self._sent_token
            return self._next_backoff()
        if code in (PROTOCOL_ERROR, INVALID_PAYLOAD, TOO_MANY_CONNECTIONS):
            return None
        if code == ABUSIVE_CLIENT:
            return random.uniform(self.abuse_delay, 2 * self.abuse_delay)
        if code == AUTHENTICATION_TIMEOUT:
            return self._next_backoff()
        if 3500 <= code <= 4999:  # "do not reconnect as you were"; 4000-4999: no code of this server
            return None
        return self._next_backoff()

    # ------------------------------------------------------------------ tokens
    async def _current_token(self) -> Optional[str]:
        if self._token and time.time() < self._token.refresh_at:
            return self._token.token
        return await self._fetch_token() if self._get_token else self._static_token

    async def _fetch_token(self) -> Optional[str]:
        assert self._get_token is not None
        token = self._get_token()
        return await token if inspect.isawaitable(token) else token

    async def _authenticate(self, token: str, current: Optional[_Token] = None) -> None:
        """Sends authenticate and arms the refresh; ``current`` is the token being refreshed."""
        self._sent_token = token
        reply = await self._request({"action": "authenticate", "token": token}, "authenticated", during_handshake=True)
        self._refused_token = None
        self._token = _Token(token, reply["expires_at"], float(reply["refresh_at"]))
        # A refresh that did not extend the lifetime (get_token handed back the same token) is
        # not repeated: the 3005 at expiry makes the client reconnect with a fresh one.
        if self._get_token and (current is None or reply["expires_at"] > current.expires_at):
            delay = max(0.0, self._token.refresh_at - time.time())
            self._refresher = asyncio.create_task(self._refresh_after(delay))

    async def _refresh_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        ws = self._ws
        try:
            token = await self._fetch_token()
            if token and ws is self._ws:
                await self._authenticate(token, self._token)
        except RequestError as error:
            if error.code != "disconnected":  # the next connection authenticates afresh
                self._error(error)
        except Exception as error:
            self._error(RequestError("token_unavailable", f"get_token failed: {error}"))

    def _cancel_refresh(self) -> None:
        if self._refresher and self._refresher is not asyncio.current_task():
            self._refresher.cancel()
        self._refresher = None

    # ------------------------------------------------------------------ frames
    def _receive(self, text: Union[str, bytes]) -> None:
        try:
            reply = json.loads(text)
        except ValueError:
            self._error(RequestError("invalid_json", "the server sent a frame that is not JSON"))
            return
        kind = reply.get("type")
        if kind == "message":
            self._deliver(Message.from_frame(reply))
            return
        # An agent's own stream requests are answered with its request_id; subscribers get no id.
        if kind in STREAM_FRAMES and "request_id" not in reply:
            self._deliver_stream(reply)
            return
        if kind in APPROVAL_FRAMES and "request_id" not in reply:
            self._deliver_approval(reply)
            return
        if kind in ("join", "leave"):
            self._announce(reply)
            return
        if kind == "subscription_confirmed":
            subscription = self._subscriptions.get(reply.get("project_id", ""))
            if subscription:
                subscription._confirm(reply)
        request_id = reply.get("request_id")
        pending = self._pending.get(request_id) if isinstance(request_id, str) else None
        if pending:
            if kind == "error":
                self._refused(request_id, pending, reply)
                return
            if kind == pending.expect:
                self._settle(request_id, reply=reply)
                return
        if kind == "error":
            error = RequestError(reply.get("code", "internal"), reply.get("message", ""), reply)
            # A refreshed token that no longer allows a project ends its subscription.
            ended = self._subscriptions.get(reply.get("project_id") or "")
            if ended and error.code == "forbidden":
                del self._subscriptions[ended.project_id]
                ended._end(error)
            self._error(error)

    def _refused(self, request_id: str, pending: _Pending, reply: dict[str, Any]) -> None:
        if reply.get("code") == "draining":
            # Nothing was done; the 1012 that follows brings a new connection, which sends it again.
            pending.sent = False
            return
        if reply.get("code") == "rate_limited" and (pending.resend or pending.subscription):
            # Not executed: a forward or subscribe goes again once the budget allows it (once per
            # refusal, and only on the connection that refused it).
            pending.sent = False
            ws = self._ws
            delay = max(0, reply.get("retry_after_ms") or 0) / 1000

            def again() -> None:
                if self._pending.get(request_id) is pending and not pending.sent and ws is self._ws:
                    self._transmit(pending)

            asyncio.get_running_loop().call_later(delay, again)
            return
        error = RequestError(reply.get("code", "internal"), reply.get("message", ""), reply)
        if pending.subscription:
            self._subscriptions.pop(pending.subscription.project_id, None)
            pending.subscription._end(error)
        self._settle(request_id, error=error)

    def _deliver(self, message: Message) -> None:
        subscription = self._subscriptions.get(message.project_id)
        if subscription is None or not subscription._accept(message.offset, message.epoch):
            return
        subscription._queue.put_nowait(message)
        self._call(self._on_message, message)

    def _deliver_stream(self, frame: dict[str, Any]) -> None:
        subscription = self._subscriptions.get(frame.get("project_id", ""))
        update = subscription._apply_stream(frame) if subscription else None
        if subscription and update:
            self._call(subscription.on_stream, update)

    def _deliver_approval(self, frame: dict[str, Any]) -> None:
        subscription = self._subscriptions.get(frame.get("project_id", ""))
        approval = subscription._apply_approval(frame) if subscription else None
        if subscription and approval:
            requested = frame["type"] == "approval_requested"
            self._call(subscription.on_approval_requested if requested else subscription.on_approval_resolved, approval)

    def _announce(self, frame: dict[str, Any]) -> None:
        """A join or leave of another connection, for a subscription made with join_leave."""
        subscription = self._subscriptions.get(frame.get("project_id", ""))
        if subscription is None or not isinstance(frame.get("client"), dict):
            return
        event = JoinLeave(frame["type"], subscription.project_id, PresenceClient.from_frame(frame["client"]))
        self._call(subscription.on_join if event.type == "join" else subscription.on_leave, event)

    def _settle(self, request_id: str, reply: Optional[dict[str, Any]] = None, error: Optional[Exception] = None) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is None or pending.future.done():
            return
        if error is not None:
            pending.future.set_exception(error)
            pending.future.exception()  # retrieved: the awaiting request re-raises it
        else:
            pending.future.set_result(reply or {})

    async def _request(
        self,
        frame: dict[str, Any],
        expect: str,
        *,
        timeout: Optional[float] = None,
        resend: bool = False,
        subscription: Optional[Subscription] = None,
        during_handshake: bool = False,
    ) -> dict[str, Any]:
        """Sends a request (now, or once connected) and returns the reply of type ``expect``."""
        request_id = f"{frame['action']}-{next(self._ids)}"
        text = json.dumps({**frame, "request_id": request_id})
        if len(text.encode()) > self.max_frame_bytes:
            raise RequestError("message_too_big", f"the request is over {self.max_frame_bytes} bytes")
        if self._stopped:
            raise RequestError("closed", "the client is closed: call connect() first")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        pending = _Pending(text, expect, future, resend=resend, subscription=subscription)
        self._pending[request_id] = pending
        # Before CONNECTED only the handshake's own frames go out; the rest wait for it.
        if self.state is ConnectionState.CONNECTED or during_handshake:
            self._transmit(pending)
        wait = self.request_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(future), wait)
        except asyncio.TimeoutError:
            self._pending.pop(request_id, None)
            raise RequestError("timeout", f"no answer within {wait} s") from None

    def _transmit(self, pending: _Pending) -> None:
        ws = self._ws
        if ws is None:
            return
        self._background(self._send(ws, pending.text))
        pending.sent = True

    def _background(self, work: Awaitable[T]) -> "asyncio.Future[T]":
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _send(ws: ClientConnection, text: str) -> None:
        # A send on a closing connection fails; the close handling re-sends or fails the request.
        with contextlib.suppress(ConnectionClosed):
            await ws.send(text)

    def _send_subscribe(self, subscription: Subscription) -> None:
        resume: dict[str, Any] = (
            {"since": {"offset": subscription.position.offset, "epoch": subscription.position.epoch}}
            if subscription.position
            else {"recover": True}
        )
        frame = {"action": "subscribe", "project_id": subscription.project_id, **resume}
        if subscription.join_leave:
            frame["join_leave"] = True
        task = self._background(self._subscribe_and_reconcile(frame, subscription))
        task.add_done_callback(self._subscribe_done)

    async def _subscribe_and_reconcile(self, frame: dict[str, Any], subscription: Subscription) -> None:
        await self._request(frame, "subscription_confirmed", subscription=subscription, during_handshake=True)
        if not subscription.join_leave:
            return
        # Join and leave events missed while away are never sent again: the member list is asked
        # after every (re)subscribe instead, and the events that follow apply on top of it.
        reply = await self._request(
            {"action": "presence", "project_id": subscription.project_id}, "presence", during_handshake=True
        )
        if self._subscriptions.get(subscription.project_id) is subscription:
            self._call(subscription.on_presence, Presence.from_frame(reply))

    def _subscribe_done(self, task: "asyncio.Future[None]") -> None:
        error = None if task.cancelled() else task.exception()
        # Timeouts and lost connections are retried by the next connection; refusals are final.
        if isinstance(error, RequestError) and error.code not in ("timeout", "disconnected", "closed"):
            self._error(error)

    # ------------------------------------------------------------------ requests
    def subscribe(
        self,
        project_id: str,
        *,
        on_reset: Optional[Callable[[Reset], Any]] = None,
        join_leave: bool = False,
        on_join: Optional[Callable[[JoinLeave], Any]] = None,
        on_leave: Optional[Callable[[JoinLeave], Any]] = None,
        on_presence: Optional[Callable[[Presence], Any]] = None,
        on_stream: Optional[Callable[[StreamUpdate], Any]] = None,
        on_approval_requested: Optional[Callable[[Approval], Any]] = None,
        on_approval_resolved: Optional[Callable[[Approval], Any]] = None,
    ) -> Subscription:
        """Follows a project: iterate the subscription for every publication, once, in order,
        across reconnects; ``on_reset`` is called when the server could not replay what was
        missed (reload then). With ``join_leave=True``, ``on_join`` and ``on_leave`` get other
        connections' join and leave events, and ``on_presence`` the member list after each
        (re)subscribe: replace what you hold with it, then apply the events that follow.
        ``on_stream`` gets a :class:`StreamUpdate` whenever one of ``subscription.streams``
        changes: started, appended to, replaced by a snapshot, asked to stop, ended.
        ``on_approval_requested`` gets an :class:`Approval` when one enters
        ``subscription.approvals`` (again after every resubscribe, for each still pending),
        ``on_approval_resolved`` when one is decided or expires (its ``resolution`` says how)."""
        existing = self._subscriptions.get(project_id)
        if existing:
            return existing
        subscription = Subscription(
            self,
            project_id,
            on_reset,
            join_leave,
            on_join,
            on_leave,
            on_presence,
            on_stream,
            on_approval_requested,
            on_approval_resolved,
        )
        self._subscriptions[project_id] = subscription
        if self.state is ConnectionState.CONNECTED:
            self._send_subscribe(subscription)
        return subscription

    async def unsubscribe(self, project_id: str) -> None:
        """Stops following a project (confirmed by the server when connected)."""
        subscription = self._subscriptions.pop(project_id, None)
        if subscription is None:
            return
        subscription._end(None)
        if self.state is ConnectionState.CONNECTED:
            await self._request({"action": "unsubscribe", "project_id": project_id}, "unsubscription_confirmed")

    async def forward(
        self,
        type: str,
        project_id: str,
        data: Any,
        *,
        message_id: Optional[str] = None,
        timeout: Optional[float] = None,
        fields: Optional[dict[str, Any]] = None,
    ) -> str:
        """Sends a message to an agent queue; returns the SQS message id once the queue has it.
        Re-sent on every reconnect until answered (same ``message_id``: at-least-once)."""
        frame = {
            **(fields or {}),
            "action": "forward",
            "type": type,
            "project_id": project_id,
            "message_id": message_id or str(uuid.uuid4()),
            "data": data,
        }
        wait = self.forward_timeout if timeout is None else timeout
        reply = await self._request(frame, "forward_confirmed", timeout=wait, resend=True)
        return str(reply["sqs_message_id"])

    async def publish(self, project_id: str, event: Optional[str], data: Any, *, timeout: Optional[float] = None) -> dict[str, Any]:
        """Publishes to a project's subscribers (needs publish rights); returns publish_confirmed."""
        frame: dict[str, Any] = {"action": "publish", "project_id": project_id, "data": data}
        if event is not None:
            frame["type"] = event
        return await self._request(frame, "publish_confirmed", timeout=timeout)

    async def start_stream(
        self,
        project_id: str,
        *,
        agent: Optional[str] = None,
        event: Optional[str] = None,
        data: Any = None,
        stream_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> AgentStream:
        """Starts an agent stream in a project (needs publish rights). ``stream_id`` defaults to a
        random UUID, so a start re-sent after a reconnect is answered with the stream it started,
        not a second one."""
        frame: dict[str, Any] = {"action": "stream_start", "project_id": project_id, "stream_id": stream_id or str(uuid.uuid4())}
        frame.update({key: value for key, value in (("agent", agent), ("event", event), ("data", data)) if value is not None})
        started = await self._request(frame, "stream_started", timeout=timeout, resend=True)
        return AgentStream(self, started)

    async def cancel(self, project_id: str, stream_id: str, reason: Optional[str] = None, *, timeout: Optional[float] = None) -> Optional[str]:
        """Asks a stream's agent to stop (needs the right to forward to the project); returns the
        queue message's id once the agent's queue has the cancel (None for a stream without an
        agent: the server ends it at once). Re-sent across reconnects: a repeat sends nothing new
        and is answered with the first cancel's id."""
        frame: dict[str, Any] = {"action": "cancel", "project_id": project_id, "stream_id": stream_id}
        if reason is not None:
            frame["reason"] = reason
        wait = self.forward_timeout if timeout is None else timeout
        reply = await self._request(frame, "cancel_requested", timeout=wait, resend=True)
        message_id = reply.get("message_id")
        return str(message_id) if message_id is not None else None

    async def request_approval(
        self,
        project_id: str,
        *,
        agent: str,
        data: Any = None,
        options: Optional[list[str]] = None,
        expires_in_secs: Optional[int] = None,
        approval_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> dict[str, Any]:
        """The agent's side of an approval (needs the right to publish to the project): asks the
        project's people a question; returns the ``approval_requested`` answer (``approval_id``,
        ``expires_at``). The decision reaches the agent's queue, not this connection (README.md,
        "Cancel and approvals"). ``approval_id`` defaults to a random UUID, so a request re-sent
        after a reconnect is answered with the question it asked, not a second one."""
        frame: dict[str, Any] = {
            "action": "approval_request",
            "project_id": project_id,
            "approval_id": approval_id or str(uuid.uuid4()),
            "agent": agent,
        }
        optional = (("data", data), ("options", options), ("expires_in_secs", expires_in_secs))
        frame.update({key: value for key, value in optional if value is not None})
        return await self._request(frame, "approval_requested", timeout=timeout, resend=True)

    async def decide_approval(
        self, project_id: str, approval_id: str, decision: str, *, comment: Optional[str] = None, timeout: Optional[float] = None
    ) -> dict[str, Any]:
        """Answers an approval request by id (what :meth:`Approval.decide` does); returns the
        ``approval_decided`` answer. Not re-sent after a disconnect (its fate is unknown)."""
        frame: dict[str, Any] = {"action": "approval_decide", "project_id": project_id, "approval_id": approval_id, "decision": decision}
        if comment is not None:
            frame["comment"] = comment
        wait = self.forward_timeout if timeout is None else timeout
        return await self._request(frame, "approval_decided", timeout=wait)

    async def presence(self, project_id: str, *, timeout: Optional[float] = None) -> Presence:
        """Who is subscribed to a project (needs the right to subscribe to it); raises
        :class:`RequestError` with the server's code (``forbidden``, ``unavailable``, ...)."""
        reply = await self._request({"action": "presence", "project_id": project_id}, "presence", timeout=timeout)
        return Presence.from_frame(reply)

    async def presence_stats(self, project_id: str, *, timeout: Optional[float] = None) -> PresenceStats:
        """A project's member counts, without the list."""
        frame = {"action": "presence_stats", "project_id": project_id}
        reply = await self._request(frame, "presence_stats", timeout=timeout)
        return PresenceStats(reply["project_id"], reply.get("num_clients", 0), reply.get("num_users", 0))

    async def ping(self, *, timeout: Optional[float] = None) -> dict[str, Any]:
        """A round trip to the server; returns the pong."""
        return await self._request({"action": "ping"}, "pong", timeout=timeout)


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
