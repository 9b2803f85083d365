// Type declarations of agenticai-websocket.js (the client of the AgenticAI WebSocket gateway).

export declare const State: Readonly<{
  CONNECTING: "connecting";
  CONNECTED: "connected";
  /** Lost; a reconnect is scheduled (see StateChange.reconnectInMs). */
  DISCONNECTED: "disconnected";
  /** For good: close() was called, or a close code says not to reconnect. */
  CLOSED: "closed";
}>;
export type ConnectionState = (typeof State)[keyof typeof State];

export interface StateChange {
  state: ConnectionState;
  /** The close code (1006 when the connection ended without one), on "disconnected" and "closed". */
  code?: number;
  /** Why, when known: the server's close reason, or the client's own ("token_unavailable: getToken failed: ..."). */
  reason?: string;
  /** On "disconnected": when the next attempt starts. */
  reconnectInMs?: number;
  /** On "connecting": failed attempts since the last connection. */
  attempt?: number;
}

/** A project's stream position: offset grows by one per publication within an epoch. */
export interface Position {
  offset: number;
  epoch: string;
}

/** A publication pushed to a project's subscribers. */
export interface Message<Data = unknown> {
  type: "message";
  id: string;
  project_id: string;
  event: string | null;
  data: Data;
  published_at: string;
  /** Absent only on a publication made while the server's Redis was down. */
  offset?: number;
  epoch?: string;
}

/** Passed to onReset: the server could not replay what was missed; reload from the source of truth. */
export interface Reset {
  projectId: string;
  /** The project's current position (absent when the server could not read its history). */
  offset?: number;
  epoch?: string;
}

export interface PublishConfirmed {
  type: "publish_confirmed";
  project_id: string;
  id: string;
  subscribers: number;
  offset?: number;
  epoch?: string;
}

/** A connection subscribed to a project, as `presence` lists it and join/leave events name it. */
export interface PresenceClient {
  connection_id: string;
  /** The token's `sub`; null for an anonymous connection. */
  user_id: string | null;
  /** When it connected, ISO 8601 UTC. */
  connected_at: string;
  /** The token's `info` claim; null without one. */
  info: unknown;
}

export interface Presence {
  type: "presence";
  project_id: string;
  /** At most 1,000 members, in no particular order (`truncated` when there are more). */
  clients: PresenceClient[];
  num_clients: number;
  /** Distinct user ids (anonymous connections are clients, not users). */
  num_users: number;
  truncated: boolean;
}

export interface PresenceStats {
  type: "presence_stats";
  project_id: string;
  num_clients: number;
  num_users: number;
}

/** Another connection subscribed to (join) or stopped following (leave) the project. At most once. */
export interface JoinLeave {
  type: "join" | "leave";
  project_id: string;
  client: PresenceClient;
}

export type StreamStatus = "open" | "completed" | "failed" | "cancelled" | "abandoned";
/** What an agent may end its stream with (`abandoned` is the server's, after STREAM_IDLE_TIMEOUT_SECS). */
export type StreamEndStatus = "completed" | "failed" | "cancelled";
export type StreamAgent = "pm" | "dev" | "qa" | "ops";

/** A subscriber's copy of one agent stream (Subscription.streams): exact once snapshots and appends apply. */
export interface Stream<Data = unknown> {
  streamId: string;
  projectId: string;
  /** The text so far. */
  text: string;
  /** Its length in UTF-8 bytes. */
  length: number;
  status: StreamStatus;
  agent: string | null;
  event: string | null;
  /** The start's data. */
  data: Data | null;
  /** The end's data (a live end's `data`, a snapshot's `result`); null until then, or without. */
  result: unknown;
  /** When it started, RFC 3339 (null when the server did not say). */
  startedAt: string | null;
  /**
   * True when the copy missed text (an append that does not continue it: not expected); it
   * stays as it is until the next snapshot, which every resubscribe brings.
   */
  stale: boolean;
  /** True from a `stream_cancel_requested` (someone asked the agent to stop) until the stream ends. */
  cancelRequested: boolean;
}

