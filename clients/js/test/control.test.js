// Agent control in the JavaScript client against the real gateway binary (local spool mode: the
// agents' queues are DATA_DIR/spool/<role>.jsonl, so cancels and decisions are confirmed without
// AWS): cancel of a streaming agent, and approvals as the viewers and the agent see them.
//   AGENTICAI_BIN=target/release/agenticai-websocket node --experimental-websocket --test clients/js/test/control.test.js

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

import { Client } from "@agenticai/websocket-client";
import { JWT_SECRET, mintToken, queueMessages, sleep, startProxy, startServer, uniqueProject, waitFor } from "./harness.js";

const FAST = { backoffBaseMs: 50, backoffMaxMs: 200 };

// A viewer of `projectId` recording its approval callbacks and stream updates.
function viewer(url, projectId, options = {}) {
  const client = new Client(url, { ...FAST, ...options });
  const log = { requested: [], resolved: [], streamUpdates: [], states: [] };
  client.on("state", (change) => log.states.push(change.state));
  const subscription = client.subscribe(projectId, {
    onApprovalRequested: (approval) => log.requested.push(approval),
    onApprovalResolved: (approval) => log.resolved.push(approval),
    onStream: (stream, update) => log.streamUpdates.push({ type: update.type, cancelRequested: stream.cancelRequested, status: stream.status, userId: update.user_id }),
  });
  return { client, subscription, log };
}

test("cancel: one queue message; viewers see stream_cancel_requested, then stream_ended cancelled once the agent ends it", async () => {
  const server = await startServer();
  const projectId = uniqueProject("cancel");
  const watching = viewer(server.url, projectId);
  const agent = new Client(server.url, FAST);
  const person = new Client(server.url, FAST);
  try {
    await Promise.all([watching.client.connect(), agent.connect(), person.connect()]);
    await watching.subscription.ready;
    const stream = await agent.startStream(projectId, { agent: "dev", event: "answer" });
    await stream.append("Working on the wrong branch");
    const messageId = await person.cancel(projectId, stream.streamId, "wrong branch");
    assert.ok(messageId, "resolved with the queue message's id");
    assert.equal(await person.cancel(projectId, stream.streamId, "again"), messageId, "a second cancel is answered with the first one's id");

    // The agent's side: its queue has the cancel; it stops and ends the stream as cancelled.
    const cancels = queueMessages(server, "dev").filter((message) => message.body.kind === "cancel");
    assert.equal(cancels.length, 1, "one queue message for two cancels");
    const [cancel] = cancels;
    assert.equal(cancel.attributes.Kind, "cancel");
    assert.deepEqual(
      [cancel.body.project_id, cancel.body.stream_id, cancel.body.reason, cancel.attributes.MessageId],
      [projectId, stream.streamId, "wrong branch", messageId],
    );
    const copy = await waitFor("the viewer's copy asked to stop", () => watching.subscription.streams.get(stream.streamId)?.cancelRequested && watching.subscription.streams.get(stream.streamId));
    assert.equal(copy.status, "open", "still open until the agent ends it");
    await stream.end("cancelled");
    await waitFor("the viewer's copy ended", () => copy.status === "cancelled");
    assert.equal(copy.cancelRequested, false, "cancelRequested lasts until the end");
    const types = watching.log.streamUpdates.map((update) => update.type);
    assert.deepEqual(types.slice(types.indexOf("stream_cancel_requested")), ["stream_cancel_requested", "stream_ended"]);
    await assert.rejects(person.cancel(projectId, stream.streamId), { code: "stream_ended" });

    const unattended = await agent.startStream(projectId, { event: "note" });
    assert.equal(await person.cancel(projectId, unattended.streamId), null, "no agent, no queue message");
    await waitFor("a stream without an agent, ended at once", () => watching.subscription.streams.get(unattended.streamId)?.status === "cancelled");
  } finally {
    for (const client of [watching.client, agent, person]) client.close();
    server.kill();
  }
});

