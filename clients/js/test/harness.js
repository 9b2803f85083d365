// Real processes for the client tests: the gateway binary (AGENTICAI_BIN), publishing over its
// HTTP API, tokens from its `token` command, a TCP proxy standing in for a load balancer, and the
// scenarios shared by the Node and the Chromium suites: a numbered series of publications, and
// an agent stream, each followed across a drain. Redis is started by
// scripts/checks/client-tests.sh (REDIS_PORT).

import { spawn, execFileSync } from "node:child_process";
import { Client, utf8Length } from "@agenticai/websocket-client";
import { mkdirSync, mkdtempSync, openSync, readFileSync, symlinkSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import assert from "node:assert/strict";

export const BIN = process.env.AGENTICAI_BIN;
export const REDIS_URL = process.env.REDIS_PORT ? `redis://127.0.0.1:${process.env.REDIS_PORT}` : null;
export const JWT_SECRET = "3f".repeat(32);
if (!BIN) throw new Error("set AGENTICAI_BIN to the gateway binary (scripts/checks/client-tests.sh does)");

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function freePort() {
  const server = net.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export function uniqueProject(name) {
  return `${name}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Polls `check` every 25 ms until it returns a truthy value or `timeoutMs` passes. */
export async function waitFor(what, check, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/**
 * Starts the gateway on loopback (`port`, or a free one) with `env` on top of the defaults the
 * tests need (`prepare(dataDir)` runs first), and waits until it answers /ready.
 */
export async function startServer({ port, env = {}, prepare = () => {} } = {}) {
  port ??= await freePort();
  const dataDir = mkdtempSync(path.join(tmpdir(), "agenticai-client-test-"));
  prepare(dataDir);
  const log = openSync(path.join(dataDir, "server.log"), "a");
  const child = spawn(BIN, [], {
    env: {
      PATH: process.env.PATH,
      WEBSOCKET_HOST: "127.0.0.1",
      WEBSOCKET_PORT: String(port),
      DATA_DIR: dataDir,
      DRAIN_SECONDS: "1",
      RUST_LOG: "warn",
      ...env,
    },
    stdio: ["ignore", log, log],
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const server = {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    dataDir,
    exited,
    /** SIGTERM: the server drains (clients get 1012) and exits. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const { code } = await exited;
      assert.equal(code, 0, `the server exits 0 after draining (log: ${dataDir}/server.log)`);
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
  };
  await waitFor(`the server on port ${port} (log: ${dataDir}/server.log)`, async () => {
    if (child.exitCode !== null) throw new Error(`the server exited: ${readFileSync(path.join(dataDir, "server.log"), "utf8")}`);
    try {
      return (await fetch(`http://127.0.0.1:${port}/ready`)).ok;
    } catch {
      return false;
    }
  });
  return server;
}

/** A `prepare` for startServer: the dev queue's spool is /dev/full, so every forward to it fails. */
export function failingDevQueue(dataDir) {
  mkdirSync(path.join(dataDir, "spool"));
  symlinkSync("/dev/full", path.join(dataDir, "spool", "dev.jsonl"));
}

/** POST /api/v1/publish; returns the receipt, or null when the server refused or was unreachable. */
export async function publish(port, projectId, data) {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/api/v1/publish`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ project_id: projectId, type: "step", data }),
    });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

/** A connection token signed with JWT_SECRET by the server's own `token` command. */
export function mintToken({ sub = "alice", projects = "*", ttl = 60, scope } = {}) {
  const args = ["token", "--sub", sub, "--projects", projects, "--ttl", String(ttl)];
  if (scope) args.push("--scope", scope);
  return execFileSync(BIN, args, { env: { JWT_SECRET } }).toString().trim();
}

/**
 * A TCP proxy on loopback sending each new connection to `proxy.target` (a port): a load balancer.
 * Until `proxy.refuseUntil` (a Date.now() time) it drops new connections, as a load balancer does
 * while it registers a new target.
 */
export async function startProxy(target) {
  const sockets = new Set();
  const server = net.createServer((client) => {
    if (Date.now() < proxy.refuseUntil) return client.destroy();
    const upstream = net.connect(proxy.target, "127.0.0.1");
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => {
        sockets.delete(socket);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const proxy = {
    target,
    refuseUntil: 0,
    url: `ws://127.0.0.1:${server.address().port}/ws`,
    /** Drops the connections open now (a network loss: no close frame); new ones still pass. */
    cut() {
      for (const socket of sockets) socket.destroy();
    },
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
  return proxy;
}

