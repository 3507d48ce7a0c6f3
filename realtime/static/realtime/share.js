/**
 * One connection per browser: the tabs of one origin and user share one
 * WebSocket instead of holding one each.
 *
 * The socket lives in a `Core`: a plain `RealtimeClient` (not shared) plus
 * the tabs attached to it. Where the browser has SharedWorker, the core runs
 * in one (worker.js); elsewhere the tabs elect a leader with the Web Locks
 * API, the leader runs the core and the others reach it over a
 * BroadcastChannel. With neither, `openLink` returns null and each tab
 * connects on its own, as before.
 *
 * What the core does for the tabs:
 * - subscriptions are counted: a stream is left on the server when the last
 *   tab that asked for it goes;
 * - every frame is passed on, once, to each tab that wants its stream; each
 *   tab keeps its own positions and drops what it has (realtime.js), so a
 *   tab that joins late or falls behind asks for a replay from where it
 *   stands (`resume`) and the others drop the repeats;
 * - the core's state, `open` and `close` are mirrored in every tab;
 * - a message's `perBrowser` handlers run in one tab only: a visible one,
 *   preferring the one that became visible last.
 *
 * A tab that goes away says `bye`; one that crashes is noticed through its
 * own Web Lock, which the browser releases when the tab dies. The leader
 * gives up its lock when its page is hidden for good or frozen, and the next
 * tab in line takes over, resuming from the positions every tab brings.
 *
 * Tab → core: `hello` (who the tab is, its subscriptions and positions;
 * again whenever a new leader announces itself), `send` (a client frame:
 * subscribe and unsubscribe are counted, resume and ping go to the socket),
 * `visible`, `connect`, `wake` (the page is back or online: ping or retry
 * now), `bye`. Core → tab: `state`, `open` (the welcome, where the socket
 * stands and its default streams), `frame` (with `lead`: whether this tab
 * runs the `perBrowser` handlers), `close`, `refused` (another version).
 * Between leader tabs only: `leader` and `resigning`. See docs/client.md,
 * "One connection per browser".
 *
 * @module realtime/share
 */

import { RealtimeClient, STATES, CLOSE_UNAUTHENTICATED } from "./realtime.js";

/** Bumped when the messages between tabs and core change: tabs of two versions never share. */
export const SHARE_VERSION = 1;

/**
 * How often a tab asks its SharedWorker whether it still runs, in ms; two
 * questions without an answer and the tab starts another worker. A worker
 * that died (a crash, the browser's task manager) closes no port: without
 * this, its tabs would stay "open" and hear nothing.
 */
export const WORKER_CHECK_INTERVAL = 5000;

/**
 * How long the core gathers the tabs' `resume` requests before it sends one
 * frame for all of them, in ms. Every tab's frames count against the one
 * socket's INBOUND_RATE and INBOUND_BURST: a reconnect under many tabs, each
 * asking for its own replay, must not get the shared socket closed with 4008.
 */
export const RESUME_WINDOW = 100;

// Frames about one stream, passed on only to the tabs that want it.
const STREAM_FRAMES = new Set(["subscribed", "unsubscribed", "resync"]);

/** The name of the worker, lock and channel of `key` (the user) and `url` (the socket's). */
export function shareName(key, url) {
  return `realtime|${SHARE_VERSION}|${key}|${url}`;
}

