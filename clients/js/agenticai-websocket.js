// Client of the AgenticAI WebSocket gateway (docs/protocol.md), for browsers and Node 22+.
//
// One ES module, no dependencies, no build step. A Client holds one connection at a time and
// replaces it on its own: it authenticates with the first frame, refreshes its token at
// `refresh_at`, reconnects with exponential backoff and full jitter (a short random delay after
// 1012), resumes every subscription from its last offset and epoch, and re-sends forwards not yet
// confirmed with their `message_id`, or refused with `rate_limited` (not executed: sent again after
// `retry_after_ms`). Join/leave events are at most once, so after every (re)subscribe with
// `joinLeave` it asks `presence` and hands the fresh member list to `onPresence`.
// Agent streams: an AgentStream sends appends one at a time, each with `at` (the length before
// it), so one re-sent after a reconnect is applied once; a Subscription keeps a copy of each of
// its project's streams, replaced by every snapshot and grown by appends that continue it.
// Agent control: cancel() asks a stream's agent to stop (re-sent across reconnects: the server
// answers a repeat with the first cancel's message id); a Subscription keeps its project's
// pending approvals, emptied at every (re)subscribe confirmation and filled again by the
// `approval_requested` frames that follow it, so one resolved while away does not linger.
// What it does on each close code: README.md, "Close codes".

/** Connection states, in the order a connection goes through them. */
export const State = Object.freeze({
  CONNECTING: "connecting",
  CONNECTED: "connected",
  DISCONNECTED: "disconnected", // lost; a reconnect is scheduled
  CLOSED: "closed", // for good: close() was called, or a close code says not to reconnect
});

/** A request the server (or the client, for `timeout`, `disconnected`, `closed`, `message_too_big`) refused. */
export class RequestError extends Error {
  constructor(code, message, reply = {}) {
    super(`${code}: ${message}`);
    this.name = "RequestError";
    this.code = code;
    this.reply = reply;
    this.messageId = reply.message_id;
    this.projectId = reply.project_id;
    this.retryAfterMs = reply.retry_after_ms;
    /** On "already_decided": the winning decision and who took it (absent when anonymous). */
    this.decision = reply.decision;
    this.decidedBy = reply.decided_by;
  }
}

const DEFAULTS = Object.freeze({
  requestTimeoutMs: 10_000,
  forwardTimeoutMs: 30_000, // the server may take FORWARD_DEADLINE_SECS (10 s) to answer one (or a cancel, a decision)
  connectTimeoutMs: 10_000,
  backoffBaseMs: 500,
  backoffMaxMs: 30_000,
  restartDelayMaxMs: 5_000, // after 1012, as docs/protocol.md advises
  abuseDelayMs: 60_000, // after 3509
  maxFrameBytes: 256 * 1024, // the server's default MAX_FRAME_BYTES
});

// Close codes with a behaviour other than "reconnect with backoff" (README.md has the table).
const NORMAL = 1000;
const PROTOCOL_ERROR = 1002;
const INVALID_PAYLOAD = 1007;
const MESSAGE_TOO_BIG = 1009;
const SERVICE_RESTART = 1012;
const TOKEN_EXPIRED = 3005;
const INVALID_TOKEN = 3500;
const AUTHENTICATION_TIMEOUT = 3502;
const TOO_MANY_CONNECTIONS = 3504;
const ABUSIVE_CLIENT = 3509;

// An append frame carries at most this much text (more is sent in the next one), so a batch
// of queued appends stays well under the server's MAX_FRAME_BYTES once JSON-escaped.
const APPEND_BATCH_BYTES = 64 * 1024;
const STREAM_FRAMES = new Set(["stream_started", "stream_append", "stream_snapshot", "stream_ended", "stream_cancel_requested"]);
const APPROVAL_FRAMES = new Set(["approval_requested", "approval_resolved"]);
// How long an AgentStream waits before sending an append refused with `busy` (the connection
// had too many requests in flight: not executed) again.
const BUSY_RETRY_MS = 100;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The length of `text` in UTF-8 bytes (what stream lengths count), without encoding it. */
export function utf8Length(text) {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) bytes += 1;
    else if (unit < 0x800) bytes += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 4; // a surrogate pair: one code point beyond the BMP
      i++;
    } else bytes += 3; // the rest of the BMP, and a lone surrogate (sent as U+FFFD)
  }
  return bytes;
}

function randomId() {
  return globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first): full jitter, uniformly random
 * between 0 and min(maxMs, baseMs * 2^attempt).
 */
export function backoffDelay(attempt, baseMs = DEFAULTS.backoffBaseMs, maxMs = DEFAULTS.backoffMaxMs) {
  return Math.random() * Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 30));
}

/** One project followed across reconnects; created by Client.subscribe. */
export class Subscription {
  #client;
  #settle;
  // The list before the last confirmation: an approval coming back keeps its object, and a
  // replayed `approval_resolved` of one that did not come back is still reported.
  #previousApprovals = new Map();

