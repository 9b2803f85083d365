// A subscriber that records what it sees, loaded by the Node tests and by the Chromium page alike.

import { Client } from "@agenticai/websocket-client";

/**
 * Follows `projectId` on `url`; `log` collects the numbers received, the resets, the state
 * changes, and each agent stream's copy (`streams`, by id: text, length, status, stale) with the
 * updates that made it (`streamUpdates`: type, time, the copy's length after it).
 */
export function record(url, projectId, options = {}) {
  const client = new Client(url, options);
  const log = { received: [], resets: [], states: [], errors: [], streams: {}, streamUpdates: [] };
  client.on("state", (change) => log.states.push({ ...change, at: Date.now() }));
  client.on("error", (error) => log.errors.push(String(error.code ?? error.message)));
  const subscription = client.subscribe(projectId, {
    onMessage: (message) => log.received.push(message.data.n),
    onReset: (reset) => log.resets.push(reset),
    onStream: ({ streamId, text, length, status, agent, event, stale }, update) => {
      log.streams[streamId] = { text, length, status, agent, event, stale };
      log.streamUpdates.push({ type: update.type, at: Date.now(), length });
    },
  });
  client.connect();
  return { client, log, ready: subscription.ready.then(() => true) };
}
