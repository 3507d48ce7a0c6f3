/**
 * The SharedWorker that holds the one connection the tabs of a user share
 * (see share.js). The browser runs one per worker name, and the name carries
 * the user and the socket's URL: tabs of another user get another worker.
 *
 * Debugging: chrome://inspect/#workers (Chromium) or about:debugging
 * (Firefox) lists it; its console shows the client's logs.
 */

import { Core, SHARE_VERSION, watchTab } from "./share.js";

/** @type {Core | null} */
let core = null;

globalThis.onconnect = (event) => {
  const port = event.ports[0];
  port.onmessage = ({ data: message }) => {
    if (message.op === "alive?") {
      port.postMessage({ op: "alive" }); // share.js: WORKER_CHECK_INTERVAL
    } else if (message.op === "hello") {
      if (message.version !== SHARE_VERSION || (core !== null && message.key !== core.key)) {
        port.postMessage({ op: "refused" });
        return;
      }
      if (core === null) core = new Core(message.key, message.options, { positions: message.positions });
      core.attach(message, (reply) => port.postMessage(reply));
      const attached = core;
      watchTab(message.id, () => attached.detach(message.id));
    } else if (message.op === "bye") {
      core?.detach(message.id);
    } else {
      core?.receive(message.id, message);
    }
  };
  port.start();
};