/**
 * Publishes `count` numbered messages ({n: 0..count-1}) one every `intervalMs`, each to
 * `target()`'s port, retrying a number (every 20 ms) until a server accepted it: a refused
 * or unreachable publish reached nobody, so the stream holds each number once.
 */
export async function publishStream(projectId, count, target, { intervalMs = 15, onPublished = () => {} } = {}) {
  for (let n = 0; n < count; n++) {
    const deadline = Date.now() + 20_000;
    while (!(await publish(target(), projectId, { n }))) {
      if (Date.now() > deadline) throw new Error(`no server accepted publication ${n}`);
      await sleep(20);
    }
    await onPublished(n);
    await sleep(intervalMs);
  }
}

export const range = (count) => Array.from({ length: count }, (_, n) => n);

/**
 * The scenario that matters: a subscriber (`subscriber.start(url, projectId, options)`,
 * `subscriber.log()` -> {received, resets, states}, in Node or in a browser) follows a numbered
 * stream while its server drains with SIGTERM (1012) and either restarts on the same port
 * (`takeover: false`) or another task behind the same proxy takes over (`takeover: true`); both
 * share Redis. It must end with every number exactly once, in order, and no reset. Returns how
 * many messages were published while the subscriber was away, and for how long.
 */
export async function drainScenario(subscriber, { takeover }) {
  assert.ok(REDIS_URL, "REDIS_PORT is set (scripts/checks/client-tests.sh starts Redis)");
  const projectId = uniqueProject(takeover ? "takeover" : "restart");
  const env = { REDIS_URL };
  let current = await startServer({ env });
  const standby = takeover ? await startServer({ env }) : null;
  const proxy = await startProxy(current.port);
  const servers = [current, standby];
  try {
    await subscriber.start(proxy.url, projectId, { restartDelayMaxMs: 300, backoffBaseMs: 100, backoffMaxMs: 500 });
    const count = 120;
    let restart = null;
    const publishedAt = [];
    await publishStream(projectId, count, () => current.port, {
      onPublished: (n) => {
        publishedAt.push(Date.now());
        if (n !== 40) return;
        // Mid-stream: the draining server keeps publishing until it exits; the next one
        // (restarted, or the standby) takes the stream over.
        const draining = current;
        if (takeover) {
          proxy.target = standby.port;
          proxy.refuseUntil = Date.now() + 400; // so the subscriber is away while messages go on
          current = standby;
        }
        else proxy.refuseUntil = Infinity; // until the restarted task is registered
        restart = draining.stop().then(async () => {
          if (takeover) return;
          servers.push((current = await startServer({ port: draining.port, env })));
          proxy.refuseUntil = Date.now() + 400;
        });
      },
    });
    await restart;
    const log = await waitFor("every message at the subscriber", async () => {
      const log = await subscriber.log();
      return log.received.length >= count && log;
    });
    await sleep(200); // a duplicate would arrive now
    const final = await subscriber.log();
    assert.deepEqual(final.received, range(count), "every message exactly once, in order");
    assert.deepEqual(final.resets, [], "the history covered the gap: no reset");
    const drained = final.states.find((change) => change.state === "disconnected");
    assert.equal(drained?.code, 1012, "the subscriber was drained with 1012");
    assert.ok(drained.reconnectInMs <= 300, `1012 reconnects within restartDelayMaxMs (${drained.reconnectInMs} ms)`);
    assert.equal(log.states.at(-1).state, "connected");
    const reconnected = final.states.find((change) => change.state === "connected" && change.at > drained.at);
    const missed = publishedAt.filter((at) => at > drained.at && at < reconnected.at).length;
    assert.ok(missed > 0, "messages were published while the subscriber was away: the resume replayed them");
    return { missed, awayMs: reconnected.at - drained.at };
  } finally {
    await subscriber.stop();
    proxy.close();
    for (const server of servers) server?.kill();
  }
}

/** The tokens of an agent's answer (some of them multibyte): what a viewer's copy must end as, joined. */
export const answerTokens = (count) => range(count).map((n) => (n % 7 === 3 ? `wört${n} ` : n % 11 === 5 ? `👋${n} ` : `tok${n} `));