/** The frames a subscriber receives about a stream (docs/protocol.md, "Agent streams"). */
export type StreamUpdate =
  | { type: "stream_started"; project_id: string; stream_id: string; agent?: string | null; event?: string | null; data?: unknown; started_at: string; offset?: number; epoch?: string }
  /** `text`: every append since the previous frame of the stream; `length`: the stream's length after it. */
  | { type: "stream_append"; project_id: string; stream_id: string; text: string; length: number }
  /** Replaces the copy: sent after every (re)subscribe for each open stream, and for an end in a replay. */
  | { type: "stream_snapshot"; project_id: string; stream_id: string; status: StreamStatus; text: string; length: number; agent?: string | null; event?: string | null; data?: unknown; result?: unknown; started_at?: string; offset?: number; epoch?: string }
  | { type: "stream_ended"; project_id: string; stream_id: string; status: Exclude<StreamStatus, "open">; length: number; data?: unknown; offset?: number; epoch?: string }
  /** Someone asked the agent to stop (`user_id`: who, null when anonymous); `stream_ended` `cancelled` follows. */
  | { type: "stream_cancel_requested"; project_id: string; stream_id: string; user_id?: string | null; offset?: number; epoch?: string };

/** How an approval was resolved (`approval_resolved`). */
export interface ApprovalResolution {
  /** One of the request's options, or "expired" when nobody answered by `expires_at`. */
  decision: string;
  /** The decider's user id; null when anonymous or expired. */
  decidedBy: string | null;
  comment: string | null;
  decidedAt: string | null;
}

/** The frames a subscriber receives about an approval (docs/protocol.md, "Approvals"). */
export type ApprovalUpdate =
  /** A live request carries offset and epoch; the ones sent again after a (re)subscribe do not. */
  | { type: "approval_requested"; project_id: string; approval_id: string; agent: string; data?: unknown; options: string[]; expires_at: string; requested_at: string; requested_by?: string; offset?: number; epoch?: string }
  | { type: "approval_resolved"; project_id: string; approval_id: string; decision: string; user_id?: string; comment?: string; decided_at: string; offset?: number; epoch?: string };

/** A pending question of an agent to the project's people (Subscription.approvals). */
export declare class Approval<Data = unknown> {
  readonly approvalId: string;
  readonly projectId: string;
  /** The agent whose queue gets the decision (pm, dev, qa, ops). */
  readonly agent: string | null;
  readonly data: Data | null;
  readonly options: string[];
  /** RFC 3339: decided "expired" then. */
  readonly expiresAt: string | null;
  readonly requestedAt: string | null;
  readonly requestedBy: string | null;
  /** Null while pending. */
  readonly resolution: ApprovalResolution | null;
  /**
   * Resolves with `approval_decided` once the agent's queue has the decision. Rejects with
   * "already_decided" (someone else won: RequestError.decision, .decidedBy), "not_found"
   * (unknown or expired), "invalid_request" (not an option), "forbidden" (no `approve` scope),
   * "disconnected" (its fate is unknown; not re-sent).
   */
  decide(decision: string, comment?: string, options?: { timeoutMs?: number }): Promise<ApprovalDecided>;
}

/** The answer to a decision that won. */
export interface ApprovalDecided {
  type: "approval_decided";
  project_id: string;
  approval_id: string;
  decision: string;
  /** The queue message's id (the same on a re-send: the agent drops a repeat by approval_id). */
  message_id: string;
}

/** The answer to an approval request (the agent's side). */
export interface ApprovalAsked {
  type: "approval_requested";
  project_id: string;
  approval_id: string;
  expires_at: string;
  offset?: number;
  epoch?: string;
}

