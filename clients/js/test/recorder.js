// A subscriber that records what it sees, loaded by the Node tests and by the Chromium page alike.

import { Client } from "../agenticai-websocket.js";

/** Follows `projectId` on `url`; `log` collects the numbers received, the resets and the state changes. */
export function record(url, projectId, options = {}) {
  const client = new Client(url, options);
  const log = { received: [], resets: [], states: [], errors: [] };
  client.on("state", (change) => log.states.push({ ...change, at: Date.now() }));
  client.on("error", (error) => log.errors.push(String(error.code ?? error.message)));
  const subscription = client.subscribe(projectId, {
    onMessage: (message) => log.received.push(message.data.n),
    onReset: (reset) => log.resets.push(reset),
  });
  client.connect();
  return { client, log, ready: subscription.ready.then(() => true) };
}