test("approvals: a viewer that reconnects sees a pending approval again and, once decided, never again", async () => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  const projectId = uniqueProject("approval-reconnect");
  const watching = viewer(proxy.url, projectId);
  const agent = new Client(server.url, FAST);
  const decider = new Client(server.url, FAST);
  const reconnected = async (count) => {
    proxy.cut();
    await waitFor(`reconnection ${count}`, () => watching.log.states.filter((state) => state === "connected").length === count + 1);
    await sleep(300); // the pending approvals follow the confirmation; a stale one would come now
  };
  try {
    await Promise.all([watching.client.connect(), agent.connect(), decider.connect()]);
    await watching.subscription.ready;
    const asked = await agent.requestApproval(projectId, {
      agent: "ops",
      data: { title: "Deploy build 142 to prod?" },
      options: ["approve", "reject"],
      expiresInSecs: 600,
    });
    assert.ok(asked.approval_id && asked.expires_at);
    const approval = await waitFor("the approval at the viewer", () => watching.subscription.approvals.get(asked.approval_id));
    assert.deepEqual(
      [approval.agent, approval.data, approval.options, approval.expiresAt, approval.resolution],
      ["ops", { title: "Deploy build 142 to prod?" }, ["approve", "reject"], asked.expires_at, null],
    );

    await reconnected(1);
    assert.deepEqual([...watching.subscription.approvals.keys()], [asked.approval_id], "pending again after the reconnect");
    assert.equal(watching.log.requested.length, 2, "onApprovalRequested again for the rebuilt list");
    assert.equal(watching.log.requested[1], approval, "with the same object");

    const decided = await decider.decideApproval(projectId, asked.approval_id, "approve", { comment: "go" });
    assert.equal(decided.decision, "approve");
    await waitFor("the resolution at the viewer", () => watching.log.resolved.length === 1);
    assert.equal(watching.subscription.approvals.size, 0);
    assert.deepEqual([approval.resolution.decision, approval.resolution.comment], ["approve", "go"]);

    await reconnected(2);
    assert.equal(watching.subscription.approvals.size, 0, "decided: never again");
    assert.equal(watching.log.requested.length, 2);
  } finally {
    for (const client of [watching.client, agent, decider]) client.close();
    proxy.close();
    server.kill();
  }
});

test("approvals: one resolved while the viewer was away is gone after its reconnect", async () => {
  const server = await startServer();
  const proxy = await startProxy(server.port);
  const projectId = uniqueProject("approval-away");
  const watching = viewer(proxy.url, projectId);
  const agent = new Client(server.url, FAST);
  try {
    await Promise.all([watching.client.connect(), agent.connect()]);
    await watching.subscription.ready;
    const kept = await agent.requestApproval(projectId, { agent: "ops", data: { title: "kept" } });
    const gone = await agent.requestApproval(projectId, { agent: "ops", data: { title: "gone" } });
    await waitFor("both approvals at the viewer", () => watching.subscription.approvals.size === 2);
    proxy.refuseUntil = Date.now() + 1_000;
    proxy.cut();
    await agent.decideApproval(projectId, gone.approval_id, "reject");
    await waitFor("the reconnection", () => watching.log.states.filter((state) => state === "connected").length === 2);
    await waitFor("the pending one again", () => watching.log.requested.length === 3);
    await sleep(300);
    assert.deepEqual([...watching.subscription.approvals.keys()], [kept.approval_id]);
    // The resume replayed the resolution: reported although the list had been rebuilt.
    assert.deepEqual(watching.log.resolved.map((approval) => [approval.approvalId, approval.resolution.decision]), [[gone.approval_id, "reject"]]);
  } finally {
    for (const client of [watching.client, agent]) client.close();
    proxy.close();
    server.kill();
  }
});

test("approvals: two viewers deciding at once: one approval_decided, one already_decided with the same decision, one queue message", async () => {
  const server = await startServer();
  const projectId = uniqueProject("approval-race");
  const alice = viewer(server.url, projectId);
  const bob = viewer(server.url, projectId);
  const agent = new Client(server.url, FAST);
  try {
    await Promise.all([alice.client.connect(), bob.client.connect(), agent.connect()]);
    await Promise.all([alice.subscription.ready, bob.subscription.ready]);
    const asked = await agent.requestApproval(projectId, { agent: "ops", data: { title: "Deploy?" } });
    const [fromAlice, fromBob] = await Promise.all(
      [alice, bob].map((each) => waitFor("the approval", () => each.subscription.approvals.get(asked.approval_id))),
    );
    const outcomes = await Promise.allSettled([fromAlice.decide("approve", "alice says go"), fromBob.decide("reject", "bob says no")]);
    const won = outcomes.filter((outcome) => outcome.status === "fulfilled").map((outcome) => outcome.value);
    const lost = outcomes.filter((outcome) => outcome.status === "rejected").map((outcome) => outcome.reason);
    assert.equal(won.length, 1, "exactly one decision wins");
    assert.equal(lost.length, 1);
    assert.equal(won[0].type, "approval_decided");
    assert.equal(lost[0].code, "already_decided");
    assert.equal(lost[0].decision, won[0].decision, "the loser is told the winning decision");
    for (const each of [alice, bob]) {
      await waitFor("the resolution", () => each.log.resolved.length === 1);
      assert.equal(each.log.resolved[0].resolution.decision, won[0].decision, "everybody is told the same winner");
      assert.equal(each.subscription.approvals.size, 0);
    }
    const decisions = queueMessages(server, "ops").filter((message) => message.body.approval_id === asked.approval_id);
    assert.equal(decisions.length, 1, "one queue message");
    const [{ body, attributes }] = decisions;
    assert.equal(attributes.Kind, "approval_decision");
    assert.deepEqual(
      { kind: body.kind, project_id: body.project_id, decision: body.decision, data: body.data },
      { kind: "approval_decision", project_id: projectId, decision: won[0].decision, data: { title: "Deploy?" } },
    );
    assert.equal(attributes.MessageId, won[0].message_id);
    await assert.rejects(agent.decideApproval(projectId, "no-such-approval", "approve"), { code: "not_found" });
  } finally {
    for (const client of [alice.client, bob.client, agent]) client.close();
    server.kill();
  }
});