export interface RequestApprovalOptions {
  /** The queue the decision goes to. */
  agent: StreamAgent;
  /** The question, shown to people (e.g. {title: "Deploy build 142 to prod?"}); comes back in the decision. */
  data?: unknown;
  /** 1 to 16 choices, not "expired" (default ["approve", "reject"]). */
  options?: string[];
  /** 1 to 604800 (default 3600). */
  expiresInSecs?: number;
  /** `[A-Za-z0-9._-]{1,64}`; default: a random UUID, so a request re-sent after a reconnect asks nothing new. */
  approvalId?: string;
  timeoutMs?: number;
}

/**
 * What the agent's queue receives once a decision won (SQS body; attribute Kind=approval_decision).
 * At least once: drop a repeat by approval_id.
 */
export interface ApprovalDecisionMessage<Data = unknown> {
  kind: "approval_decision";
  project_id: string;
  approval_id: string;
  /** One of the options, or "expired". */
  decision: string;
  comment: string | null;
  user_id: string | null;
  decided_at: string;
  /** The request's data. */
  data?: Data;
}

/** What the stream's agent queue receives on a cancel (SQS body; attribute Kind=cancel). */
export interface CancelMessage {
  kind: "cancel";
  project_id: string;
  stream_id: string;
  reason: string | null;
  user_id: string | null;
  requested_at: string;
}

/** The answer to a stream start. */
export interface StreamStarted {
  type: "stream_started";
  project_id: string;
  stream_id: string;
  /** With `length`, when a stream of the id given existed already. */
  status?: StreamStatus;
  length?: number;
  agent?: string | null;
  event?: string | null;
  data?: unknown;
  started_at: string;
  /** Absent when the server's engine is down. */
  offset?: number;
  epoch?: string;
}

/** The answer to a stream end. */
export interface StreamEnded {
  type: "stream_ended";
  project_id: string;
  stream_id: string;
  status: Exclude<StreamStatus, "open">;
  length: number;
  offset?: number;
  epoch?: string;
}

export interface StartStreamOptions {
  agent?: StreamAgent;
  event?: string;
  data?: unknown;
  /** `[A-Za-z0-9._-]{1,64}`; default: a random UUID, so a start re-sent after a reconnect starts nothing new. */
  streamId?: string;
  timeoutMs?: number;
}

/**
 * The agent's side of one stream (Client.startStream). Appends go out one frame at a time with
 * `at` (appends made meanwhile are batched into the next frame) and are re-sent across
 * reconnects: the server applies each once.
 */
export declare class AgentStream {
  readonly projectId: string;
  readonly streamId: string;
  readonly started: StreamStarted;
  /** "open", or the final status once ended. */
  readonly status: StreamStatus;
  /** The stream's length in UTF-8 bytes, as the server last confirmed it. */
  readonly length: number;
  /**
   * Resolves with the stream's length after `text` once applied. Rejects with the server's code
   * ("stream_ended", "stream_too_large", "stream_not_found", "forbidden", ...; "rate_limited" and
   * "busy" are waited out), and so does every append made after it.
   */
  append(text: string): Promise<number>;
  /** After every append made before it; resolves with the stream_ended answer. */
  end(status?: StreamEndStatus, options?: { data?: unknown; timeoutMs?: number }): Promise<StreamEnded>;
}

/** The length of `text` in UTF-8 bytes, what stream lengths count. */
export declare function utf8Length(text: string): number;

/**
 * A refused request. `code` is the server's error code (docs/protocol.md, "Error codes"), or one
 * of the client's own: "timeout", "disconnected" (the connection ended before the answer; the
 * request's fate is unknown), "closed", "message_too_big", "token_unavailable". connect() rejects
 * with "unauthorized" after a 3500 and "too_many_connections" after a 3504.
 */
export declare class RequestError extends Error {
  /** `reply`: the server's error frame, when it was the server that refused. */
  constructor(code: string, message: string, reply?: Record<string, unknown>);
  readonly code: string;
  /** The server's error frame, when it came from the server. */
  readonly reply: Record<string, unknown>;
  readonly messageId?: string;
  readonly projectId?: string;
  /** On "rate_limited": how long to wait before trying again. */
  readonly retryAfterMs?: number;
  /** On "already_decided": the decision that won, and who took it (absent when anonymous). */
  readonly decision?: string;
  readonly decidedBy?: string;
}