  constructor(client, projectId, handlers) {
    this.#client = client;
    this.projectId = projectId;
    this.onMessage = handlers.onMessage ?? (() => {});
    this.onReset = handlers.onReset ?? (() => {});
    this.onError = handlers.onError ?? (() => {});
    this.joinLeave = handlers.joinLeave === true;
    this.onJoin = handlers.onJoin ?? (() => {});
    this.onLeave = handlers.onLeave ?? (() => {});
    this.onPresence = handlers.onPresence ?? (() => {});
    this.onStream = handlers.onStream ?? (() => {});
    this.onApprovalRequested = handlers.onApprovalRequested ?? (() => {});
    this.onApprovalResolved = handlers.onApprovalResolved ?? (() => {});
    /** The project's agent streams by stream id: open ones, and ended ones until you delete them. */
    this.streams = new Map();
    /** The project's pending approval requests by approval id, rebuilt after every (re)subscribe. */
    this.approvals = new Map();
    /** The last position seen ({offset, epoch}), or null before the server told one. */
    this.position = null;
    this.confirmed = false;
    /** Resolves at the first subscription_confirmed; rejects if the server refuses it. */
    this.ready = new Promise((resolve, reject) => (this.#settle = { resolve, reject }));
    this.ready.catch(() => {}); // a refusal also reaches onError and the client's "error" event
  }

  /** Stops following the project. */
  unsubscribe() {
    return this.#client.unsubscribe(this.projectId);
  }

  _confirm(reply) {
    const position = reply.offset === undefined ? null : { offset: reply.offset, epoch: reply.epoch };
    // A resume (we sent `since`) says whether the gap was replayed; a subscription confirmed
    // before but never given a position cannot know what it missed either.
    const lost = reply.recovered === false || (reply.recovered === undefined && this.confirmed);
    if (reply.recovered !== true) this.position = position;
    const first = !this.confirmed;
    this.confirmed = true;
    // The server sends every approval still pending after the confirmation (and a resume's
    // replay brings the ones resolved meanwhile): what is not sent again is no longer pending.
    this.#previousApprovals = this.approvals;
    this.approvals = new Map();
    if (first) this.#settle.resolve(this);
    if (lost) {
      // A stream that ended in the gap would stay open here for good; the open ones come back
      // with the snapshots that follow the confirmation.
      for (const [id, stream] of this.streams) if (stream.status === "open") this.streams.delete(id);
      this.onReset({ projectId: this.projectId, offset: position?.offset, epoch: position?.epoch });
    }
  }

  _refuse(error) {
    this.#settle.reject(error);
    this.onError(error);
  }

  // True when the message is new: not at or before the last offset seen in the same epoch.
  _accept(message) {
    if (message.offset === undefined) return true;
    const seen = this.position;
    if (seen && seen.epoch === message.epoch && message.offset <= seen.offset) return false;
    this.position = { offset: message.offset, epoch: message.epoch };
    return true;
  }

  // Applies a stream frame to the copy; returns the stream it changed, or null (a repeat, or an
  // append the copy cannot continue: it waits for the next snapshot).
  _applyStream(frame) {
    if (!this._accept(frame)) return null; // a start or end replayed twice
    const stream = this.streams.get(frame.stream_id);
    switch (frame.type) {
      case "stream_snapshot": {
        const copy = stream ?? newStream(frame);
        Object.assign(copy, streamFields(frame), {
          text: frame.text ?? "",
          length: frame.length ?? 0,
          status: frame.status,
          result: frame.result ?? null,
          stale: false,
        });
        // A snapshot does not say whether a cancel is under way: the cancel's own frame (live or
        // replayed before the snapshot) does, until the stream ends.
        if (frame.status !== "open") copy.cancelRequested = false;
        this.streams.set(frame.stream_id, copy);
        return copy;
      }
      case "stream_started": {
        if (stream) return null;
        const created = newStream(frame);
        this.streams.set(frame.stream_id, created);
        return created;
      }
      case "stream_append": {
        if (!stream || stream.stale || frame.length <= stream.length) return null;
        if (stream.length + utf8Length(frame.text) !== frame.length) {
          stream.stale = true; // text was missed: only a snapshot can repair the copy
          return null;
        }
        stream.text += frame.text;
        stream.length = frame.length;
        return stream;
      }
      case "stream_cancel_requested": {
        if (!stream || stream.status !== "open") return null;
        stream.cancelRequested = true;
        return stream;
      }
      case "stream_ended": {
        if (!stream) return null;
        stream.status = frame.status;
        stream.cancelRequested = false;
        stream.result = frame.data ?? null;
        if (frame.length !== stream.length) stream.stale = true;
        return stream;
      }
      default:
        return null;
    }
  }

  // Applies an approval frame to the pending list; returns the approval it added or resolved,
  // or null (a repeat, or the resolution of one this subscription never saw).
  _applyApproval(frame) {
    if (!this._accept(frame)) return null; // replayed twice
    const approvalId = frame.approval_id;
    if (frame.type === "approval_requested") {
      if (this.approvals.has(approvalId)) return null; // sent again: a resubscribe, a re-read
      const approval = this.#previousApprovals.get(approvalId) ?? new Approval(this.#client, frame);
      this.#previousApprovals.delete(approvalId);
      this.approvals.set(approvalId, approval);
      return approval;
    }
    const approval = this.approvals.get(approvalId) ?? this.#previousApprovals.get(approvalId);
    if (!approval) return null;
    this.approvals.delete(approvalId);
    this.#previousApprovals.delete(approvalId);
    approval.resolution = { decision: frame.decision, decidedBy: frame.user_id ?? null, comment: frame.comment ?? null, decidedAt: frame.decided_at ?? null };
    return approval;
  }
}

/**
 * A question an agent asked the project's people (`approval_requested`), as a subscription
 * keeps it in `approvals` until it is resolved. `decide()` answers it; exactly one decision wins.
 */
export class Approval {
  #client;

  constructor(client, frame) {
    this.#client = client;
    this.approvalId = frame.approval_id;
    this.projectId = frame.project_id;
    /** The agent whose queue gets the decision (pm, dev, qa, ops). */
    this.agent = frame.agent ?? null;
    /** The agent's question ({title, ...}). */
    this.data = frame.data ?? null;
    this.options = frame.options ?? [];
    this.expiresAt = frame.expires_at ?? null;
    this.requestedAt = frame.requested_at ?? null;
    this.requestedBy = frame.requested_by ?? null;
    /** Null while pending; once resolved: {decision, decidedBy, comment, decidedAt}. */
    this.resolution = null;
  }

  /**
   * Answers with one of `options`; resolves with the `approval_decided` answer once the agent's
   * queue has the decision. Rejects with `already_decided` (someone else won: the error's
   * `decision` and `decidedBy`), `not_found` (unknown or expired), `invalid_request` (not an
   * option), `forbidden` (no `approve` scope), `disconnected` (its fate is unknown: not re-sent).
   */
  decide(decision, comment, options) {
    return this.#client.decideApproval(this.projectId, this.approvalId, decision, { ...options, comment });
  }
}

// What a stream frame tells about its stream besides the text.
function streamFields(frame) {
  return { agent: frame.agent ?? null, event: frame.event ?? null, data: frame.data ?? null, startedAt: frame.started_at ?? null };
}

// A subscriber's copy of a stream, as its start announces it.
function newStream(frame) {
  return { streamId: frame.stream_id, projectId: frame.project_id, text: "", length: 0, status: "open", ...streamFields(frame), result: null, stale: false, cancelRequested: false };
}

/**
 * The agent's side of one stream; created by Client.startStream. Appends go out one frame at a
 * time, each with `at`, the stream's length before it (appends made meanwhile are batched into
 * the next frame), and are re-sent across reconnects: the server applies each once. The handle
 * keeps the text it appended, so a `stream_conflict` is followed wherever the server's length
 * is: ahead (an append whose answer was lost was applied) or behind (the rest is sent again).
 */
export class AgentStream {
  #request;
  #base; // where #chunks begin (the stream's length when this handle took it over)
  #chunks = []; // every text appended from #base on, in order: {text, start, end}
  #total; // the stream's length once every chunk is applied
  #waiting = []; // appends not yet confirmed, in order: {end, resolve, reject, promise}
  #sending = false;
  #ending = false;

  constructor(started, request) {
    this.#request = request;
    this.projectId = started.project_id;
    this.streamId = started.stream_id;
    /** The stream_started answer (agent, event, data, started_at, offset, epoch). */
    this.started = started;
    /** "open", or the final status once ended (by end(), or as the server answered; a start
     * naming an ended stream says so). */
    this.status = started.status ?? "open";
    /** The stream's length in UTF-8 bytes, as the server last confirmed it. */
    this.length = started.length ?? 0;
    this.#base = this.length;
    this.#total = this.length;
  }

  /**
   * Appends `text`; resolves with the stream's length after it once the server applied it.
   * Rejects with the server's error code (stream_ended, stream_too_large, ...; rate_limited and
   * busy are waited out), and then so does every append made after it: their text would follow
   * a missing piece.
   */
  append(text) {
    if (this.#ending || this.status !== "open") {
      return Promise.reject(new RequestError("stream_ended", `the stream is ${this.#ending ? "ending" : this.status}`, { stream_id: this.streamId }));
    }
    const start = this.#total;
    this.#total += utf8Length(text);
    if (this.#total === start && !this.#waiting.length) return Promise.resolve(this.length); // nothing to send, nothing before it
    this.#chunks.push({ text, start, end: this.#total });
    const entry = { end: this.#total };
    entry.promise = new Promise((resolve, reject) => Object.assign(entry, { resolve, reject }));
    entry.promise.catch(() => {}); // the caller may only await end(); the rejection is still theirs to see
    this.#waiting.push(entry);
    this.#pump();
    return entry.promise;
  }

  /**
   * Ends the stream after every append made before it: resolves with the `stream_ended` answer
   * (`status`, `length`, `offset`, `epoch`). Re-sent across reconnects: an end already applied
   * (its answer lost) is answered `stream_ended` with the same status, which counts as done.
   */
  async end(status = "completed", { data, timeoutMs } = {}) {
    this.#ending = true;
    await this.#waiting.at(-1)?.promise.catch(() => {});
    const frame = { action: "stream_end", project_id: this.projectId, stream_id: this.streamId, status, ...(data === undefined ? {} : { data }) };
    let reply;
    try {
      reply = await this.#request(frame, "stream_ended", { timeoutMs, resend: true });
    } catch (error) {
      if (error.code !== "stream_ended" || error.reply.status !== status) throw error;
      reply = error.reply;
    }
    this.status = reply.status;
    if (reply.length !== undefined) this.length = reply.length;
    return reply;
  }

  #pump() {
    if (this.#sending || this.length >= this.#total) return;
    this.#sending = true;
    const at = this.length;
    const text = this.#textFrom(at);
    const frame = { action: "stream_append", project_id: this.projectId, stream_id: this.streamId, text, at };
    this.#request(frame, "stream_appended", { resend: true })
      .then(
        (reply) => this.#follow(Number.isInteger(reply.length) ? reply.length : at + utf8Length(text)),
        (error) => this.#refused(error),
      )
      .finally(() => {
        this.#sending = false;
        this.#pump();
      });
  }

  // The text from byte `at` on: whole chunks up to APPEND_BATCH_BYTES (at least one).
  #textFrom(at) {
    let index = this.#chunks.length - 1;
    while (index > 0 && this.#chunks[index].start > at) index--;
    const first = this.#chunks[index];
    const parts = [at === first.start ? first.text : decoder.decode(encoder.encode(first.text).subarray(at - first.start))];
    let bytes = first.end - at;
    for (let next = index + 1; next < this.#chunks.length; next++) {
      const chunk = this.#chunks[next];
      if (bytes + chunk.end - chunk.start > APPEND_BATCH_BYTES) break;
      parts.push(chunk.text);
      bytes += chunk.end - chunk.start;
    }
    return parts.join("");
  }

  #refused(error) {
    if (error.code === "timeout") return; // its fate is unknown: the pump sends it again, same `at`
    if (error.code === "busy") return new Promise((resolve) => setTimeout(resolve, BUSY_RETRY_MS)); // then again
    if (error.code === "stream_conflict" && Number.isInteger(error.reply.length) && error.reply.length >= this.#base) {
      return this.#follow(error.reply.length);
    }
    if (error.code === "stream_ended") this.status = error.reply.status ?? "ended";
    this.#fail(error);
  }

  // The server holds `length` bytes of the stream: the appends within them are applied, the
  // rest (if the server is behind what it confirmed before) goes again from there.
  #follow(length) {
    this.length = length;
    if (length > this.#total) {
      // More than this handle ever appended (another writer): its appends are in, and what
      // follows is appended after the server's length.
      this.#chunks = [];
      this.#base = this.#total = length;
      for (const entry of this.#waiting.splice(0)) entry.resolve(length);
      return;
    }
    while (this.#waiting.length && this.#waiting[0].end <= length) {
      const entry = this.#waiting.shift();
      entry.resolve(entry.end);
    }
  }

  // Rejects every append not yet confirmed; the next one continues from the server's length.
  #fail(error) {
    for (const entry of this.#waiting.splice(0)) entry.reject(error);
    this.#chunks = this.#chunks.filter((chunk) => chunk.end <= this.length);
    if ((this.#chunks.at(-1)?.end ?? this.#base) !== this.length) {
      this.#chunks = [];
      this.#base = this.length;
    }
    this.#total = this.length;
  }
}

export class Client {
  #url;
  #options;
  #WebSocket;
  #listeners = new Map();
  #state = State.CLOSED;
  #socket = null; // the current socket; events of older ones are ignored
  #stopped = true; // close() was called, or a close code ended the client
  #attempt = 0; // failed attempts since the last successful connection
  #reconnectTimer = null;
  #refreshTimer = null;
  #connectTimer = null;
  #token = null; // {token, expiresAt (s), refreshAt (ms)} once the server accepted it
  #sentToken = null; // the token of the last authenticate
  #refusedToken = null; // the last token closed with 3500
  #subscriptions = new Map();
  #pending = new Map(); // request_id -> {text, expect, resolve, reject, timer, resend, subscription, sent, retryTimer}
  #sequence = 0;
  #firstConnection = null;

  /**
   * @param {string} url ws:// or wss:// URL of the gateway, e.g. wss://example.com/ws
   * @param {object} [options] see agenticai-websocket.d.ts (ClientOptions)
   */
  constructor(url, options = {}) {
    this.#url = url;
    this.#options = { ...DEFAULTS, ...options };
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.#WebSocket) throw new Error("no WebSocket: use Node 22+ (or node --experimental-websocket), or pass options.WebSocket");
  }

  get state() {
    return this.#state;
  }

  /** Adds a listener for one of ClientEvents (agenticai-websocket.d.ts); returns a function removing it. */
  on(event, listener) {
    if (!this.#listeners.has(event)) this.#listeners.set(event, new Set());
    this.#listeners.get(event).add(listener);
    return () => this.#listeners.get(event).delete(listener);
  }

  #emit(event, value) {
    for (const listener of this.#listeners.get(event) ?? []) {
      try {
        listener(value);
      } catch (error) {
        if (event !== "error") this.#emit("error", error);
      }
    }
  }

  #setState(state, details = {}) {
    this.#state = state;
    this.#emit("state", { state, ...details });
  }

  /** Starts connecting (and reconnecting); resolves once connected, rejects if the client stops first. */
  connect() {
    if (this.#stopped) {
      this.#stopped = false;
      this.#attempt = 0;
      this.#firstConnection = deferred();
      this.#firstConnection.promise.catch(() => {});
      this.#open();
    }
    return this.#firstConnection.promise;
  }

  /** Closes the connection for good; requests not yet answered are rejected with `closed`. */
  close() {
    this.#stop(NORMAL, "closed by the client", "closed");
  }

  #stop(code, reason, rejectWith) {
    this.#stopped = true;
    clearTimeout(this.#reconnectTimer);
    this.#clearConnectionTimers();
    const socket = this.#socket;
    this.#socket = null;
    if (socket && socket.readyState <= 1) socket.close(NORMAL);
    for (const [id, entry] of this.#pending) this.#settle(id, entry, null, new RequestError(rejectWith, reason));
    this.#firstConnection?.reject(new RequestError(rejectWith, reason));
    this.#setState(State.CLOSED, { code, reason });
  }

  #clearConnectionTimers() {
    clearTimeout(this.#refreshTimer);
    clearTimeout(this.#connectTimer);
  }

  async #currentToken() {
    const { token, getToken } = this.#options;
    if (this.#token && Date.now() < this.#token.refreshAt) return this.#token.token;
    if (getToken) return await getToken();
    return token ?? null;
  }

  async #open() {
    clearTimeout(this.#reconnectTimer);
    this.#setState(State.CONNECTING, { attempt: this.#attempt });
    let token;
    try {
      token = await this.#currentToken();
    } catch (error) {
      // The state event carries the cause too: an application logging only its states (as the
      // README's does) would otherwise see a silent connecting/disconnected loop.
      const unavailable = new RequestError("token_unavailable", `getToken failed: ${error?.message ?? error}`);
      this.#emit("error", unavailable);
      return this.#reconnectAfter(this.#nextBackoff(), 1006, unavailable.message);
    }
    if (this.#stopped) return;
    let socket;
    try {
      socket = new this.#WebSocket(this.#url);
    } catch (error) {
      return this.#stop(1006, `cannot open ${this.#url}: ${error.message}`, "closed"); // a malformed URL
    }
    this.#socket = socket;
    this.#connectTimer = setTimeout(() => {
      // An upgrade or authentication that hangs: give up on this socket and try again.
      if (socket === this.#socket) this.#lost(socket, 1006, "connect timeout");
    }, this.#options.connectTimeoutMs);
    let opened = false;
    socket.onopen = () => socket === this.#socket && ((opened = true), this.#authenticate(socket, token));
    socket.onmessage = (event) => socket === this.#socket && this.#receive(event.data);
    socket.onclose = (event) => socket === this.#socket && this.#lost(socket, event.code, event.reason);
    // A failed upgrade (refused, HTTP 429/503, unreachable): browsers follow with a close 1006,
    // Node 20's WebSocket with nothing, so it is handled here.
    socket.onerror = () => socket === this.#socket && !opened && this.#lost(socket, 1006, "connection failed");
  }

  async #authenticate(socket, token) {
    if (token) {
      try {
        await this.#sendAuthenticate(token);
      } catch (error) {
        // unauthorized is followed by close 3500; an anonymous server answers invalid_request.
        if (error.code !== "invalid_request") return;
        this.#emit("error", error);
      }
    }
    if (socket !== this.#socket) return;
    clearTimeout(this.#connectTimer);
    this.#attempt = 0;
    for (const subscription of this.#subscriptions.values()) this.#sendSubscribe(subscription);
    for (const entry of this.#pending.values()) if (!entry.sent) this.#transmit(entry);
    this.#setState(State.CONNECTED);
    this.#firstConnection.resolve();
  }

  // Sends `authenticate` and arms the refresh. `current` is the connection's token, when this
  // is a refresh of it.
  async #sendAuthenticate(token, current = null) {
    this.#sentToken = token;
    const reply = await this.#request({ action: "authenticate", token }, "authenticated", { duringHandshake: true });
    this.#refusedToken = null;
    this.#token = { token, expiresAt: reply.expires_at, refreshAt: reply.refresh_at * 1000 };
    clearTimeout(this.#refreshTimer);
    // A refresh that did not extend the lifetime (getToken handed back the same token) is not
    // repeated: the 3005 at expiry makes the client reconnect with a fresh one.
    if (this.#options.getToken && (!current || reply.expires_at > current.expiresAt)) {
      this.#refreshTimer = setTimeout(() => this.#refresh(), Math.max(0, this.#token.refreshAt - Date.now()));
    }
  }

  async #refresh() {
    const socket = this.#socket;
    try {
      const token = await this.#options.getToken();
      if (socket === this.#socket && token) await this.#sendAuthenticate(token, this.#token);
    } catch (error) {
      if (error?.code === "disconnected") return; // the next connection authenticates afresh
      this.#emit("error", error instanceof RequestError ? error : new RequestError("token_unavailable", String(error?.message ?? error)));
    }
  }

  #lost(socket, code, reason) {
    this.#socket = null;
    this.#clearConnectionTimers();
    if (socket.readyState <= 1) socket.close(NORMAL);
    if (this.#stopped) return;
    const tooBig = code === MESSAGE_TOO_BIG;
    // What was sent on this socket and is not re-sent has an unknown fate: refuse it now.
    for (const [id, entry] of this.#pending) {
      // A subscribe waiting out rate_limited is not carried over: the next connection resubscribes.
      if ((entry.sent || entry.subscription) && (!entry.resend || tooBig)) {
        this.#settle(id, entry, null, new RequestError(tooBig ? "message_too_big" : "disconnected", reason || `closed with ${code}`));
      } else {
        entry.sent = false;
      }
    }
    const delay = this.#reconnectDelay(code);
    if (delay === null) {
      const rejectWith = { [INVALID_TOKEN]: "unauthorized", [TOO_MANY_CONNECTIONS]: "too_many_connections" }[code] ?? "closed";
      return this.#stop(code, reason || `closed with ${code}`, rejectWith);
    }
    this.#reconnectAfter(delay, code, reason);
  }

  #reconnectAfter(delay, code, reason) {
    if (this.#stopped) return;
    this.#setState(State.DISCONNECTED, { code, reason, reconnectInMs: Math.round(delay) });
    this.#reconnectTimer = setTimeout(() => this.#open(), delay);
  }

  #nextBackoff() {
    return backoffDelay(this.#attempt++, this.#options.backoffBaseMs, this.#options.backoffMaxMs);
  }

  // The delay before reconnecting after a close with `code`, or null: do not reconnect.
  #reconnectDelay(code) {
    const { getToken, restartDelayMaxMs, abuseDelayMs } = this.#options;
    switch (code) {
      case SERVICE_RESTART:
        return Math.random() * restartDelayMaxMs;
      case TOKEN_EXPIRED:
        this.#token = null;
        return getToken ? Math.random() * this.#options.backoffBaseMs : null;
      case INVALID_TOKEN:
        // Only a different token is worth a new connection: getToken is asked on the next
        // attempt, and the client stops if the server refuses the same token twice.
        this.#token = null;
        if (!getToken || this.#sentToken === this.#refusedToken) return null;
        this.#refusedToken = this.#sentToken;
        return this.#nextBackoff();
      case PROTOCOL_ERROR:
      case INVALID_PAYLOAD:
      case TOO_MANY_CONNECTIONS:
        return null;
      case ABUSIVE_CLIENT:
        return abuseDelayMs + Math.random() * abuseDelayMs;
      case AUTHENTICATION_TIMEOUT:
        return this.#nextBackoff();
      default:
        // 3500-3999 say "do not reconnect as you were"; 4000-4999 are no code of this server.
        if (code >= 3500 && code <= 4999) return null;
        return this.#nextBackoff();
    }
  }

  #receive(data) {
    let reply;
    try {
      reply = JSON.parse(data);
    } catch {
      return this.#emit("error", new RequestError("invalid_json", "the server sent a frame that is not JSON"));
    }
    const entry = reply.request_id === undefined ? undefined : this.#pending.get(reply.request_id);
    if (reply.type === "message") return this.#deliver(reply);
    // An agent's own stream requests are answered with its request_id; subscribers get no id.
    if (STREAM_FRAMES.has(reply.type) && reply.request_id === undefined) return this.#deliverStream(reply);
    if (APPROVAL_FRAMES.has(reply.type) && reply.request_id === undefined) return this.#deliverApproval(reply);
    if (reply.type === "join" || reply.type === "leave") return this.#announce(reply);
    if (reply.type === "subscription_confirmed") {
      const subscription = this.#subscriptions.get(reply.project_id);
      if (subscription) subscription._confirm(reply);
    }
    if (entry) {
      if (reply.type === "error") return this.#refused(reply.request_id, entry, reply);
      if (reply.type === entry.expect) return this.#settle(reply.request_id, entry, reply);
    }
    if (reply.type === "error") {
      const error = new RequestError(reply.code, reply.message, reply);
      // A refreshed token that no longer allows a project ends its subscription.
      const subscription = reply.project_id && this.#subscriptions.get(reply.project_id);
      if (subscription && reply.code === "forbidden") {
        this.#subscriptions.delete(reply.project_id);
        subscription._refuse(error);
      }
      this.#emit("error", error);
    }
  }

  #refused(id, entry, reply) {
    if (reply.code === "draining") {
      // Nothing was done; the 1012 that follows brings a new connection, which sends it again.
      entry.sent = false;
      return;
    }
    if (reply.code === "rate_limited" && (entry.resend || entry.subscription)) {
      // Not executed: a forward or subscribe goes again once the budget allows it (at most once
      // per refusal, and only on the socket that refused it).
      const socket = this.#socket;
      entry.sent = false;
      entry.retryTimer = setTimeout(() => {
        if (this.#pending.get(id) === entry && !entry.sent && socket === this.#socket) this.#transmit(entry);
      }, reply.retry_after_ms ?? 0);
      return;
    }
    const error = new RequestError(reply.code, reply.message, reply);
    if (entry.subscription) {
      this.#subscriptions.delete(entry.subscription.projectId);
      entry.subscription._refuse(error);
    }
    this.#settle(id, entry, null, error);
  }

  #deliver(message) {
    const subscription = this.#subscriptions.get(message.project_id);
    if (!subscription || !subscription._accept(message)) return;
    try {
      subscription.onMessage(message);
    } catch (error) {
      this.#emit("error", error);
    }
    this.#emit("message", message);
  }

  #deliverStream(frame) {
    const subscription = this.#subscriptions.get(frame.project_id);
    const stream = subscription?._applyStream(frame);
    if (!stream) return;
    try {
      subscription.onStream(stream, frame);
    } catch (error) {
      this.#emit("error", error);
    }
    this.#emit("stream", { stream, update: frame });
  }

  #deliverApproval(frame) {
    const subscription = this.#subscriptions.get(frame.project_id);
    const approval = subscription?._applyApproval(frame);
    if (!approval) return;
    const requested = frame.type === "approval_requested";
    try {
      (requested ? subscription.onApprovalRequested : subscription.onApprovalResolved)(approval, frame);
    } catch (error) {
      this.#emit("error", error);
    }
    this.#emit(frame.type, { approval, update: frame });
  }

  // A join or leave of another connection, for a subscription made with joinLeave.
  #announce(event) {
    const subscription = this.#subscriptions.get(event.project_id);
    if (!subscription) return;
    try {
      (event.type === "join" ? subscription.onJoin : subscription.onLeave)(event);
    } catch (error) {
      this.#emit("error", error);
    }
    this.#emit(event.type, event);
  }

  #settle(id, entry, reply, error) {
    this.#pending.delete(id);
    clearTimeout(entry.timer);
    clearTimeout(entry.retryTimer);
    if (error) entry.reject(error);
    else entry.resolve(reply);
  }

  // Sends a request (now, or once connected) and resolves with the reply of type `expect`.
  #request(frame, expect, { timeoutMs = this.#options.requestTimeoutMs, resend = false, subscription, duringHandshake = false } = {}) {
    const text = JSON.stringify(frame);
    if (encoder.encode(text).length > this.#options.maxFrameBytes) {
      return Promise.reject(new RequestError("message_too_big", `the request is over ${this.#options.maxFrameBytes} bytes`));
    }
    if (this.#stopped) return Promise.reject(new RequestError("closed", "the client is closed"));
    const id = `${frame.action}-${++this.#sequence}`;
    return new Promise((resolve, reject) => {
      const entry = { text: JSON.stringify({ ...frame, request_id: id }), expect, resolve, reject, resend, subscription, sent: false };
      entry.timer = setTimeout(() => this.#settle(id, entry, null, new RequestError("timeout", `no answer within ${timeoutMs} ms`)), timeoutMs);
      this.#pending.set(id, entry);
      // Before `connected` only the handshake's own frames go out; the rest wait for it.
      if (this.#state === State.CONNECTED || duringHandshake) this.#transmit(entry);
    });
  }

  #transmit(entry) {
    if (this.#socket?.readyState !== 1) return;
    this.#socket.send(entry.text);
    entry.sent = true;
  }

  #sendSubscribe(subscription) {
    const resume = subscription.position ? { since: subscription.position } : { recover: true };
    const joinLeave = subscription.joinLeave ? { join_leave: true } : {};
    const frame = { action: "subscribe", project_id: subscription.projectId, ...resume, ...joinLeave };
    this.#request(frame, "subscription_confirmed", { subscription, duringHandshake: true })
      .then(() => subscription.joinLeave && this.#reconcile(subscription))
      .catch((error) => {
        // Timeouts and lost connections are retried by the next connection; refusals are final.
        if (error.code !== "timeout" && error.code !== "disconnected" && error.code !== "closed") this.#emit("error", error);
      });
  }

  // Join and leave events missed while away are never sent again: the member list is asked
  // after every (re)subscribe instead, and the events that follow apply on top of it.
  async #reconcile(subscription) {
    const reply = await this.#request({ action: "presence", project_id: subscription.projectId }, "presence", { duringHandshake: true });
    if (this.#subscriptions.get(subscription.projectId) !== subscription) return;
    try {
      subscription.onPresence(reply);
    } catch (error) {
      this.#emit("error", error);
    }
    this.#emit("presence", reply);
  }

  /**
   * Follows a project: `onMessage` gets every publication once, in order, across reconnects;
   * `onReset` is called when the server could not replay what was missed (reload then). With
   * `joinLeave: true`, `onJoin`/`onLeave` get other connections' join and leave events, and
   * `onPresence` the member list after each (re)subscribe. `onStream(stream, update)` is called
   * whenever one of `subscription.streams` changes: started, appended to, replaced by a
   * snapshot, asked to stop, ended. `onApprovalRequested(approval, update)` is called when an
   * approval enters `subscription.approvals` (again after every resubscribe, for each still
   * pending), `onApprovalResolved(approval, update)` when one is decided or expires.
   */
  subscribe(projectId, handlers = {}) {
    const existing = this.#subscriptions.get(projectId);
    if (existing) return existing;
    const subscription = new Subscription(this, projectId, handlers);
    this.#subscriptions.set(projectId, subscription);
    if (this.#state === State.CONNECTED) this.#sendSubscribe(subscription);
    return subscription;
  }

  /** Stops following a project; resolves when the server confirmed (at once when disconnected). */
  async unsubscribe(projectId) {
    if (!this.#subscriptions.delete(projectId) || this.#state !== State.CONNECTED) return;
    await this.#request({ action: "unsubscribe", project_id: projectId }, "unsubscription_confirmed");
  }

  /**
   * Sends a message to an agent queue; resolves with the SQS message id once the queue has it.
   * Re-sent on every reconnect until answered (same message_id: at-least-once).
   */
  async forward(type, projectId, data, { messageId = randomId(), timeoutMs = this.#options.forwardTimeoutMs, fields = {} } = {}) {
    const frame = { ...fields, action: "forward", type, project_id: projectId, message_id: messageId, data };
    const reply = await this.#request(frame, "forward_confirmed", { timeoutMs, resend: true });
    return reply.sqs_message_id;
  }

  /** Publishes to a project's subscribers (needs publish rights); resolves with publish_confirmed. */
  publish(projectId, event, data, { timeoutMs } = {}) {
    const frame = { action: "publish", project_id: projectId, data, ...(event == null ? {} : { type: event }) };
    return this.#request(frame, "publish_confirmed", { timeoutMs });
  }

  /**
   * Starts an agent stream in a project (needs publish rights); resolves with its AgentStream.
   * `streamId` defaults to a random UUID, so a start re-sent after a reconnect is answered with
   * the stream it started, not a second one.
   */
  async startStream(projectId, { agent, event, data, streamId = randomId(), timeoutMs } = {}) {
    const optional = Object.entries({ agent, event, data }).filter(([, value]) => value !== undefined);
    const frame = { action: "stream_start", project_id: projectId, stream_id: streamId, ...Object.fromEntries(optional) };
    const started = await this.#request(frame, "stream_started", { timeoutMs, resend: true });
    return new AgentStream(started, (request, expect, options) => this.#request(request, expect, options));
  }

  /**
   * Asks a stream's agent to stop (needs the right to forward to the project); resolves with the
   * queue message's id once the agent's queue has the cancel (null for a stream without an
   * agent: the server ends it at once). Re-sent across reconnects: a repeat sends nothing new
   * and is answered with the first cancel's id.
   */
  async cancel(projectId, streamId, reason, { timeoutMs = this.#options.forwardTimeoutMs } = {}) {
    const frame = { action: "cancel", project_id: projectId, stream_id: streamId, ...(reason === undefined ? {} : { reason }) };
    const reply = await this.#request(frame, "cancel_requested", { timeoutMs, resend: true });
    return reply.message_id ?? null;
  }

  /**
   * The agent's side of an approval (needs the right to publish to the project): asks the
   * project's people a question; resolves with the `approval_requested` answer (`approval_id`,
   * `expires_at`). The decision reaches the agent's queue, not this connection (README.md,
   * "Cancel and approvals"). `approvalId` defaults to a random UUID, so a request re-sent after
   * a reconnect is answered with the question it asked, not a second one.
   */
  requestApproval(projectId, { agent, data, options, expiresInSecs, approvalId = randomId(), timeoutMs } = {}) {
    const optional = Object.entries({ agent, data, options, expires_in_secs: expiresInSecs }).filter(([, value]) => value !== undefined);
    const frame = { action: "approval_request", project_id: projectId, approval_id: approvalId, ...Object.fromEntries(optional) };
    return this.#request(frame, "approval_requested", { timeoutMs, resend: true });
  }

  /** Answers an approval request by id (what Approval.decide does); resolves with `approval_decided`. */
  decideApproval(projectId, approvalId, decision, { comment, timeoutMs = this.#options.forwardTimeoutMs } = {}) {
    const frame = { action: "approval_decide", project_id: projectId, approval_id: approvalId, decision, ...(comment === undefined ? {} : { comment }) };
    return this.#request(frame, "approval_decided", { timeoutMs });
  }

  /** Who is subscribed to a project (needs the right to subscribe to it); resolves with the `presence` answer. */
  presence(projectId, { timeoutMs } = {}) {
    return this.#request({ action: "presence", project_id: projectId }, "presence", { timeoutMs });
  }

  /** A project's member counts, without the list; resolves with the `presence_stats` answer. */
  presenceStats(projectId, { timeoutMs } = {}) {
    return this.#request({ action: "presence_stats", project_id: projectId }, "presence_stats", { timeoutMs });
  }

  /** Round trip to the server; resolves with the pong. */
  ping({ timeoutMs } = {}) {
    return this.#request({ action: "ping" }, "pong", { timeoutMs });
  }
}

function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}
