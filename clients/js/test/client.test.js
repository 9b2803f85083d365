// The JavaScript client in Node against the real gateway binary:
//   AGENTICAI_BIN=target/release/agenticai-websocket REDIS_PORT=6379 \
//     node --experimental-websocket --test clients/js/test/
// (scripts/checks/client-tests.sh starts Redis and runs this with the Chromium and Python suites.)

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";

import { Client, RequestError, backoffDelay, utf8Length } from "@agenticai/websocket-client";
import { record } from "./recorder.js";
import {
  JWT_SECRET,
  REDIS_URL,
  answerTokens,
  drainScenario,
  failingDevQueue,
  freePort,
  mintToken,
  publish,
  range,
  sleep,
  startProxy,
  startServer,
  streamDrainScenario,
  uniqueProject,
  waitFor,
} from "./harness.js";

// What the drain scenario measured, in the test's output.
function report(t, { missed, awayMs }) {
  t.diagnostic(`away ${awayMs} ms across the drain, ${missed} messages replayed on resume`);
}

function nodeSubscriber() {
  let recording = null;
  return {
    async start(url, projectId, options) {
      recording = record(url, projectId, options);
      await recording.ready;
    },
    log: async () => recording.log,
    stop: async () => recording?.client.close(),
  };
}

test("a drained server restarted on the same port (Redis): every message once, in order", async (t) => {
  report(t, await drainScenario(nodeSubscriber(), { takeover: false }));
});

test("another task takes over from a drained one (same Redis): every message once, in order", async (t) => {
  report(t, await drainScenario(nodeSubscriber(), { takeover: true }));
});

// What the stream drain scenario measured, in the test's output.
function reportStream(t, { awayMs, sinceDrainMs, missed, appendFrames, tokens }) {
  t.diagnostic(`viewer away ${awayMs} ms (reconnected ${sinceDrainMs} ms after the drain began), ${missed} bytes missed came in the snapshot; ${appendFrames} append frames for ${tokens} tokens`);
}

test("agent stream: a viewer drained mid-stream, its server restarted (Redis), ends with the exact text", async (t) => {
  reportStream(t, await streamDrainScenario(nodeSubscriber(), { takeover: false }));
});

test("agent stream: a viewer drained mid-stream, another task taking over, ends with the exact text", async (t) => {
  reportStream(t, await streamDrainScenario(nodeSubscriber(), { takeover: true }));
});

// A WebSocket that loses the first answer of type `type` with its connection (closed at once),
// and keeps every frame the server sent.
function losingWebSocket(type, frames) {
  let lost = false;
  return class extends WebSocket {
    set onmessage(handler) {
      super.onmessage = (event) => {
        const frame = JSON.parse(event.data);
        frames.push(frame);
        if (lost || frame.type !== type) return handler(event);
        lost = true;
        this.close(1000);
      };
    }
  };
}

