// Agent streams in the JavaScript client against a scripted gateway (a WebSocket stand-in that
// keeps streams the way docs/protocol.md says the server does): the cases the real server does
// not produce on demand, such as an answer lost just before a reconnect, a server behind what it
// confirmed, an append that does not continue the viewer's copy, or an approval resolved while
// the viewer was away with no replay to tell it. The real-server scenarios are
// in client.test.js and browser.test.js.
//   node --experimental-websocket --test clients/js/test/streams.test.js

import { test } from "node:test";
import assert from "node:assert/strict";

import { Client, utf8Length } from "@agenticai/websocket-client";

// Streams as the gateway keeps them, and the sockets connected to it.
class ScriptedGateway {
  streams = new Map(); // stream_id -> {text, length, status}
  sockets = new Set();
  received = []; // every request, in order
  dropAnswer = () => false; // (request) -> true: apply it but lose its answer, and the connection
  refuse = () => null; // (request) -> an error code to refuse it with, not executed

  WebSocket = (() => {
    const gateway = this;
    return class {
      readyState = 0;
      constructor() {
        gateway.sockets.add(this);
        setTimeout(() => {
          this.readyState = 1;
          this.onopen?.();
        });
      }
      send(text) {
        gateway.#handle(this, JSON.parse(text));
      }
      close(code = 1000) {
        gateway.#close(this, code);
      }
    };
  })();

  // Sends `frame` to the socket, as the server would.
  push(socket, frame) {
    setTimeout(() => socket.readyState === 1 && socket.onmessage?.({ data: JSON.stringify(frame) }));
  }

  // A network loss: every connection ends without a close frame.
  cut() {
    for (const socket of this.sockets) this.#close(socket, 1006);
  }

  #close(socket, code) {
    if (socket.readyState === 3) return;
    socket.readyState = 3;
    this.sockets.delete(socket);
    setTimeout(() => socket.onclose?.({ code, reason: "" }));
  }

  #handle(socket, request) {
    this.received.push(request);
    const answer = (frame) => {
      if (this.dropAnswer(request)) return this.cut();
      this.push(socket, { ...frame, project_id: request.project_id, stream_id: request.stream_id, request_id: request.request_id });
    };
    const stream = this.streams.get(request.stream_id);
    const refusal = this.refuse(request);
    if (refusal) return answer({ type: "error", code: refusal, message: refusal, retry_after_ms: 20 });
    switch (request.action) {
      case "subscribe":
        return this.push(socket, { type: "subscription_confirmed", project_id: request.project_id, request_id: request.request_id, offset: 0, epoch: "e" });
      case "stream_start":
        if (!stream) this.streams.set(request.stream_id, { text: "", length: 0, status: "open" });
        return answer({ type: "stream_started", started_at: "2026-12-07T00:00:00Z" });
      case "stream_append": {
        const bytes = utf8Length(request.text);
        if (request.at + bytes <= stream.length) return answer({ type: "stream_appended", length: stream.length, duplicate: true });
        if (request.at !== stream.length) return answer({ type: "error", code: "stream_conflict", message: "conflict", length: stream.length });
        stream.text += request.text;
        stream.length += bytes;
        return answer({ type: "stream_appended", length: stream.length });
      }
      case "stream_end":
        if (stream.status !== "open") return answer({ type: "error", code: "stream_ended", message: "ended", status: stream.status, length: stream.length });
        stream.status = request.status;
        return answer({ type: "stream_ended", status: stream.status, length: stream.length, offset: 2, epoch: "e" });
    }
  }
}

const FAST = { backoffBaseMs: 10, backoffMaxMs: 20 };

// A dropAnswer that loses the answer of the first request matching `predicate`; `lost()` counts.
function loseFirst(predicate) {
  let lost = 0;
  const drop = (request) => lost === 0 && predicate(request) && ++lost === 1;
  return Object.assign(drop, { lost: () => lost });
}
const tokens = ["Hello", ", wörld", " 👋", " — done", "."];

test("an append whose answer was lost is sent again with the same `at` and applied once", async () => {
  const gateway = new ScriptedGateway();
  const client = new Client("ws://gateway/ws", { WebSocket: gateway.WebSocket, ...FAST });
  gateway.dropAnswer = loseFirst((request) => request.action === "stream_append" && request.at > 0);
  try {
    await client.connect();
    const stream = await client.startStream("p", { agent: "dev", event: "answer" });
    const lengths = await Promise.all(tokens.map((token) => stream.append(token)));
    const text = tokens.join("");
    assert.equal(gateway.dropAnswer.lost(), 1, "one answer was lost with its connection");
    assert.equal(gateway.streams.get(stream.streamId).text, text, "the gateway holds each token once");
    assert.deepEqual(lengths, tokens.map((_, n) => utf8Length(tokens.slice(0, n + 1).join(""))));
    const appends = gateway.received.filter((request) => request.action === "stream_append");
    assert.ok(appends.every((request, n) => n === 0 || request.at >= appends[n - 1].at), "`at` never goes back");
    assert.equal(new Set(appends.map((request) => request.at)).size, appends.length - 1, "exactly one append was sent twice");
    const ended = await stream.end("completed");
    assert.deepEqual([ended.status, ended.length, stream.status], ["completed", utf8Length(text), "completed"]);
  } finally {
    client.close();
  }
});

