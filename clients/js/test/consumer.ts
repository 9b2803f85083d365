// An application using the package as one installed from npm would: type-checked with
// `tsc --strict` against the hand-written declarations, then run, so a name declared but not
// exported, or a declaration the module does not honour, fails the client tests
// (scripts/checks/client-tests.sh; test/tsconfig.json).

import {
  AgentStream,
  Approval,
  Client,
  RequestError,
  State,
  Subscription,
  backoffDelay,
  utf8Length,
  type ConnectionState,
  type Message,
  type StateChange,
  type Stream,
  type StreamUpdate,
} from "@agenticai/websocket-client";

interface TaskStatus {
  step: string;
  done: boolean;
}

const client = new Client("ws://127.0.0.1:9/ws", {
  getToken: async () => null,
  backoffBaseMs: 100,
  requestTimeoutMs: 1_000,
});
const states: StateChange[] = [];
const removeStateListener: () => void = client.on("state", (change) => states.push(change));
client.on("error", (error) => console.warn(error instanceof RequestError ? error.code : error.message));
client.on("stream", ({ stream, update }: { stream: Stream; update: StreamUpdate }) => console.log(stream.text, update.type));

const subscription: Subscription<TaskStatus> = client.subscribe<TaskStatus>("proj-42", {
  onMessage: (message: Message<TaskStatus>) => console.log(message.data.step, message.data.done, message.offset),
  onReset: ({ projectId }) => console.warn("reload", projectId),
  joinLeave: true,
  onPresence: (presence) => console.log(presence.clients.map((member) => member.user_id)),
  onApprovalRequested: (approval: Approval) => approval.decide(approval.options[0] ?? "approve"),
});
const streams: Map<string, Stream> = subscription.streams;
const initial: ConnectionState = client.state;

// Wrong uses the declarations must refuse (type-checked, never run).
function refusedByTheDeclarations(): void {
  // @ts-expect-error: no such event
  client.on("connected", () => {});
  // @ts-expect-error: a project id is a string
  client.subscribe(42);
  // @ts-expect-error: forward resolves with the queue's message id, a string
  const forwarded: Promise<number> = client.forward("dev", "proj-42", {});
  void forwarded;
}
void refusedByTheDeclarations;

async function agent(): Promise<void> {
  const stream: AgentStream = await client.startStream("proj-42", { agent: "dev", event: "answer" });
  const length: number = await stream.append("hello");
  const ended = await stream.end("completed");
  console.log(length, ended.length, ended.status satisfies "completed" | "failed" | "cancelled" | "abandoned");
}
void agent;

// What the module exports at run time matches the declarations' values (no @types/node needed).
function check(holds: boolean, what: string): void {
  if (!holds) throw new Error(`the module does not match its declarations: ${what}`);
}
check(initial === State.CLOSED, "a new client is closed");
check(streams.size === 0, "a new subscription has no streams");
check(utf8Length("é") === 2, "utf8Length counts bytes");
check(backoffDelay(3, 100, 1_000) <= 800, "backoffDelay stays within its bound");
const refused = new RequestError("forbidden", "not yours", { project_id: "proj-42" });
check(refused.code === "forbidden" && refused.projectId === "proj-42", "RequestError reads its reply");
for (const declared of [AgentStream, Approval, Subscription]) check(typeof declared === "function", "a declared class");
client.close();
removeStateListener();
check(states.at(-1)?.state === State.CLOSED, "close() ends in the closed state");
console.log("the declarations and the module agree");