test("agent stream: an append whose answer was lost is re-sent after the reconnect and applied once; a late joiner gets the snapshot", async () => {
  const server = await startServer();
  const projectId = uniqueProject("stream");
  const frames = [];
  const agent = new Client(server.url, { WebSocket: losingWebSocket("stream_appended", frames), backoffBaseMs: 50 });
  const early = record(server.url, projectId);
  let late = null;
  try {
    await early.ready;
    await agent.connect();
    const stream = await agent.startStream(projectId, { agent: "qa", event: "test-log", data: { suite: "login" } });
    assert.equal(stream.started.type, "stream_started");
    assert.ok(stream.started.started_at, "the start's answer says when");
    const tokens = answerTokens(60);
    const half = tokens.slice(0, 30);
    await Promise.all(half.map((token) => stream.append(token)));
    const duplicates = frames.filter((frame) => frame.type === "stream_appended" && frame.duplicate === true);
    assert.equal(duplicates.length, 1, "the re-sent append was answered as a duplicate");
    assert.ok(agent.state === "connected", "reconnected");
    late = record(server.url, projectId);
    await late.ready;
    // The snapshot may be a rollup window behind what the agent was answered: the appends that
    // follow it bring the copy up to date.
    const caughtUp = await waitFor("the late joiner's copy, caught up", () => late.log.streams[stream.streamId]?.text === half.join("") && late.log.streams[stream.streamId]);
    assert.equal(caughtUp.status, "open");
    await Promise.all(tokens.slice(30).map((token) => stream.append(token)));
    const ended = await stream.end("completed", { data: { passed: 12 } });
    const expected = tokens.join("");
    assert.deepEqual([ended.status, ended.length], ["completed", utf8Length(expected)]);
    for (const viewer of [early, late]) {
      const copy = await waitFor("the viewer's copy, ended", () => viewer.log.streams[stream.streamId]?.status === "completed" && viewer.log.streams[stream.streamId]);
      assert.deepEqual(copy, { text: expected, length: utf8Length(expected), status: "completed", agent: "qa", event: "test-log", stale: false });
    }
    assert.deepEqual(early.log.streamUpdates.at(0).type, "stream_started", "a subscriber from the start sees the start");
    assert.deepEqual(late.log.streamUpdates.at(0).type, "stream_snapshot", "a late joiner starts from the snapshot");
    await assert.rejects(stream.append("after the end"), { code: "stream_ended" });
  } finally {
    agent.close();
    early.client.close();
    late?.client.close();
    server.kill();
  }
});

test("agent stream: refusals name their code (stream_ended from the server, forbidden without publish rights)", async () => {
  const server = await startServer({ env: { JWT_SECRET } });
  const projectId = uniqueProject("p-stream");
  const reader = new Client(server.url, { token: mintToken({ projects: "p-*" }) });
  const writer = new Client(server.url, { token: mintToken({ projects: "p-*", scope: "publish" }) });
  try {
    await reader.connect();
    await assert.rejects(reader.startStream(projectId), { code: "forbidden" });
    await writer.connect();
    const stream = await writer.startStream(projectId, { streamId: "caller-chosen.1" });
    assert.equal(stream.streamId, "caller-chosen.1");
    await stream.append("x");
    const again = await writer.startStream(projectId, { streamId: "caller-chosen.1" });
    assert.equal(again.streamId, "caller-chosen.1", "a start naming an existing stream answers with it");
    await stream.end("cancelled");
    // The other handle does not know it ended: the server tells it.
    await assert.rejects(again.append("late"), { code: "stream_ended" });
    assert.equal(again.status, "cancelled");
  } finally {
    reader.close();
    writer.close();
    server.kill();
  }
});

test("a restart without Redis loses the history: onReset, then the new stream", async () => {
  const projectId = uniqueProject("reset");
  let server = await startServer();
  const { client, log, ready } = record(server.url, projectId, { restartDelayMaxMs: 100, backoffBaseMs: 100, backoffMaxMs: 300 });
  try {
    await ready;
    for (const n of range(3)) assert.ok(await publish(server.port, projectId, { n }));
    await waitFor("the first messages", () => log.received.length === 3);
    await server.stop();
    server = await startServer({ port: server.port }); // a new epoch: offsets start again at 1
    await waitFor("the reset", () => log.resets.length === 1);
    for (const n of [3, 4]) assert.ok(await publish(server.port, projectId, { n }));
    await waitFor("the messages after the reset", () => log.received.length === 5);
    assert.deepEqual(log.received, range(5));
    assert.equal(log.resets[0].projectId, projectId);
    assert.equal(log.resets[0].offset, 0, "the reset tells the new position: nothing published yet");
    assert.ok(log.resets[0].epoch, "and its epoch");
  } finally {
    client.close();
    server.kill();
  }
});