test("an end whose answer was lost counts as done when the retry finds it ended with that status", async () => {
  const gateway = new ScriptedGateway();
  const client = new Client("ws://gateway/ws", { WebSocket: gateway.WebSocket, ...FAST });
  gateway.dropAnswer = loseFirst((request) => request.action === "stream_end");
  try {
    await client.connect();
    const stream = await client.startStream("p");
    await stream.append("all of it");
    const ended = await stream.end("failed", { data: { reason: "tests" } });
    assert.deepEqual([ended.status, ended.length], ["failed", 9]);
    await assert.rejects(stream.append("more"), { code: "stream_ended" });
  } finally {
    client.close();
  }
});

test("stream_conflict: behind the handle, the rest is sent again from the server's length", async () => {
  const gateway = new ScriptedGateway();
  const client = new Client("ws://gateway/ws", { WebSocket: gateway.WebSocket, ...FAST });
  try {
    await client.connect();
    const stream = await client.startStream("p", { streamId: "s-behind" });
    await stream.append("abc");
    await stream.append("déf");
    // The gateway lost the second append (say, a failover to a replica that missed it).
    Object.assign(gateway.streams.get("s-behind"), { text: "abc", length: 3 });
    assert.equal(await stream.append("ghi"), 10);
    assert.equal(gateway.streams.get("s-behind").text, "abcdéfghi");
  } finally {
    client.close();
  }
});

test("stream_conflict: ahead of the handle, the unanswered text counts as applied", async () => {
  const gateway = new ScriptedGateway();
  const client = new Client("ws://gateway/ws", { WebSocket: gateway.WebSocket, ...FAST });
  try {
    await client.connect();
    const stream = await client.startStream("p", { streamId: "s-ahead" });
    await stream.append("abc");
    // Another writer (or an SQS redelivery of the agent's own update) put more in meanwhile.
    Object.assign(gateway.streams.get("s-ahead"), { text: "abcXYZ!", length: 7 });
    assert.equal(await stream.append("xyz"), 7, "follows the server: it holds 7 bytes");
    assert.equal(await stream.append("."), 8, "and appends after them");
    assert.equal(gateway.streams.get("s-ahead").text, "abcXYZ!.");
  } finally {
    client.close();
  }
});

test("busy and rate_limited refusals (not executed) are waited out: the text is applied once, in order", async () => {
  const gateway = new ScriptedGateway();
  const client = new Client("ws://gateway/ws", { WebSocket: gateway.WebSocket, ...FAST });
  const refusals = ["busy", "rate_limited", "busy"];
  gateway.refuse = (request) => (request.action === "stream_append" && request.at > 0 ? refusals.shift() : null);
  try {
    await client.connect();
    const stream = await client.startStream("p");
    await Promise.all(tokens.map((token) => stream.append(token)));
    assert.deepEqual(refusals, [], "every refusal was met");
    assert.equal(gateway.streams.get(stream.streamId).text, tokens.join(""));
  } finally {
    client.close();
  }
});

test("a refusal fails that append and every one queued after it; the next continues from the server's length", async () => {
  const gateway = new ScriptedGateway();
  const client = new Client("ws://gateway/ws", { WebSocket: gateway.WebSocket, ...FAST });
  let refusing = false;
  gateway.refuse = (request) => (refusing && request.action === "stream_append" ? "stream_too_large" : null);
  try {
    await client.connect();
    const stream = await client.startStream("p");
    await stream.append("kept");
    refusing = true;
    const refused = await Promise.allSettled([stream.append(" too"), stream.append(" much")]);
    assert.deepEqual(refused.map((result) => result.reason?.code), ["stream_too_large", "stream_too_large"]);
    refusing = false;
    assert.equal(await stream.append("!"), 5, "continues from the server's length");
    assert.equal(gateway.streams.get(stream.streamId).text, "kept!");
  } finally {
    client.close();
  }
});

