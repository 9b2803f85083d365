// An approval end to end, runnable against a gateway without AWS (its queues are the local spool):
//   WEBSOCKET_HOST=127.0.0.1 cargo run --release        (from the repository root, in another shell)
//   node clients/js/examples/approval.mjs               (Node 20/21: add --experimental-websocket)
// Environment: GATEWAY_URL (ws://127.0.0.1:8080/ws), SPOOL_DIR (data/spool: the gateway's
// DATA_DIR/spool), PROJECT_ID (proj-42).
//
// The Ops agent asks "deploy?", a person (a viewer of the project) approves, and the agent reads
// the decision from its queue. With SQS the same body arrives by ReceiveMessage on
// SQS_QUEUE_URL_OPS, with the message attribute Kind=approval_decision.

import { readFile } from "node:fs/promises";
import path from "node:path";

import { Client } from "@agenticai/websocket-client";

const url = process.env.GATEWAY_URL ?? "ws://127.0.0.1:8080/ws";
const opsQueue = path.join(process.env.SPOOL_DIR ?? "data/spool", "ops.jsonl");
const projectId = process.env.PROJECT_ID ?? "proj-42";

// The person: every pending approval of the project, again after each reconnect.
const person = new Client(url);
const project = person.subscribe(projectId, {
  onApprovalRequested: async (approval) => {
    console.log(`person sees: ${approval.data.title} [${approval.options.join("/")}] until ${approval.expiresAt}`);
    try {
      await approval.decide("approve", "green build, ship it");
    } catch (error) {
      // already_decided: someone was faster (error.decision, error.decidedBy); not_found: expired.
      console.log(`person's decision lost: ${error.code} ${error.decision ?? ""}`);
    }
  },
  onApprovalResolved: (approval) => console.log(`person sees it resolved: ${approval.resolution.decision}`),
});
await person.connect();
await project.ready;

// The agent: asks, then waits for the decision in its queue (at least once: drop a repeat by
// approval_id; "expired" when nobody answered by expires_at).
const agent = new Client(url);
await agent.connect();
const { approval_id: approvalId } = await agent.requestApproval(projectId, {
  agent: "ops",
  data: { title: "Deploy build 142 to prod?" },
  options: ["approve", "reject"],
  expiresInSecs: 600,
});

async function decisionFor(approvalId) {
  for (;;) {
    const lines = (await readFile(opsQueue, "utf8").catch(() => "")).split("\n").filter(Boolean);
    const decision = lines.map((line) => JSON.parse(line).body).find((body) => body.kind === "approval_decision" && body.approval_id === approvalId);
    if (decision) return decision;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
const { decision, comment, user_id: decidedBy, data } = await decisionFor(approvalId);
console.log(`agent got: ${decision} (${comment ?? "no comment"}) by ${decidedBy ?? "anonymous"} for "${data.title}"`);
person.close();
agent.close();