test("history shorter than the gap (HISTORY_SIZE, Redis): onReset at the current position", async () => {
  const env = { REDIS_URL, HISTORY_SIZE: "3" };
  const [first, second] = [await startServer({ env }), await startServer({ env })];
  const proxy = await startProxy(first.port);
  const projectId = uniqueProject("short-history");
  const { client, log, ready } = record(proxy.url, projectId, { restartDelayMaxMs: 100, backoffBaseMs: 100, backoffMaxMs: 300 });
  try {
    await ready;
    assert.ok(await publish(first.port, projectId, { n: 0 }));
    await waitFor("the first message", () => log.received.length === 1);
    await first.stop(); // the proxy still sends the subscriber there: it stays away
    for (const n of range(10).slice(1)) assert.ok(await publish(second.port, projectId, { n }));
    proxy.target = second.port;
    await waitFor("the reset", () => log.resets.length === 1);
    assert.deepEqual(log.resets[0].offset, 10, "the reset tells the current position");
    assert.ok(await publish(second.port, projectId, { n: 10 }));
    await waitFor("the message after the reset", () => log.received.length === 2);
    assert.deepEqual(log.received, [0, 10], "what the history no longer held is not replayed");
  } finally {
    client.close();
    proxy.close();
    first.kill();
    second.kill();
  }
});

test("a resume larger than the server's outbound queue (600 x 2 KB missed): replayed whole, no reconnect loop", async () => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  const projectId = uniqueProject("long-resume");
  const { client, log, ready } = record(proxy.url, projectId, { restartDelayMaxMs: 100, backoffBaseMs: 100, backoffMaxMs: 300 });
  try {
    await ready;
    assert.ok(await publish(server.port, projectId, { n: 0 }));
    await waitFor("the first message", () => log.received.length === 1);
    proxy.refuseUntil = Infinity; // away until the 600 are published
    proxy.cut();
    await waitFor("the disconnection", () => log.states.at(-1).state === "disconnected");
    const pad = "x".repeat(2_000);
    for (let n = 1; n <= 600; n++) assert.ok(await publish(server.port, projectId, { n, pad }));
    const reopened = Date.now();
    proxy.refuseUntil = 0;
    await waitFor("every message", () => log.received.length >= 601);
    await sleep(300); // a duplicate, or a close of the resumed connection, would show now
    assert.deepEqual(log.received, range(601), "every message once, in order");
    assert.deepEqual(log.resets, [], "the history covered the gap: no reset");
    const resumed = log.states.find((change) => change.state === "connected" && change.at >= reopened);
    const closedSince = log.states.filter((change) => change.state === "disconnected" && change.at > resumed.at);
    assert.deepEqual(closedSince, [], "the resumed connection stays open: no reconnect loop");
    assert.equal(log.states.at(-1).state, "connected");
  } finally {
    client.close();
    proxy.close();
    server.kill();
  }
});

test("tokens: refreshed at refresh_at across several expiries, on the same connection", async () => {
  const server = await startServer({ env: { JWT_SECRET, JWT_LEEWAY_SECS: "0" } });
  const projectId = uniqueProject("refresh");
  let minted = 0;
  const getToken = () => (minted++, mintToken({ projects: projectId, ttl: 3 }));
  const { client, log, ready } = record(server.url, projectId, { getToken });
  try {
    await ready;
    await sleep(7_000); // past two expiries of a 3 s token
    assert.ok(await publish(server.port, projectId, { n: 0 }));
    await waitFor("the message after the expiries", () => log.received.length === 1);
    assert.ok(minted >= 3, `refreshed before each expiry (${minted} tokens)`);
    assert.deepEqual(log.states.map((change) => change.state), ["connecting", "connected"], "never disconnected");
  } finally {
    client.close();
    server.kill();
  }
});

test("tokens: a 3005 (no fresh token at refresh time) reconnects with a fresh token and resumes", async () => {
  const server = await startServer({ env: { JWT_SECRET, JWT_LEEWAY_SECS: "0" } });
  const projectId = uniqueProject("expired");
  const first = mintToken({ projects: projectId, ttl: 2 });
  let calls = 0;
  // The identity provider hands back the same (expiring) token at refresh time, then fresh ones.
  const getToken = () => (++calls <= 2 ? first : mintToken({ projects: projectId, ttl: 60 }));
  const { client, log, ready } = record(server.url, projectId, { getToken, backoffBaseMs: 100 });
  try {
    await ready;
    assert.ok(await publish(server.port, projectId, { n: 0 }));
    const expired = await waitFor("the 3005 close", () => log.states.find((change) => change.code === 3005), 6_000);
    assert.equal(expired.state, "disconnected");
    await waitFor("the reconnection", () => log.states.at(-1).state === "connected");
    assert.ok(await publish(server.port, projectId, { n: 1 }));
    await waitFor("the message after the reconnection", () => log.received.length === 2);
    assert.deepEqual(log.received, [0, 1]);
    assert.deepEqual(log.resets, []);
  } finally {
    client.close();
    server.kill();
  }
});