/**
 * An agent (the library's AgentStream, in Node) streams an answer of 150 tokens, one every 15 ms
 * without waiting for answers, while a viewer (`viewer.start(url, projectId, options)`,
 * `viewer.log()` -> {streams, streamUpdates, states}, in Node or in a browser) follows it; each
 * reaches the gateway through its own proxy, and mid-stream their server drains (1012) and
 * restarts on the same port (`takeover: false`) or another task takes over (`takeover: true`),
 * sharing Redis, where the stream lives. The viewer's proxy refuses it 400 ms longer than the
 * agent's, so tokens go on while it is away; its resubscribe brings a snapshot holding them, and
 * it must end with the exact text: every token once, in order, status completed.
 */
export async function streamDrainScenario(viewer, { takeover }) {
  assert.ok(REDIS_URL, "REDIS_PORT is set (scripts/checks/client-tests.sh starts Redis)");
  const projectId = uniqueProject(takeover ? "stream-takeover" : "stream-restart");
  const env = { REDIS_URL };
  let current = await startServer({ env });
  const standby = takeover ? await startServer({ env }) : null;
  const proxy = await startProxy(current.port);
  const agentProxy = await startProxy(current.port);
  const servers = [current, standby];
  const fast = { restartDelayMaxMs: 300, backoffBaseMs: 100, backoffMaxMs: 500 };
  const agent = new Client(agentProxy.url, fast);
  try {
    await viewer.start(proxy.url, projectId, fast);
    await agent.connect();
    const stream = await agent.startStream(projectId, { agent: "dev", event: "answer", data: { task: "drain" } });
    const tokens = answerTokens(150);
    const expected = tokens.join("");
    let restart = null;
    let drainedAt = null;
    const appended = [];
    for (const [n, token] of tokens.entries()) {
      appended.push(stream.append(token));
      if (n === 40) {
        const draining = current;
        drainedAt = Date.now();
        if (takeover) {
          proxy.target = agentProxy.target = standby.port;
          proxy.refuseUntil = Date.now() + 400; // so the viewer is away while tokens go on
          current = standby;
        } else proxy.refuseUntil = agentProxy.refuseUntil = Infinity; // until the restarted task is registered
        restart = draining.stop().then(async () => {
          if (takeover) return;
          servers.push((current = await startServer({ port: draining.port, env })));
          agentProxy.refuseUntil = 0;
          proxy.refuseUntil = Date.now() + 400;
        });
      }
      await sleep(15);
    }
    await restart;
    const lengths = await Promise.all(appended);
    assert.equal(lengths.at(-1), utf8Length(expected), "the agent's last append confirmed the whole text");
    const ended = await stream.end("completed");
    assert.deepEqual([ended.status, ended.length], ["completed", utf8Length(expected)], "the server holds every token once");
    const copy = await waitFor("the viewer's copy, ended", async () => {
      const log = await viewer.log();
      return log.streams[stream.streamId]?.status === "completed" && log;
    });
    const final = copy.streams[stream.streamId];
    assert.equal(final.text, expected, "the viewer's copy is the exact text");
    assert.deepEqual([final.length, final.stale, final.agent, final.event], [utf8Length(expected), false, "dev", "answer"]);
    const drained = copy.states.find((change) => change.state === "disconnected");
    assert.equal(drained?.code, 1012, "the viewer was drained with 1012");
    const reconnected = copy.states.find((change) => change.state === "connected" && change.at > drained.at);
    assert.ok(reconnected, "and reconnected");
    const snapshot = copy.streamUpdates.find((update) => update.type === "stream_snapshot" && update.at >= reconnected.at);
    assert.ok(snapshot, "the resubscribe brought the stream's snapshot");
    const before = copy.streamUpdates.filter((update) => update.at <= drained.at).at(-1)?.length ?? 0;
    const missed = snapshot.length - before;
    assert.ok(missed > 0, `the snapshot held text appended while the viewer was away (${before} -> ${snapshot.length} bytes)`);
    const frames = copy.streamUpdates.filter((update) => update.type === "stream_append").length;
    return { awayMs: reconnected.at - drained.at, sinceDrainMs: reconnected.at - drainedAt, missed, appendFrames: frames, tokens: tokens.length };
  } finally {
    agent.close();
    await viewer.stop();
    proxy.close();
    agentProxy.close();
    for (const server of servers) server?.kill();
  }
}

/** The messages a queue received in the server's local spool (`DATA_DIR/spool/<role>.jsonl`), parsed. */
export function queueMessages(server, role) {
  try {
    return readFileSync(path.join(server.dataDir, "spool", `${role}.jsonl`), "utf8").split("\n").filter(Boolean).map((line) => JSON.parse(line));
  } catch (error) {
    if (error.code === "ENOENT") return [];
    throw error;
  }
}