test("viewer: snapshots replace the copy, appends continue it, repeats are ignored, a gap waits for a snapshot", async () => {
  const gateway = new ScriptedGateway();
  const client = new Client("ws://gateway/ws", { WebSocket: gateway.WebSocket, ...FAST });
  const updates = [];
  const subscription = client.subscribe("p", { onStream: (stream, update) => updates.push([update.type, stream.text]) });
  try {
    await client.connect();
    await subscription.ready;
    const [socket] = gateway.sockets;
    const frame = (type, fields) => ({ type, project_id: "p", stream_id: "s", ...fields });
    const frames = [
      frame("stream_started", { agent: "dev", event: "answer", data: { n: 1 }, started_at: "t", offset: 1, epoch: "e" }),
      frame("stream_append", { text: "Hé", length: 3 }),
      frame("stream_append", { text: "Hé", length: 3 }), // a repeat
      frame("stream_append", { text: "llo", length: 6 }),
      frame("stream_append", { text: "?", length: 99 }), // a gap: ignored until the snapshot
      frame("stream_append", { text: "!", length: 100 }),
      frame("stream_snapshot", { status: "open", text: "Héllo wörld", length: 13, agent: "dev", event: "answer", data: { n: 1 }, started_at: "t" }),
      frame("stream_append", { text: " 👋", length: 13 }), // at or below the snapshot: a repeat
      frame("stream_append", { text: " 👋", length: 18 }),
      frame("stream_ended", { status: "completed", length: 18, data: { passed: 3 }, offset: 2, epoch: "e" }),
      frame("stream_ended", { status: "completed", length: 18, offset: 2, epoch: "e" }), // replayed twice
    ];
    for (const each of frames) gateway.push(socket, each);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const stream = subscription.streams.get("s");
    assert.deepEqual(
      { text: stream.text, length: stream.length, status: stream.status, agent: stream.agent, event: stream.event, data: stream.data, result: stream.result, stale: stream.stale },
      { text: "Héllo wörld 👋", length: 18, status: "completed", agent: "dev", event: "answer", data: { n: 1 }, result: { passed: 3 }, stale: false },
    );
    assert.deepEqual(updates.map(([type]) => type), ["stream_started", "stream_append", "stream_append", "stream_snapshot", "stream_append", "stream_ended"]);
    assert.deepEqual(subscription.position, { offset: 2, epoch: "e" }, "starts and ends count in the resume position");
  } finally {
    client.close();
  }
});

test("viewer: approvals are kept once each, rebuilt at every resubscribe, and resolved ones leave with their decision", async () => {
  const gateway = new ScriptedGateway();
  const client = new Client("ws://gateway/ws", { WebSocket: gateway.WebSocket, ...FAST });
  const requested = [];
  const resolved = [];
  const subscription = client.subscribe("p", {
    onApprovalRequested: (approval) => requested.push(approval),
    onApprovalResolved: (approval) => resolved.push(approval),
  });
  const settle = () => new Promise((resolve) => setTimeout(resolve, 30));
  const asked = (approvalId, position = {}) => ({ type: "approval_requested", project_id: "p", approval_id: approvalId, agent: "ops", data: { title: approvalId }, options: ["approve", "reject"], expires_at: "x", requested_at: "t", ...position });
  const decided = (approvalId, position = {}) => ({ type: "approval_resolved", project_id: "p", approval_id: approvalId, decision: "approve", user_id: "bob", decided_at: "t", ...position });
  const frames = (socket, list) => list.forEach((frame) => gateway.push(socket, frame));
  try {
    await client.connect();
    await subscription.ready;
    frames([...gateway.sockets][0], [asked("a", { offset: 1, epoch: "e" }), asked("b", { offset: 2, epoch: "e" }), asked("a"), asked("a", { offset: 1, epoch: "e" })]);
    await settle();
    assert.deepEqual([...subscription.approvals.keys()], ["a", "b"]);
    assert.deepEqual(requested.map((approval) => approval.approvalId), ["a", "b"], "a repeat is not reported again");
    const first = subscription.approvals.get("a");

    gateway.cut(); // the resubscribe: only "a" is still pending ("b" was resolved meanwhile, unreplayed)
    await waitForSubscribes(gateway, 2);
    await settle();
    assert.equal(subscription.approvals.size, 0, "emptied at the confirmation");
    frames([...gateway.sockets][0], [asked("a")]);
    await settle();
    assert.deepEqual([...subscription.approvals.keys()], ["a"], "rebuilt: b does not linger");
    assert.equal(requested.at(-1), first, "a came back as the same object, reported again");

    frames([...gateway.sockets][0], [decided("b", { offset: 3, epoch: "e" }), decided("c"), decided("a", { offset: 4, epoch: "e" }), decided("a", { offset: 4, epoch: "e" })]);
    await settle();
    assert.deepEqual(resolved.map((approval) => [approval.approvalId, approval.resolution.decision, approval.resolution.decidedBy]), [["b", "approve", "bob"], ["a", "approve", "bob"]], "a late resolution of one dropped is still reported; an unknown one is not");
    assert.equal(subscription.approvals.size, 0);
  } finally {
    client.close();
  }
});

async function waitForSubscribes(gateway, count) {
  while (gateway.received.filter((request) => request.action === "subscribe").length < count) await new Promise((resolve) => setTimeout(resolve, 5));
}

test("utf8Length counts what TextEncoder encodes", () => {
  for (const text of ["", "ascii", "é", "€", "👋", "a👋b", "\ud800", "x\udc00y", tokens.join("")]) {
    assert.equal(utf8Length(text), new TextEncoder().encode(text).length, JSON.stringify(text));
  }
});