test("tokens: an invalid token (3500) is retried once through getToken, then the client stops", async () => {
  const server = await startServer({ env: { JWT_SECRET } });
  const client = new Client(server.url, { getToken: () => "not-a-token", backoffBaseMs: 50 });
  const states = [];
  client.on("state", (change) => states.push(change));
  try {
    await assert.rejects(client.connect(), (error) => error instanceof RequestError && error.code === "unauthorized");
    assert.equal(client.state, "closed");
    assert.deepEqual(
      states.filter((change) => change.code === 3500).map((change) => change.state),
      ["disconnected", "closed"],
    );
  } finally {
    client.close();
    server.kill();
  }
});

test("tokens: a getToken that throws is named in the disconnected state and the error event, and retried", async () => {
  // What the README's sample getToken does in Node: fetch() of a relative URL throws.
  const cause = "Failed to parse URL from /my-app/gateway-token";
  const client = new Client("ws://127.0.0.1:9/ws", {
    getToken: async () => {
      throw new TypeError(cause);
    },
    backoffBaseMs: 20,
  });
  const lost = [];
  const errors = [];
  client.on("state", (change) => change.state === "disconnected" && lost.push(change));
  client.on("error", (error) => errors.push(error));
  const connecting = client.connect();
  try {
    await waitFor("two attempts", () => lost.length >= 2);
    assert.deepEqual(
      lost.slice(0, 2).map(({ code, reason }) => [code, reason]),
      Array(2).fill([1006, `token_unavailable: getToken failed: ${cause}`]),
    );
    assert.equal(errors[0].code, "token_unavailable");
  } finally {
    client.close();
  }
  await assert.rejects(connecting, (error) => error.code === "closed");
});

test("forward: resolves with the queue's message id; rejects with unknown_message_type and forbidden", async () => {
  const server = await startServer({ env: { JWT_SECRET } });
  const allowed = uniqueProject("fwd");
  const client = new Client(server.url, { token: mintToken({ projects: allowed }) });
  try {
    await client.connect();
    const id = await client.forward("dev", allowed, { task: "fix the login" }, { messageId: "m-1" });
    assert.match(id, /^local-/, "the spool's message id");
    await assert.rejects(client.forward("fly", allowed, {}), { code: "unknown_message_type" });
    await assert.rejects(client.forward("dev", "not-in-the-token", {}), (error) => error.code === "forbidden");
    await assert.rejects(client.publish(allowed, "status", {}), { code: "forbidden" }, "no publish scope");
    assert.equal((await client.ping()).type, "pong");
  } finally {
    client.close();
    server.kill();
  }
});

test("forward: forward_failed, naming the message, when the queue cannot take it", async () => {
  const server = await startServer({ env: { FORWARD_DEADLINE_SECS: "1" }, prepare: failingDevQueue });
  const client = new Client(server.url);
  try {
    await client.connect();
    const failed = await client.forward("dev", "failing", { n: 1 }, { messageId: "doomed" }).catch((error) => error);
    assert.ok(failed instanceof RequestError, String(failed));
    assert.equal(failed.code, "forward_failed");
    assert.equal(failed.messageId, "doomed");
    assert.match(await client.forward("qa", "failing", { n: 2 }), /^local-/, "the other queues still work");
  } finally {
    client.close();
    server.kill();
  }
});