export interface SubscriptionHandlers<Data = unknown> {
  /** Every publication of the project, once, in order, across reconnects. */
  onMessage?(message: Message<Data>): void;
  /** The gap since the last message could not be replayed: reload, then keep following. */
  onReset?(reset: Reset): void;
  /** The subscription was refused or ended by the server (e.g. "forbidden"). */
  onError?(error: RequestError): void;
  /** Also receive other connections' join and leave events (and ask presence after each (re)subscribe). */
  joinLeave?: boolean;
  onJoin?(event: JoinLeave & { type: "join" }): void;
  onLeave?(event: JoinLeave & { type: "leave" }): void;
  /**
   * With joinLeave: the member list asked after each (re)subscribe. Events missed while away are
   * not sent again, so replace what you hold with it, then apply the events that follow.
   */
  onPresence?(presence: Presence): void;
  /** A stream of the project changed (Subscription.streams): started, appended to, replaced by a snapshot, asked to stop, ended. */
  onStream?(stream: Stream, update: StreamUpdate): void;
  /**
   * An approval entered Subscription.approvals: asked now, or still pending after a
   * (re)subscribe (the list is rebuilt then: called again for each, with the same object).
   */
  onApprovalRequested?(approval: Approval, update: ApprovalUpdate & { type: "approval_requested" }): void;
  /** An approval was decided (or expired) and left Subscription.approvals; `approval.resolution` says how. */
  onApprovalResolved?(approval: Approval, update: ApprovalUpdate & { type: "approval_resolved" }): void;
}

export declare class Subscription<Data = unknown> {
  readonly projectId: string;
  /** The last position seen, or null before the server told one. */
  readonly position: Position | null;
  /** Resolves at the first confirmation; rejects when the server refuses the subscription. */
  readonly ready: Promise<Subscription<Data>>;
  readonly joinLeave: boolean;
  /** The project's agent streams by stream id: the open ones, and ended ones until you delete them. */
  readonly streams: Map<string, Stream>;
  /**
   * The project's pending approval requests by approval id. Emptied at every (re)subscribe
   * confirmation and filled again by the pending ones the server sends after it, so one
   * resolved while away does not come back.
   */
  readonly approvals: Map<string, Approval>;
  unsubscribe(): Promise<void>;
}

export interface ClientOptions {
  /** A fixed token (no refresh: the client stops at its expiry, 3005). */
  token?: string;
  /** Called for each new connection and at refresh_at; null means anonymous. Preferred over token. */
  getToken?: () => string | null | Promise<string | null>;
  /** A WebSocket constructor; default: globalThis.WebSocket. */
  WebSocket?: typeof WebSocket;
  /** Default timeout of ping, publish, presence, presenceStats and unsubscribe (10000). */
  requestTimeoutMs?: number;
  /** Default timeout of forward, cancel and decideApproval (30000), counted from the call, across reconnects. */
  forwardTimeoutMs?: number;
  /** Time for a socket to open and authenticate before it is given up (10000). */
  connectTimeoutMs?: number;
  /** Backoff: attempt n waits a random time in [0, min(backoffMaxMs, backoffBaseMs * 2^n)] (500, 30000). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** After a 1012 (server restarting), a random delay in [0, restartDelayMaxMs] (5000). */
  restartDelayMaxMs?: number;
  /** After a 3509 (abusive client), a random delay in [abuseDelayMs, 2 * abuseDelayMs] (60000). */
  abuseDelayMs?: number;
  /** Requests larger than this are refused locally with "message_too_big" (262144, the server's default). */
  maxFrameBytes?: number;
}

