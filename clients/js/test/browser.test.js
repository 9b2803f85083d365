// The JavaScript client in a real headless Chromium (Debian's /usr/bin/chromium, or CHROMIUM),
// driven through the DevTools protocol: a page served from loopback imports the module, and the
// test runs the drain scenarios of harness.js (publications, and an agent stream) with the page
// as the subscriber, reading what it recorded with Runtime.evaluate.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { Client } from "@agenticai/websocket-client";
import { record } from "./recorder.js";
import {
  JWT_SECRET,
  answerTokens,
  drainScenario,
  mintToken,
  publish,
  queueMessages,
  startServer,
  streamDrainScenario,
  uniqueProject,
  waitFor,
} from "./harness.js";

// The directory holding test/ (the package's, or a consumer's where client-tests.sh copied the
// tests), and the module as it resolves from there: the installed package in a consumer's.
const TESTS_ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const MODULE_FILE = fileURLToPath(import.meta.resolve("@agenticai/websocket-client"));
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";

let pageServer, browser, profile, page;

// What the drain scenario measured, in the test's output.
function report(t, { missed, awayMs }) {
  t.diagnostic(`away ${awayMs} ms across the drain, ${missed} messages replayed on resume`);
}

// Serves the module at /agenticai-websocket.js (test/page.html maps the package name there) and
// the test page and recorder under /test/, on loopback.
async function servePackage() {
  const types = { ".js": "text/javascript", ".html": "text/html" };
  const server = createServer((request, response) => {
    const pathname = new URL(request.url, "http://x").pathname;
    const file = pathname === "/agenticai-websocket.js" ? MODULE_FILE : path.join(TESTS_ROOT, path.normalize(pathname));
    try {
      if (!file.startsWith(TESTS_ROOT) && file !== MODULE_FILE) throw new Error("outside the tests' directory");
      const body = readFileSync(file);
      response.writeHead(200, { "Content-Type": types[path.extname(file)] ?? "application/octet-stream" });
      response.end(body);
    } catch {
      response.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

// One DevTools session over the page's WebSocket: send(method, params) resolves with the result.
async function devtools(webSocketUrl) {
  const socket = new WebSocket(webSocketUrl);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = () => reject(new Error(`cannot reach DevTools at ${webSocketUrl}`));
  });
  const waiting = new Map();
  let next = 0;
  socket.onmessage = (event) => {
    const reply = JSON.parse(event.data);
    const call = waiting.get(reply.id);
    if (!call) return;
    waiting.delete(reply.id);
    if (reply.error) call.reject(new Error(`${call.method}: ${reply.error.message}`));
    else call.resolve(reply.result);
  };
  return {
    send(method, params = {}) {
      const id = ++next;
      socket.send(JSON.stringify({ id, method, params }));
      return new Promise((resolve, reject) => waiting.set(id, { method, resolve, reject }));
    },
    // Evaluates an expression in the page (awaiting a promise), returning its JSON value.
    async evaluate(expression) {
      const { result, exceptionDetails } = await this.send("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true });
      if (exceptionDetails) throw new Error(`in the page: ${exceptionDetails.exception?.description ?? exceptionDetails.text}`);
      return result.value;
    },
    close: () => socket.close(),
  };
}

before(async () => {
  pageServer = await servePackage();
  profile = mkdtempSync(path.join(tmpdir(), "agenticai-chromium-"));
  browser = spawn(CHROMIUM, [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    `--user-data-dir=${profile}`, "--remote-debugging-port=0", "about:blank",
  ], { stdio: "ignore", detached: true }); // its own process group: its helpers are stopped with it
  const port = await waitFor("Chromium's DevToolsActivePort", () => {
    try {
      return readFileSync(path.join(profile, "DevToolsActivePort"), "utf8").split("\n")[0];
    } catch {
      return null;
    }
  });
  const target = await waitFor("Chromium's page", async () => {
    const targets = await (await fetch(`http://127.0.0.1:${port}/json/list`)).json();
    return targets.find((candidate) => candidate.type === "page");
  });
  page = await devtools(target.webSocketDebuggerUrl);
  await page.send("Page.navigate", { url: `http://127.0.0.1:${pageServer.address().port}/test/page.html` });
  await waitFor("the page's module", () => page.evaluate("window.pageReady === true"));
});

after(async () => {
  page?.close();
  if (browser && browser.exitCode === null && browser.signalCode === null) {
    const exited = new Promise((resolve) => browser.once("exit", resolve));
    // The whole group: Chromium's renderer and utility processes outlive the browser process
    // for a moment, still writing to the profile.
    process.kill(-browser.pid, "SIGTERM");
    await exited; // before removing the profile it writes to
  }
  pageServer?.close();
  if (profile) rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
});

function browserSubscriber() {
  return {
    async start(url, projectId, options) {
      const args = [url, projectId, options].map((value) => JSON.stringify(value)).join(", ");
      await page.evaluate(`(window.recording = window.record(${args})).ready`);
    },
    log: () => page.evaluate("window.recording.log"),
    stop: () => page.evaluate("window.recording.client.close(), true"),
  };
}

test("browser: a drained server restarted on the same port (Redis): every message once, in order", async (t) => {
  report(t, await drainScenario(browserSubscriber(), { takeover: false }));
});

test("browser: another task takes over from a drained one: every message once, in order", async (t) => {
  report(t, await drainScenario(browserSubscriber(), { takeover: true }));
});

test("browser: an agent stream followed across a drain, the server restarted (Redis): the exact text", async (t) => {
  const { awayMs, missed, appendFrames, tokens } = await streamDrainScenario(browserSubscriber(), { takeover: false });
  t.diagnostic(`viewer away ${awayMs} ms, ${missed} bytes missed came in the snapshot; ${appendFrames} append frames for ${tokens} tokens`);
});

test("browser: an agent stream followed across a drain, another task taking over: the exact text", async (t) => {
  const { awayMs, missed, appendFrames, tokens } = await streamDrainScenario(browserSubscriber(), { takeover: true });
  t.diagnostic(`viewer away ${awayMs} ms, ${missed} bytes missed came in the snapshot; ${appendFrames} append frames for ${tokens} tokens`);
});

test("browser: an agent streaming from the page; a viewer in Node gets the exact text", async () => {
  const server = await startServer();
  const projectId = uniqueProject("browser-agent");
  const viewer = record(server.url, projectId);
  const tokens = answerTokens(80);
  const expected = tokens.join("");
  try {
    await viewer.ready;
    const args = [server.url, projectId, tokens].map((value) => JSON.stringify(value)).join(", ");
    const ended = await page.evaluate(`(async (url, projectId, tokens) => {
      const { Client } = await import("/agenticai-websocket.js");
      const client = new Client(url);
      try {
        await client.connect();
        const stream = await client.startStream(projectId, { agent: "ops", event: "deploy-log" });
        const lengths = await Promise.all(tokens.map((token) => stream.append(token)));
        const ended = await stream.end("failed", { data: { step: "migrate" } });
        return { streamId: stream.streamId, last: lengths.at(-1), status: ended.status, length: ended.length };
      } finally {
        client.close();
      }
    })(${args})`);
    assert.deepEqual([ended.status, ended.length, ended.last], ["failed", Buffer.byteLength(expected), Buffer.byteLength(expected)]);
    const copy = await waitFor("the viewer's copy, ended", () => viewer.log.streams[ended.streamId]?.status === "failed" && viewer.log.streams[ended.streamId]);
    assert.deepEqual(copy, { text: expected, length: Buffer.byteLength(expected), status: "failed", agent: "ops", event: "deploy-log", stale: false });
  } finally {
    viewer.client.close();
    server.kill();
  }
});

test("browser: a restart without Redis calls onReset", async () => {
  const projectId = uniqueProject("browser-reset");
  let server = await startServer();
  const subscriber = browserSubscriber();
  try {
    await subscriber.start(server.url, projectId, { restartDelayMaxMs: 100, backoffBaseMs: 100, backoffMaxMs: 300 });
    assert.ok(await publish(server.port, projectId, { n: 0 }));
    await waitFor("the first message", async () => (await subscriber.log()).received.length === 1);
    await server.stop();
    server = await startServer({ port: server.port });
    const log = await waitFor("the reset", async () => {
      const log = await subscriber.log();
      return log.resets.length === 1 && log;
    });
    assert.equal(log.resets[0].projectId, projectId);
    assert.equal(log.states.find((change) => change.state === "disconnected").code, 1012);
  } finally {
    await subscriber.stop();
    server.kill();
  }
});

test("browser: presence, join and leave events with joinLeave", async () => {
  const server = await startServer({ env: { JWT_SECRET } });
  const projectId = uniqueProject("p-browser");
  const bob = new Client(server.url, { token: mintToken({ sub: "bob", projects: "p-*", ttl: 600 }) });
  const args = [server.url, projectId, mintToken({ sub: "alice", projects: "p-*", ttl: 600 })].map((value) => JSON.stringify(value));
  const seen = () => page.evaluate("window.presenceLog");
  try {
    await page.evaluate(`(async (url, projectId, token) => {
      const { Client } = await import("/agenticai-websocket.js");
      const log = (window.presenceLog = { joins: [], leaves: [], lists: [] });
      const client = (window.presenceClient = new Client(url, { token }));
      const ids = (presence) => presence.clients.map((member) => member.user_id).sort();
      const subscription = client.subscribe(projectId, {
        joinLeave: true,
        onJoin: (event) => log.joins.push(event.client.user_id),
        onLeave: (event) => log.leaves.push(event.client.user_id),
        onPresence: (presence) => log.lists.push(ids(presence)),
      });
      await client.connect();
      await subscription.ready;
      return true;
    })(${args.join(", ")})`);
    await waitFor("the page's first member list", async () => (await seen()).lists.length === 1);
    await bob.connect();
    await bob.subscribe(projectId).ready;
    await waitFor("bob's join, in the page", async () => (await seen()).joins.length === 1);
    const listed = await page.evaluate(`window.presenceClient.presence(${JSON.stringify(projectId)}).then((presence) => presence.clients.map((member) => member.user_id).sort())`);
    assert.deepEqual(listed, ["alice", "bob"]);
    const refused = await page.evaluate(`window.presenceClient.presence("q-not-allowed").then(() => "resolved", (error) => error.code)`);
    assert.equal(refused, "forbidden");
    bob.close();
    await waitFor("bob's leave, in the page", async () => (await seen()).leaves.length === 1);
    assert.deepEqual(await seen(), { joins: ["bob"], leaves: ["bob"], lists: [["alice"]] });
  } finally {
    await page.evaluate("window.presenceClient?.close(), true");
    bob.close();
    server.kill();
  }
});

test("browser: a person in the page decides an approval (racing one in Node) and cancels a streaming agent", async () => {
  const server = await startServer();
  const projectId = uniqueProject("browser-control");
  const agent = new Client(server.url);
  const rival = new Client(server.url);
  const args = [server.url, projectId].map((value) => JSON.stringify(value)).join(", ");
  try {
    await Promise.all([agent.connect(), rival.connect()]);
    await page.evaluate(`(async (url, projectId) => {
      const { Client } = await import("/agenticai-websocket.js");
      const log = (window.controlLog = { requested: [], resolved: [], streams: [] });
      const client = (window.controlClient = new Client(url));
      window.controlSubscription = client.subscribe(projectId, {
        onApprovalRequested: (approval) => log.requested.push(approval.approvalId),
        onApprovalResolved: (approval) => log.resolved.push([approval.approvalId, approval.resolution.decision]),
        onStream: (stream, update) => log.streams.push([update.type, stream.cancelRequested, stream.status]),
      });
      await client.connect();
      await window.controlSubscription.ready;
      return true;
    })(${args})`);
    const asked = await agent.requestApproval(projectId, { agent: "ops", data: { title: "Deploy?" } });
    await waitFor("the approval in the page", async () => (await page.evaluate("window.controlLog.requested.length")) === 1);
    // Taken before the race: when Node's decision wins first, its resolution can reach the page
    // (and leave `approvals`) before the page's own decide() would have looked it up.
    await page.evaluate(`window.pendingApproval = window.controlSubscription.approvals.get(${JSON.stringify(asked.approval_id)}); true`);
    const [inPage, inNode] = await Promise.all([
      page.evaluate(`window.pendingApproval.decide("approve", "from the page")
        .then((decided) => ({ won: decided.decision }), (error) => ({ code: error.code, decision: error.decision }))`),
      rival.decideApproval(projectId, asked.approval_id, "reject").then((decided) => ({ won: decided.decision }), (error) => ({ code: error.code, decision: error.decision })),
    ]);
    const winner = inPage.won ?? inNode.won;
    assert.ok(winner, "one decision won");
    assert.deepEqual([inPage, inNode].filter((outcome) => outcome.code), [{ code: "already_decided", decision: winner }], "the other is told the winner");
    await waitFor("the resolution in the page", async () => (await page.evaluate("window.controlLog.resolved.length")) === 1);
    assert.deepEqual(await page.evaluate("window.controlLog.resolved"), [[asked.approval_id, winner]]);
    assert.equal(await page.evaluate("window.controlSubscription.approvals.size"), 0);

    const stream = await agent.startStream(projectId, { agent: "dev", event: "answer" });
    await stream.append("on it");
    const messageId = await page.evaluate(`window.controlClient.cancel(${JSON.stringify(projectId)}, ${JSON.stringify(stream.streamId)}, "stop")`);
    const [cancel] = queueMessages(server, "dev").filter((message) => message.body.kind === "cancel");
    assert.equal(cancel.attributes.MessageId, messageId);
    await waitFor("the cancel in the page", async () => (await page.evaluate("window.controlLog.streams")).some(([type]) => type === "stream_cancel_requested"));
    await stream.end("cancelled");
    const updates = await waitFor("the end in the page", async () => {
      const streams = await page.evaluate("window.controlLog.streams");
      return streams.at(-1)[0] === "stream_ended" && streams;
    });
    assert.deepEqual(updates.slice(-2), [["stream_cancel_requested", true, "open"], ["stream_ended", false, "cancelled"]]);
  } finally {
    await page.evaluate("window.controlClient?.close(), true");
    agent.close();
    rival.close();
    server.kill();
  }
});