test("a frame over the server's MAX_FRAME_BYTES (1009): the request fails, the client reconnects", async () => {
  const server = await startServer({ env: { MAX_FRAME_BYTES: "4096" } });
  const client = new Client(server.url, { backoffBaseMs: 50 });
  const states = [];
  client.on("state", (change) => states.push(change));
  try {
    await client.connect();
    await assert.rejects(client.forward("dev", "big", "x".repeat(8192)), { code: "message_too_big" });
    assert.equal(states.find((change) => change.state === "disconnected")?.code, 1009);
    assert.equal((await client.ping()).type, "pong", "reconnected");
    const local = new Client(server.url, { maxFrameBytes: 4096 });
    await assert.rejects(local.forward("dev", "big", "x".repeat(8192)), { code: "message_too_big" }, "refused before sending");
  } finally {
    client.close();
    server.kill();
  }
});

test("forward: busy when the connection has too many in flight", async () => {
  const server = await startServer({ env: { MAX_INFLIGHT_PER_CONNECTION: "1" } });
  const client = new Client(server.url);
  try {
    await client.connect();
    const results = await Promise.allSettled(range(20).map((n) => client.forward("qa", "busy-test", { n })));
    const codes = results.map((result) => (result.status === "fulfilled" ? "confirmed" : result.reason.code));
    assert.ok(codes.includes("confirmed"), codes.join());
    assert.ok(codes.includes("busy"), codes.join());
    assert.deepEqual(new Set(codes), new Set(["confirmed", "busy"]));
  } finally {
    client.close();
    server.kill();
  }
});

test("forward: one made while the server is down is sent once it is back; publish", async () => {
  let server = await startServer();
  const client = new Client(server.url, { restartDelayMaxMs: 50, backoffBaseMs: 100, backoffMaxMs: 300 });
  try {
    await client.connect();
    await server.stop();
    await waitFor("the disconnection", () => client.state === "disconnected");
    const forwarded = client.forward("ops", "down-test", { deploy: true }, { messageId: "while-down" });
    await sleep(300);
    server = await startServer({ port: server.port });
    assert.match(await forwarded, /^local-/);
    const published = await client.publish("down-test", "status", { ok: true });
    assert.equal(published.type, "publish_confirmed", "an open loopback server lets a connection publish");
    assert.equal(published.offset, 1);
  } finally {
    client.close();
    server.kill();
  }
});

test("backoff: each reconnect waits a random time within its bound, and waits what it says", async () => {
  const port = await freePort(); // nothing listens there
  const client = new Client(`ws://127.0.0.1:${port}/ws`, { backoffBaseMs: 100, backoffMaxMs: 400 });
  const changes = [];
  client.on("state", (change) => changes.push({ ...change, at: Date.now() }));
  client.connect().catch(() => {});
  try {
    await waitFor("seven attempts", () => changes.filter((change) => change.state === "connecting").length >= 7);
  } finally {
    client.close();
  }
  const waits = changes.filter((change) => change.state === "disconnected");
  waits.slice(0, 6).forEach((change, attempt) => {
    const bound = Math.min(400, 100 * 2 ** attempt);
    assert.equal(change.code, 1006);
    assert.ok(change.reconnectInMs >= 0 && change.reconnectInMs <= bound, `attempt ${attempt}: ${change.reconnectInMs} <= ${bound}`);
    const next = changes[changes.indexOf(change) + 1];
    const waited = next.at - change.at;
    assert.ok(waited >= change.reconnectInMs - 5 && waited <= change.reconnectInMs + 500, `waited ${waited} for ${change.reconnectInMs}`);
  });
  for (let attempt = 0; attempt < 40; attempt++) {
    const delay = backoffDelay(attempt, 500, 30_000);
    assert.ok(delay >= 0 && delay <= Math.min(30_000, 500 * 2 ** attempt));
  }
});

// Members as user ids, sorted: what presence lists and what the tests compare.
const userIds = (presence) => presence.clients.map((member) => member.user_id).sort();

function presenceRecorder(client, projectId) {
  const log = { joins: [], leaves: [], lists: [] };
  const subscription = client.subscribe(projectId, {
    joinLeave: true,
    onJoin: (event) => log.joins.push(event.client.user_id),
    onLeave: (event) => log.leaves.push(event.client.user_id),
    onPresence: (presence) => log.lists.push(userIds(presence)),
  });
  return { log, ready: subscription.ready };
}