test("approvals: a request naming its approvalId asks once, however often it is sent", async () => {
  const server = await startServer();
  const projectId = uniqueProject("approval-named");
  const watching = viewer(server.url, projectId);
  const agent = new Client(server.url, FAST);
  try {
    await Promise.all([watching.client.connect(), agent.connect()]);
    await watching.subscription.ready;
    const ask = { agent: "ops", data: { title: "Deploy build 143?" }, approvalId: "deploy-143" };
    const answers = [await agent.requestApproval(projectId, ask), await agent.requestApproval(projectId, ask)];
    assert.deepEqual(answers.map((answer) => answer.approval_id), ["deploy-143", "deploy-143"]);
    await waitFor("the approval at the viewer", () => watching.subscription.approvals.has("deploy-143"));
    await sleep(300); // a second question would be announced now
    assert.equal(watching.log.requested.length, 1, "one question");
  } finally {
    watching.client.close();
    agent.close();
    server.kill();
  }
});

test("approvals with tokens: the loser is told who won; deciding needs the approve scope", async () => {
  const server = await startServer({ env: { JWT_SECRET } });
  const projectId = uniqueProject("p-approval-tokens");
  const person = (sub, scope) => viewer(server.url, projectId, { token: mintToken({ sub, projects: "p-*", ttl: 600, scope }) });
  const [alice, bob, carol] = [person("alice", "subscribe approve"), person("bob", "subscribe approve"), person("carol", undefined)];
  const agent = new Client(server.url, { ...FAST, token: mintToken({ sub: "ops-agent", projects: "p-*", ttl: 600, scope: "subscribe publish" }) });
  try {
    await Promise.all([alice, bob, carol].map((each) => each.client.connect().then(() => each.subscription.ready)));
    await agent.connect();
    const asked = await agent.requestApproval(projectId, { agent: "ops", data: { title: "Rotate the keys?" } });
    const approvals = await Promise.all([alice, bob, carol].map((each) => waitFor("the approval", () => each.subscription.approvals.get(asked.approval_id))));
    assert.equal(approvals[0].requestedBy, "ops-agent");
    await assert.rejects(approvals[2].decide("approve"), { code: "forbidden" }, "carol's token lacks the approve scope");
    const outcomes = await Promise.allSettled([approvals[0].decide("approve"), approvals[1].decide("reject")]);
    const winner = outcomes[0].status === "fulfilled" ? "alice" : "bob";
    const loss = outcomes.find((outcome) => outcome.status === "rejected").reason;
    const won = outcomes.find((outcome) => outcome.status === "fulfilled").value;
    assert.deepEqual([loss.code, loss.decision, loss.decidedBy], ["already_decided", won.decision, winner]);
    for (const each of [alice, bob, carol]) {
      await waitFor("the resolution", () => each.log.resolved.length === 1);
      assert.deepEqual([each.log.resolved[0].resolution.decision, each.log.resolved[0].resolution.decidedBy], [won.decision, winner]);
    }
    const [message] = queueMessages(server, "ops").filter((queued) => queued.body.approval_id === asked.approval_id);
    assert.equal(message.body.user_id, winner, "the agent learns who decided");
  } finally {
    for (const client of [alice.client, bob.client, carol.client, agent]) client.close();
    server.kill();
  }
});

test("the README's approval example runs: the person approves, the agent reads the decision from its queue", async () => {
  const server = await startServer();
  try {
    const example = fileURLToPath(new URL("../examples/approval.mjs", import.meta.url));
    const { stdout } = await promisify(execFile)(process.execPath, [...process.execArgv, example], {
      env: { ...process.env, GATEWAY_URL: server.url, SPOOL_DIR: path.join(server.dataDir, "spool"), PROJECT_ID: uniqueProject("example") },
      timeout: 20_000,
    });
    assert.match(stdout, /person sees: Deploy build 142 to prod\? \[approve\/reject\]/);
    assert.match(stdout, /agent got: approve \(green build, ship it\) by anonymous for "Deploy build 142 to prod\?"/);
  } finally {
    server.kill();
  }
});