export interface ForwardOptions {
  /** Default: a random UUID. Reuse one to retry a forward safely. */
  messageId?: string;
  timeoutMs?: number;
  /** Further fields of the forward request (they reach the agent's queue message). */
  fields?: Record<string, unknown>;
}

export interface ClientEvents {
  state: StateChange;
  /** Every publication of every subscription (after onMessage). */
  message: Message;
  /** Errors not tied to a request: a subscription ended, a failed refresh, a listener that threw. */
  error: RequestError | Error;
  /** Join and leave events of every joinLeave subscription (after onJoin/onLeave). */
  join: JoinLeave & { type: "join" };
  leave: JoinLeave & { type: "leave" };
  /** The member lists asked after (re)subscribes with joinLeave (after onPresence). */
  presence: Presence;
  /** Every stream change of every subscription (after onStream). */
  stream: { stream: Stream; update: StreamUpdate };
  /** Every approval entering a subscription's list (after onApprovalRequested). */
  approval_requested: { approval: Approval; update: ApprovalUpdate & { type: "approval_requested" } };
  /** Every approval resolved (after onApprovalResolved). */
  approval_resolved: { approval: Approval; update: ApprovalUpdate & { type: "approval_resolved" } };
}

/** The delay before reconnect attempt `attempt`: uniformly random in [0, min(maxMs, baseMs * 2^attempt)]. */
export declare function backoffDelay(attempt: number, baseMs?: number, maxMs?: number): number;

export declare class Client {
  constructor(url: string, options?: ClientOptions);
  readonly state: ConnectionState;
  on<E extends keyof ClientEvents>(event: E, listener: (value: ClientEvents[E]) => void): () => void;
  /** Starts connecting and reconnecting; resolves once connected, rejects if the client stops first. */
  connect(): Promise<void>;
  /** Closes for good; unanswered requests are rejected with "closed". */
  close(): void;
  subscribe<Data = unknown>(projectId: string, handlers?: SubscriptionHandlers<Data>): Subscription<Data>;
  unsubscribe(projectId: string): Promise<void>;
  /**
   * Resolves with the SQS message id once the queue has the message; re-sent on reconnect until
   * answered, and after `retry_after_ms` when refused with "rate_limited" (not executed).
   */
  forward(type: string, projectId: string, data: unknown, options?: ForwardOptions): Promise<string>;
  publish(projectId: string, event: string | null, data: unknown, options?: { timeoutMs?: number }): Promise<PublishConfirmed>;
  ping(options?: { timeoutMs?: number }): Promise<{ type: "pong" }>;
  /** Starts an agent stream (needs publish rights); re-sent across reconnects. */
  startStream(projectId: string, options?: StartStreamOptions): Promise<AgentStream>;
  /**
   * Asks a stream's agent to stop (the right to forward to the project); resolves with the cancel's
   * queue message id (null for a stream without an agent, ended at once). Re-sent across
   * reconnects: a repeat is answered with the first cancel's id. Rejects with "stream_ended",
   * "stream_not_found", "forward_failed", "forbidden", ...
   */
  cancel(projectId: string, streamId: string, reason?: string, options?: { timeoutMs?: number }): Promise<string | null>;
  /**
   * Asks the project's people a question (the right to publish); the decision goes to the agent's
   * queue. Re-sent across reconnects with its approvalId: the gateway asks it once.
   */
  requestApproval(projectId: string, options: RequestApprovalOptions): Promise<ApprovalAsked>;
  /** Answers an approval request by id (Approval.decide); not re-sent after a disconnect. */
  decideApproval(projectId: string, approvalId: string, decision: string, options?: { comment?: string; timeoutMs?: number }): Promise<ApprovalDecided>;
  /** Rejects with the error code ("forbidden", "unavailable", "rate_limited", ...). */
  presence(projectId: string, options?: { timeoutMs?: number }): Promise<Presence>;
  presenceStats(projectId: string, options?: { timeoutMs?: number }): Promise<PresenceStats>;
}