test("presence: join and leave events, presence and presenceStats, forbidden", async () => {
  const server = await startServer({ env: { JWT_SECRET } });
  const projectId = uniqueProject("p-members");
  const alice = new Client(server.url, { token: mintToken({ sub: "alice", projects: "p-*", ttl: 600 }) });
  const bob = new Client(server.url, { token: mintToken({ sub: "bob", projects: "p-*", ttl: 600 }) });
  try {
    await alice.connect();
    const seen = presenceRecorder(alice, projectId);
    await seen.ready;
    await waitFor("alice's first member list", () => seen.log.lists.length === 1);
    assert.deepEqual(seen.log.lists[0], ["alice"], "after subscribing: the list, herself in it");
    await bob.connect();
    await bob.subscribe(projectId).ready;
    await waitFor("bob's join", () => seen.log.joins.length === 1);
    assert.deepEqual(seen.log.joins, ["bob"]);
    const presence = await bob.presence(projectId);
    assert.equal(presence.project_id, projectId);
    assert.deepEqual(userIds(presence), ["alice", "bob"]);
    assert.equal(presence.truncated, false);
    assert.ok(presence.clients.every((member) => member.connection_id && member.connected_at));
    const stats = await alice.presenceStats(projectId);
    assert.deepEqual([stats.type, stats.num_clients, stats.num_users], ["presence_stats", 2, 2]);
    const refused = await alice.presence("q-not-in-the-token").catch((error) => error);
    assert.ok(refused instanceof RequestError && refused.code === "forbidden", String(refused));
    await assert.rejects(alice.presenceStats("q-not-in-the-token"), { code: "forbidden" });
    bob.close();
    await waitFor("bob's leave", () => seen.log.leaves.length === 1);
    assert.deepEqual(seen.log.leaves, ["bob"]);
    assert.deepEqual(seen.log.joins, ["bob"], "a connection is not told about itself");
  } finally {
    alice.close();
    bob.close();
    server.kill();
  }
});

test("presence: after a restart (Redis), the resubscribed client gets the members it missed", async () => {
  const env = { REDIS_URL, JWT_SECRET };
  let restarting = await startServer({ env });
  const other = await startServer({ env }); // another task of the same service, up throughout
  const projectId = uniqueProject("p-reconcile");
  const token = (sub) => mintToken({ sub, projects: "p-*", ttl: 600 });
  const alice = new Client(restarting.url, { token: token("alice"), restartDelayMaxMs: 100, backoffBaseMs: 100, backoffMaxMs: 300 });
  const bob = new Client(other.url, { token: token("bob") });
  const carol = new Client(other.url, { token: token("carol") });
  try {
    await bob.connect();
    await bob.subscribe(projectId).ready;
    await alice.connect();
    const seen = presenceRecorder(alice, projectId);
    await waitFor("alice's first member list", () => seen.log.lists.length === 1);
    assert.deepEqual(seen.log.lists[0], ["alice", "bob"]);
    await restarting.stop();
    // Carol joins while alice is away: that join event is never sent to her.
    await carol.connect();
    await carol.subscribe(projectId).ready;
    restarting = await startServer({ port: restarting.port, env });
    await waitFor("the member list after the resubscribe", () => seen.log.lists.length === 2);
    assert.ok(seen.log.lists[1].includes("bob") && seen.log.lists[1].includes("carol"), `after the restart: ${seen.log.lists[1]}`);
    assert.ok(!seen.log.joins.includes("carol"), "the join made while away was not announced: the list tells it");
  } finally {
    for (const client of [alice, bob, carol]) client.close();
    restarting.kill();
    other.kill();
  }
});

// A WebSocket that also keeps every frame the server sent, to see what the library did about them.
function recordingWebSocket(frames) {
  return class extends WebSocket {
    constructor(url) {
      super(url);
      this.addEventListener("message", (event) => frames.push(JSON.parse(event.data)));
    }
  };
}