/** A random id for a tab. */
export function tabId() {
  if (globalThis.crypto?.randomUUID) return globalThis.crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

/**
 * The socket shared by the tabs of one user, and what each tab wants of it.
 */
export class Core {
  /**
   * @param {string} key  The user the tabs expect (`welcome.user`, or "anon").
   * @param {object} options  The first tab's client options (url, heartbeat, backoff...).
   * @param {{positions?: object}} [start]  Where the first tab stands.
   */
  constructor(key, options, start = {}) {
    this.key = key;
    /** @type {Map<string, {id: string, deliver: Function, subs: Set<string>, left: Set<string>, visibleAt: number}>} */
    this.tabs = new Map();
    /** @type {Map<string, number>} Tabs that subscribed, per stream. */
    this.refs = new Map();
    /** @type {Set<string>} The connection's default streams (joined without a subscribe). */
    this.defaults = new Set();
    this.welcome = null;
    this.welcomeTs = null;
    /** @type {{streams: object, epochs: object} | null} Resumes gathered for RESUME_WINDOW. */
    this._resumes = null;
    this.client = new RealtimeClient({ ...options, share: false, positions: start.positions });
    this.client._tap = (frame) => this._route(frame);
    // The tabs watch their own pages (hidden, frozen, back online) and tell the core.
    this.client._listen = () => {};
    this.client.on("state", (detail) => this._toAll({ op: "state", detail: { ...detail, retryAt: this.client.retryAt } }));
    this.client.on("close", (info) => this._toAll({ op: "close", info }));
    this.client.on("open", (welcome) => this._onOpen(welcome));
  }

  /** @returns {boolean} Whether no tab is attached. */
  get empty() {
    return this.tabs.size === 0;
  }

  /**
   * A tab arrived (or came back): remember what it wants, subscribe what
   * nobody had, and tell it where the connection stands.
   *
   * @param {{id: string, subs: string[], left?: string[], positions: {streams: object, epochs: object}, visible: boolean}} hello
   * @param {(message: object) => void} deliver  Posts a message to that tab.
   */
  attach(hello, deliver) {
    // A tab may say hello again (after a bfcache restore): its old entry goes
    // once the new one holds its streams, so none is left and joined again.
    const old = this.tabs.get(hello.id);
    const tab = { id: hello.id, deliver, subs: new Set(), left: new Set(hello.left || []), visibleAt: 0 };
    this.tabs.set(hello.id, tab);
    this.setVisible(hello.id, hello.visible);
    const client = this.client;
    for (const stream of hello.subs) {
      // A stream nobody had yet starts where this tab stands.
      const seq = hello.positions.streams[stream];
      if (!client._subscriptions.has(stream) && !client._last.has(stream) && seq !== undefined) {
        client._last.set(stream, seq);
        const epoch = hello.positions.epochs?.[stream];
        if (epoch) client._epochs.set(stream, epoch);
      }
      this._subscribe(tab, stream);
    }
    if (old !== undefined) for (const stream of [...old.subs]) this._unsubscribe(old, stream);
    if (client.state === STATES.OPEN) {
      // Joining an open connection: its inbox fetches counts only if it rendered none.
      deliver(this._openMessage(null));
    } else if (client.state === STATES.IDLE || client.state === STATES.CLOSED) {
      client.connect(); // its state reaches every tab
    } else {
      deliver({ op: "state", detail: { oldState: STATES.IDLE, newState: client.state, retryAt: client.retryAt, attempt: client.attempt } });
    }
  }

  /** A tab left: drop its subscriptions; the last one out closes the socket. */
  detach(id) {
    const tab = this.tabs.get(id);
    if (tab === undefined) return;
    this.tabs.delete(id);
    for (const stream of [...tab.subs]) this._unsubscribe(tab, stream);
    if (this.empty) this.client.close(1000, "no tabs");
  }

  /**
   * A message from tab `id`.
   *
   * @param {string} id
   * @param {object} message
   */
  receive(id, message) {
    const tab = this.tabs.get(id);
    if (tab === undefined) return;
    switch (message.op) {
      case "send":
        this._fromTab(tab, message.frame);
        break;
      case "visible":
        this.setVisible(id, message.visible);
        break;
      case "connect":
        this.client.connect();
        break;
      case "wake":
        if (this.client.state === STATES.OPEN) this._ping();
        else this.client._retrySoon();
        break;
      case "share":
        // What one tab learned for all (the inbox counts it fetched): to the others.
        for (const other of this.tabs.values()) if (other !== tab) other.deliver(message.message);
        break;
      default:
        break;
    }
  }

  setVisible(id, visible) {
    const tab = this.tabs.get(id);
    if (tab !== undefined) tab.visibleAt = visible ? Date.now() : 0;
  }

  _fromTab(tab, frame) {
    const client = this.client;
    if (frame.type === "subscribe") {
      if (!client._subscriptions.has(frame.stream) && !client._last.has(frame.stream) && frame.since !== undefined) {
        client._last.set(frame.stream, frame.since);
        if (frame.epoch) client._epochs.set(frame.stream, frame.epoch);
      }
      this._subscribe(tab, frame.stream);
    } else if (frame.type === "unsubscribe") {
      if (this.defaults.has(frame.stream)) tab.left.add(frame.stream);
      this._unsubscribe(tab, frame.stream);
    } else if (frame.type === "resume") {
      // A tab behind the others: the server replays from where it stands;
      // the tabs that have those messages drop them.
      this._queueResume(frame);
    } else if (frame.type === "ping") {
      this._ping();
    } else {
      client._send(frame);
    }
  }

  // One ping at a time, whichever tab asks: the answer serves them all.
  _ping() {
    if (!this.client._pingOutstanding) this.client.ping();
  }

  _queueResume(frame) {
    if (this._resumes === null) {
      this._resumes = { streams: {}, epochs: {} };
      setTimeout(() => this._flushResumes(), RESUME_WINDOW);
    }
    const gathered = this._resumes;
    for (const [name, seq] of Object.entries(frame.streams || {})) {
      const have = gathered.streams[name];
      // From the furthest behind: a replay from there serves every tab that asked.
      if (have === undefined || (Number.isInteger(have) && (seq === null || seq < have))) {
        gathered.streams[name] = seq;
        const epoch = frame.epochs && frame.epochs[name];
        if (epoch) gathered.epochs[name] = epoch;
      }
    }
  }

  _flushResumes() {
    const gathered = this._resumes;
    this._resumes = null;
    // Not open: nothing is sent, and the tabs compare positions again at the next open.
    if (Object.keys(gathered.streams).length) this.client._send({ type: "resume", ...gathered });
  }

  _subscribe(tab, stream) {
    tab.left.delete(stream);
    if (tab.subs.has(stream)) return;
    tab.subs.add(stream);
    const count = (this.refs.get(stream) || 0) + 1;
    this.refs.set(stream, count);
    if (count === 1 && !this.defaults.has(stream)) {
      this.client.subscribe(stream);
    } else if (this.client.state === STATES.OPEN && this.client._last.has(stream)) {
      // Joined already: tell this tab where the connection stands, as the server would.
      const frame = { type: "subscribed", stream: "", seq: null, id: "", payload: { stream, seq: this.client._last.get(stream), epoch: this.client._epochs.get(stream) || "" } };
      tab.deliver({ op: "frame", frame, lead: false });
    }
  }

  _unsubscribe(tab, stream) {
    if (!tab.subs.delete(stream)) return;
    const count = (this.refs.get(stream) || 1) - 1;
    if (count > 0) {
      this.refs.set(stream, count);
      return;
    }
    this.refs.delete(stream);
    if (!this.defaults.has(stream)) this.client.unsubscribe(stream);
  }

  _onOpen(welcome) {
    const user = welcome.user === null || welcome.user === undefined ? "anon" : String(welcome.user);
    if (user !== this.key) {
      // The session now belongs to someone else (a login in another tab):
      // these tabs were opened for another user and must not hear this one.
      this.client.close(CLOSE_UNAUTHENTICATED, "user changed");
      return;
    }
    this.welcome = welcome;
    this.welcomeTs = this.client._welcomedAt;
    this.defaults = new Set(Object.keys(welcome.streams || {}).filter((name) => !this.refs.has(name)));
    // After a (re)connect one tab, a visible one, fetches the inbox counts and shares them.
    let counter = null;
    for (const tab of this.tabs.values()) if (counter === null || tab.visibleAt > counter.visibleAt) counter = tab;
    for (const tab of this.tabs.values()) tab.deliver(this._openMessage(tab === counter));
  }

  _openMessage(recount) {
    return {
      op: "open",
      welcome: this.welcome,
      ts: this.welcomeTs,
      positions: this.client.positions,
      defaults: [...this.defaults],
      recount,
    };
  }

  _wants(tab, stream) {
    return tab.subs.has(stream) || (this.defaults.has(stream) && !tab.left.has(stream));
  }

  // Every frame the socket receives, before the core's own client handles it.
  _route(frame) {
    if (frame.type === "welcome") return;
    let stream = frame.stream;
    if (stream === "" && STREAM_FRAMES.has(frame.type)) stream = frame.payload.stream;
    if (stream === "" && frame.type === "error" && typeof frame.payload.stream === "string") stream = frame.payload.stream;
    if (stream === "" || typeof stream !== "string") {
      this._toAll({ op: "frame", frame, lead: false });
      return;
    }
    let lead = null;
    const wanting = [];
    for (const tab of this.tabs.values()) {
      if (!this._wants(tab, stream)) continue;
      wanting.push(tab);
      if (lead === null || tab.visibleAt > lead.visibleAt) lead = tab;
    }
    // Tabs behind one BroadcastChannel get one post naming them all: every
    // post reaches every tab, so one per tab would cost tabs² deliveries.
    let groups = null;
    for (const tab of wanting) {
      const group = tab.deliver.group;
      if (group === undefined) {
        tab.deliver({ op: "frame", frame, lead: tab === lead });
      } else {
        groups ??= new Map();
        if (!groups.has(group)) groups.set(group, []);
        groups.get(group).push(tab.id);
      }
    }
    if (groups !== null) {
      for (const [group, ids] of groups) group(ids, { op: "frame", frame, lead: lead.id });
    }
  }

  _toAll(message) {
    for (const tab of this.tabs.values()) tab.deliver(message);
  }
}

// Tab side ------------------------------------------------------------------

/**
 * Connect `client` (a tab's shared RealtimeClient) to the core of its user:
 * in a SharedWorker where there is one, else through a leader tab.
 *
 * @param {RealtimeClient} client
 * @param {{key: string, worker?: string}} share
 * @returns {{post: (message: object) => void, close: () => void, mode: string} | null}
 *   The link to the core; null when this browser can share neither way.
 */
export function openLink(client, share) {
  const name = shareName(share.key, String(client._socketUrl()));
  if (typeof SharedWorker === "function" && share.worker) {
    const link = workerLink(client, name, share.worker);
    if (link !== null) return link;
  }
  if (globalThis.navigator?.locks && typeof BroadcastChannel === "function") {
    return leaderLink(client, name, share.key);
  }
  return null;
}

function hello(client) {
  return {
    op: "hello",
    version: SHARE_VERSION,
    key: client._share.key,
    id: client._tabId,
    subs: [...client._subscriptions],
    left: [...client._left],
    positions: client.positions,
    visible: typeof document === "undefined" || document.visibilityState === "visible",
    options: client._coreOptions(),
  };
}

// The tab's own lock, held while the page lives: the core learns of a crashed
// tab when the browser releases it. The tab says hello only once it holds the
// lock: asked for first, it could still be granted after the core's request
// (they come from two processes), which would then see the tab gone at once.
function holdTabLock(client) {
  if (!globalThis.navigator?.locks) return { granted: Promise.resolve(), release: () => {} };
  let release;
  const held = new Promise((resolve) => {
    release = resolve;
  });
  const granted = new Promise((resolve) => {
    navigator.locks
      .request(`${client._tabId}|tab`, () => {
        resolve();
        return held;
      })
      .catch(() => resolve());
  });
  return { granted, release };
}

export function watchTab(id, gone) {
  if (!globalThis.navigator?.locks) return;
  // Granted only once the tab's own lock is free: it said bye, or it died.
  navigator.locks.request(`${id}|tab`, () => gone()).catch(() => {});
}

function workerLink(client, name, url) {
  let worker;
  try {
    worker = new SharedWorker(url, { type: "module", name });
  } catch (error) {
    console.warn("realtime: no SharedWorker; sharing through a leader tab instead", error);
    return null;
  }
  const port = worker.port;
  const tabLock = holdTabLock(client);
  let unanswered = 0;
  const check = setInterval(() => {
    if (unanswered >= 2) {
      console.warn("realtime: the shared worker stopped answering; starting another");
      client._relink();
      return;
    }
    unanswered += 1;
    port.postMessage({ op: "alive?" });
  }, WORKER_CHECK_INTERVAL);
  port.onmessage = (event) => {
    if (event.data.op === "alive") unanswered = 0;
    else client._fromCore(event.data);
  };
  port.onmessageerror = () => console.error("realtime: a message from the shared worker could not be read");
  worker.onerror = (event) => {
    // The script failed to load or run (e.g. a CSP without worker-src): connect alone.
    console.warn("realtime: the shared worker failed; connecting from this tab", event.message || event);
    client._unshare();
  };
  port.start();
  tabLock.granted.then(() => port.postMessage(hello(client)));
  return {
    mode: "worker",
    post: (message) => port.postMessage({ ...message, id: client._tabId }),
    close: () => {
      clearInterval(check);
      port.postMessage({ op: "bye", id: client._tabId });
      port.close();
      tabLock.release();
    },
  };
}

function leaderLink(client, name, key) {
  const channel = new BroadcastChannel(name);
  const tabLock = holdTabLock(client);
  const id = client._tabId;
  const queue = new AbortController();
  let core = null; // set while this tab leads
  let leader = null; // the id of the tab that leads, as far as this one knows
  let abdicate = null;

  const toCore = (message) => {
    if (core !== null) core.receive(id, message);
    else channel.postMessage({ ...message, id });
  };

  // Frames for several tabs go in one post (Core._route); `lead` is then the id of the tab that leads.
  const toTabs = (ids, message) => channel.postMessage({ ...message, to: ids, from: id });
  const deliverTo = (tabId) => {
    const deliver = (message) => channel.postMessage({ ...message, to: tabId, from: id });
    deliver.group = toTabs;
    return deliver;
  };

  channel.onmessage = (event) => {
    const message = event.data;
    if (core !== null) {
      // Leading: the other tabs' messages, for the core.
      if (message.op === "hello") {
        if (message.version !== SHARE_VERSION || message.key !== key) return;
        core.attach(message, deliverTo(message.id));
        const attached = core;
        watchTab(message.id, () => attached.detach(message.id));
      } else if (message.op === "bye") {
        core.detach(message.id);
      } else if (message.id !== undefined && message.to === undefined) {
        core.receive(message.id, message);
      }
      return;
    }
    if (message.op === "leader") {
      // A new leader: say what this tab wants and where it stands.
      leader = message.from;
      channel.postMessage(hello(client));
    } else if (message.op === "resigning" && message.from === leader) {
      leader = null;
      client._fromCore({ op: "state", detail: { oldState: client.state, newState: STATES.CONNECTING } });
    } else if ((message.to === id || (Array.isArray(message.to) && message.to.includes(id))) && (message.from === leader || leader === null)) {
      // A tab that joined under a leader learns it from its first answer.
      leader = message.from;
      client._fromCore(Array.isArray(message.to) ? { ...message, lead: message.lead === id } : message);
    }
  };

  // Give the socket up, at once and in order: the other tabs hear it before
  // the lock (released when the promise `lead` returned settles) is free.
  const resign = () => {
    const old = core;
    if (old === null) return;
    core = null;
    channel.postMessage({ op: "resigning", from: id });
    old.client.close(1000, "leader left");
    const done = abdicate;
    abdicate = null;
    done();
  };

  const lead = () =>
    new Promise((resolve) => {
      abdicate = resolve;
      leader = id;
      core = new Core(key, client._coreOptions(), { positions: client.positions });
      core.attach(hello(client), (message) => client._fromCore(message));
      channel.postMessage({ op: "leader", from: id });
    });

  tabLock.granted.then(() => {
    if (queue.signal.aborted) return;
    // Queued behind the current leader; granted when it goes.
    navigator.locks.request(`${name}|leader`, { signal: queue.signal }, lead).catch(() => {});
    channel.postMessage(hello(client));
  });

  return {
    mode: "leader",
    get leading() {
      return core !== null;
    },
    post: toCore,
    close: () => {
      if (core === null) channel.postMessage({ op: "bye", id });
      queue.abort();
      resign();
      channel.close();
      tabLock.release();
    },
  };
}