// With a publish key configured, a plain connection is a client and gets the client budget.
const LIMITED = { PUBLISH_API_KEYS: "k", CLIENT_RATE_PER_SECOND: "2", CLIENT_RATE_BURST: "2" };

test("rate_limited: a request over budget rejects with retryAfterMs; a refused forward is sent again once", async () => {
  const server = await startServer({ env: LIMITED });
  const frames = [];
  const client = new Client(server.url, { WebSocket: recordingWebSocket(frames) });
  try {
    await client.connect();
    const pings = await Promise.allSettled(range(4).map(() => client.ping()));
    const refused = pings.filter((result) => result.status === "rejected").map((result) => result.reason);
    assert.ok(refused.length >= 2, `over a burst of 2: ${refused.length} refused`);
    assert.ok(refused.every((error) => error.code === "rate_limited" && error.retryAfterMs > 0), refused.join());
    await sleep(Math.max(...refused.map((error) => error.retryAfterMs)));
    const ids = range(4).map((n) => `limited-${n}`);
    const sqsIds = await Promise.all(ids.map((messageId, n) => client.forward("dev", "limited", { n }, { messageId })));
    assert.ok(sqsIds.every((id) => /^local-/.test(id)), sqsIds.join());
    const refusedForwards = frames.filter((frame) => frame.code === "rate_limited" && frame.message_id);
    assert.ok(refusedForwards.length >= 1, "some forwards were refused at first");
    const confirmed = frames.filter((frame) => frame.type === "forward_confirmed").map((frame) => frame.message_id);
    assert.deepEqual(confirmed.sort(), ids, "each forward confirmed exactly once");
    const spooled = readFileSync(path.join(server.dataDir, "spool", "dev.jsonl"), "utf8").trim().split("\n");
    assert.deepEqual(spooled.map((line) => JSON.parse(line).body.message_id).sort(), ids, "and queued exactly once");
  } finally {
    client.close();
    server.kill();
  }
});

test("3504: a user over MAX_CONNECTIONS_PER_USER is refused and does not reconnect", async () => {
  const server = await startServer({ env: { JWT_SECRET, MAX_CONNECTIONS_PER_USER: "1" } });
  const token = mintToken({ sub: "dave", projects: "p-*", ttl: 600 });
  const first = new Client(server.url, { token });
  const second = new Client(server.url, { token, backoffBaseMs: 50 });
  const states = [];
  second.on("state", (change) => states.push(change));
  try {
    await first.connect();
    await assert.rejects(second.connect(), { code: "too_many_connections" });
    await sleep(500); // a reconnect loop would show now
    assert.equal(second.state, "closed");
    assert.deepEqual(states.map((change) => change.state), ["connecting", "closed"]);
    assert.equal(states[1].code, 3504);
    assert.equal((await first.ping()).type, "pong", "the first connection is untouched");
  } finally {
    first.close();
    second.close();
    server.kill();
  }
});

test("3509: a client flooding over its budget is closed and waits a minute before reconnecting", async () => {
  const server = await startServer({ env: { ...LIMITED, CLIENT_RATE_CLOSE_AFTER: "3" } });
  const client = new Client(server.url);
  const states = [];
  client.on("state", (change) => states.push(change));
  try {
    await client.connect();
    // One ping after another, ignoring rate_limited. (With ten sent at once, Node's WebSocket saw
    // about one connection in two end with 1006 and none of the answers, where a raw socket
    // sending the same frames always got the answers and the 3509 close frame; not settled yet.)
    const codes = [];
    for (let n = 0; n < 10 && !codes.includes("disconnected"); n++) {
      codes.push(await client.ping({ timeoutMs: 3_000 }).then(() => "pong", (error) => error.code));
    }
    assert.ok(codes.includes("rate_limited"), codes.join());
    const closed = await waitFor("the 3509 close", () => states.find((change) => change.code === 3509));
    assert.equal(closed.state, "disconnected");
    assert.ok(closed.reconnectInMs >= 60_000, `next attempt in ${closed.reconnectInMs} ms`);
  } finally {
    client.close();
    server.kill();
  }
});
