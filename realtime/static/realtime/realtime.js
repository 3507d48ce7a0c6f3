/**
 * The browser client of django realtime: one WebSocket per page that never
 * loses a notification.
 *
 * It keeps, per stream, the seq of the last message it delivered. Every
 * (re)connect hands those positions to the server in the URL, so the server
 * replays what was missed before anything live; a message at or below the
 * last seq is a duplicate and is dropped. A heartbeat finds links that died
 * without a close frame, and pongs carry the server's stream heads so a
 * message lost on a healthy-looking link is asked for again.
 *
 * `client.inbox` keeps the signed-in user's unread count live and wraps the
 * inbox's HTTP endpoints (pages, mark read, archive).
 *
 * The wire protocol is described in docs/protocol.md, this client in
 * docs/client.md. No dependencies, no build step: import it as an ES module.
 *
 * @module realtime
 */

import { openLink, tabId } from "./share.js";

/**
 * @typedef {"idle" | "connecting" | "open" | "waiting" | "closed"} State
 *
 * @typedef {object} Envelope  A frame from the server.
 * @property {string} type
 * @property {string} stream  `""` for frames about the connection.
 * @property {number | null} seq  Position in the stream; null for ephemeral and protocol frames.
 * @property {string} [id]
 * @property {string} [ts]
 * @property {Object<string, *>} payload
 *
 * @typedef {object} Positions  Where the client stands in each stream.
 * @property {Object<string, number | null>} streams  Last seq delivered per stream.
 * @property {Object<string, string>} [epochs]  The epoch those seqs belong to.
 *
 * @typedef {object} CloseInfo
 * @property {number} code
 * @property {string} reason
 * @property {boolean} wasClean
 * @property {boolean} [welcomed]  The closed socket had received the server's `welcome`.
 * @property {number} [attempt]  Failed attempts before this close (0 after a healthy connection).
 *
 * @typedef {object} Options
 * @property {string} [url="/ws/realtime/"]  Relative URLs resolve against the page, http(s) becoming ws(s).
 * @property {number} [heartbeatInterval]  Ping period in ms; default: the server's (`welcome`), else 25000.
 * @property {number} [backoffMin=1000]  Retry delay ceiling of the first attempt, in ms.
 * @property {number} [backoffMax=30000]  Largest retry delay ceiling, in ms.
 * @property {number} [backoffFloor=250]  Shortest retry delay, in ms, also after `online` or the page being shown.
 * @property {number} [minUptime=5000]  A connection open this long resets the retry count.
 * @property {number} [connectTimeout=10000]  Give up on an attempt that got no `welcome` within this many ms.
 * @property {(info: CloseInfo) => boolean} [shouldReconnect]  Retry after this close? Default: {@link defaultShouldReconnect}.
 * @property {Positions} [positions]  Where to resume from on the first connect (the template tag renders them).
 * @property {InboxOptions} [inbox]  Where the signed-in user's inbox is; without `url` the inbox is off.
 * @property {ShareOptions | false} [share=false]  Share one connection among the tabs of this user (share.js).
 *
 * @typedef {object} ShareOptions
 * @property {string} key  Who the tabs are: the user's pk, or "anon". Tabs of different keys never share.
 * @property {string} [worker]  URL of worker.js; without it the tabs share through a leader tab.
 *
 * @typedef {object} InboxOptions
 * @property {string} [url]  The inbox endpoint (`{% url 'realtime:inbox' %}`); the others sit beside it.
 * @property {string} [csrfToken]  Django's CSRF token, used when the CSRF cookie cannot be read.
 * @property {string} [csrfCookie="csrftoken"]  Name of the cookie that holds the CSRF token.
 * @property {string} [csrfHeader="X-CSRFToken"]  Header that carries it.
 * @property {Counts & {ts?: string}} [unread]  The counts when the page was rendered, taken at `ts`.
 *
 * @typedef {object} Counts  Unread inbox items.
 * @property {number} total
 * @property {Object<string, number>} streams  Per stream of the user's inbox.
 *
 * @typedef {object} ItemRef  An inbox item: an item of a page, an `item` event's message, or just these two fields.
 * @property {string} stream
 * @property {number} seq
 *
 * @typedef {object} InboxPage
 * @property {Array<Envelope & {read: boolean}>} items  Newest first.
 * @property {string | null} next  Pass as `before` for the following page; null on the last.
 * @property {Counts} unread
 */

/** @type {Readonly<Object<string, State>>} */
export const STATES = Object.freeze({
  IDLE: "idle",
  CONNECTING: "connecting",
  OPEN: "open",
  WAITING: "waiting",
  CLOSED: "closed",
});

/** Close code the client uses when it gives up on a link: no pong, or no welcome in time. */
export const CLOSE_DEAD_LINK = 4000;

/** Close code of the server for a socket without a login, or whose login ended. */
export const CLOSE_UNAUTHENTICATED = 4401;

/**
 * Close codes after which retrying cannot help: normal close, not logged in
 * (or logged out), forbidden, policy violation, frame too big, too many
 * connections (retrying 4029 would only take another of the user's slots, in
 * a loop).
 */
export const NO_RECONNECT_CODES = Object.freeze([1000, 4401, 4403, 1008, 4008, 1009, 4009, 4029]);

/** Unanswered pings in a row after which the link is declared dead. */
export const MISSED_PONGS_LIMIT = 2;

/** Events of the client itself; every other name passed to `on()` is a message type. */
export const CLIENT_EVENTS = Object.freeze(["state", "open", "message", "invalid", "resync", "error", "close"]);

const DEFAULTS = Object.freeze({
  url: "/ws/realtime/",
  heartbeatInterval: null,
  backoffMin: 1000,
  backoffMax: 30000,
  backoffFloor: 250,
  minUptime: 5000,
  connectTimeout: 10000,
});

// Frames the protocol uses for itself; they are handled here, never emitted by type.
const PROTOCOL_TYPES = new Set(["welcome", "pong", "subscribed", "unsubscribed", "resync", "error"]);
const LIFECYCLE_EVENTS = new Set(CLIENT_EVENTS);

/**
 * The default reconnect policy: retry unless the close code says retrying cannot help.
 *
 * @param {CloseInfo} info
 * @returns {boolean}
 */
export function defaultShouldReconnect(info) {
  if (info.code === CLOSE_UNAUTHENTICATED && info.welcomed && info.attempt === 0) {
    // The login this socket was opened with ended, but the browser may hold a
    // new session of the same user (Django gives one on login and password
    // change): look once. A 4401 before `welcome` is final.
    return true;
  }
  return !NO_RECONNECT_CODES.includes(info.code);
}

/**
 * The delay before reconnect attempt `attempt` (0 for the first), in ms.
 *
 * "Full jitter" above a floor: a uniformly random delay in
 * `[floor, max(floor, min(max, min * 2 ** attempt))]`. Spreading reconnects
 * over the whole window, rather than around its end, keeps thousands of
 * clients dropped by one server restart from returning in waves; the floor
 * keeps any of them from coming back at once. The ceiling doubles per failed
 * attempt and is capped at `max`.
 *
 * @param {number} attempt
 * @param {number} min
 * @param {number} max
 * @param {() => number} [random=Math.random]  Returns a number in `[0, 1]`.
 * @param {number} [floor=250]
 * @returns {number}
 */
export function backoffDelay(attempt, min, max, random = Math.random, floor = DEFAULTS.backoffFloor) {
  const ceiling = Math.max(floor, Math.min(max, min * 2 ** Math.min(attempt, 52)));
  return Math.round(floor + random() * (ceiling - floor));
}

/**
 * The delay of a pending reconnect brought forward because the browser went
 * `online` or the page became visible, in ms: uniformly random in
 * `[floor, floor + min]`.
 *
 * Every tab that waited through an outage sees these events at the same
 * moment; retrying in the event itself would bring them all back within the
 * same millisecond.
 *
 * @param {number} floor
 * @param {number} min
 * @param {() => number} [random=Math.random]  Returns a number in `[0, 1]`.
 * @returns {number}
 */
export function wakeDelay(floor, min, random = Math.random) {
  return Math.round(floor + random() * min);
}

/**
 * Is `data` a frame the client can act on?
 *
 * @param {*} data
 * @returns {string | null} Why it is not, or null if it is.
 */
function envelopeProblem(data) {
  if (data === null || typeof data !== "object" || Array.isArray(data)) return "not a JSON object";
  if (typeof data.type !== "string" || data.type === "") return "'type' is not a non-empty string";
  if (data.payload === null || typeof data.payload !== "object" || Array.isArray(data.payload)) {
    return "'payload' is not an object";
  }
  if (data.seq !== null && !(Number.isInteger(data.seq) && data.seq >= 0)) {
    return "'seq' is neither a non-negative integer nor null";
  }
  if (typeof data.stream !== "string") return "'stream' is not a string";
  return null;
}

/** The base URL relative URLs resolve against. */
function documentBase() {
  return typeof document !== "undefined" ? document.baseURI : globalThis.location?.href;
}

function resolveUrl(url) {
  const resolved = new URL(url, documentBase());
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  else if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved;
}

/**
 * Handlers by event name, shared by the client and its inbox. A handler that
 * throws is logged and reported as an `error` event; the others still run.
 */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
    /** @type {WeakSet<Function>} Handlers that run in one tab of the browser only. */
    this._perBrowser = new WeakSet();
    // False while a shared message is handled in a tab that is not the one
    // chosen to run the `perBrowser` handlers.
    this._lead = true;
  }

  /**
   * Call `handler` with the detail of every event `type`.
   *
   * @param {string} type
   * @param {Function} handler
   * @param {{perBrowser?: boolean}} [options]  `perBrowser`: when tabs share a connection, run
   *   this handler for a message in one of them only (a visible one), e.g. to show a toast once.
   * @returns {() => void} A function that removes the handler.
   */
  on(type, handler, options = {}) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    if (options.perBrowser) this._perBrowser.add(handler);
    return () => this.off(type, handler);
  }

  /**
   * Remove a handler added with `on`.
   *
   * @param {string} type
   * @param {Function} handler
   */
  off(type, handler) {
    this._handlers.get(type)?.delete(handler);
  }

  _emit(type, detail) {
    this._call(type, this._handlers.get(type), detail);
  }

  _call(type, handlers, detail) {
    if (handlers === undefined) return;
    for (const handler of [...handlers]) {
      if (!this._lead && this._perBrowser.has(handler)) continue;
      try {
        handler(detail);
      } catch (error) {
        // One broken handler must not silence the others or later messages.
        console.error(`realtime: a handler for "${type}" threw`, error);
        if (type !== "error") this._emit("error", { kind: "handler", event: type, error });
      }
    }
  }
}

/**
 * A WebSocket connection to the realtime server that reconnects, resumes
 * where it left off and delivers each message once, in order.
 *
 * Events (`on(type, handler)`): `state`, `open`, `message`, `invalid`,
 * `resync`, `error`, `close`, and every message type. See docs/client.md.
 */
export class RealtimeClient extends Emitter {
  /**
   * Create a client; nothing happens until {@link RealtimeClient#connect}.
   *
   * @param {Options} [options]
   */
  constructor(options = {}) {
    super();
    /** @type {Required<Omit<Options, "positions" | "heartbeatInterval" | "inbox">> & {heartbeatInterval: number | null}} */
    this.options = { ...DEFAULTS, shouldReconnect: defaultShouldReconnect };
    for (const [key, value] of Object.entries(options)) {
      if (key !== "positions" && key !== "inbox" && key !== "share" && value !== undefined && value !== null) {
        this.options[key] = value;
      }
    }
    /** @type {ShareOptions | null} Set while the client shares (or tries to) one connection among tabs. */
    this._share = options.share && typeof options.share.key === "string" ? { ...options.share } : null;
    // The link to the shared connection's core (share.js); null when not sharing.
    this._link = null;
    this._tabId = tabId();
    /** @type {Set<string>} Streams this tab left with unsubscribe(); for a shared connection's default streams. */
    this._left = new Set();
    // A hook of share.js's core: called with every valid frame before it is handled.
    this._tap = null;
    // Set by the shared connection's `open`: whether this tab's inbox fetches
    // the counts (true), waits for another tab's (false), or fetches them
    // only if it has none (null: it joined an open connection). Undefined
    // when not sharing.
    this._recounts = undefined;
    /** @type {State} */
    this._state = STATES.IDLE;
    /** @type {Map<string, Set<Function>>} Handlers given to subscribe(), per stream. */
    this._streamHandlers = new Map();
    /** @type {Set<string>} Streams asked for with subscribe(). */
    this._subscriptions = new Set();
    /** @type {Map<string, number | null>} Last seq delivered per stream. */
    this._last = new Map();
    /** @type {Map<string, string>} */
    this._epochs = new Map();
    /** @type {Set<string>} Streams with a resume asked for because of a gap. */
    this._healing = new Set();
    /** @type {Set<string>} Streams named in the current connection's URL. */
    this._urlStreams = new Set();
    /** @type {WebSocket | null} */
    this._socket = null;
    // Bumped for every socket; callbacks of older sockets compare and return.
    this._generation = 0;
    this._attempt = 0;
    this._welcomed = false;
    // The server's time when the current connection was welcomed (its `ts`), for the inbox.
    this._welcomedAt = null;
    this._retryAt = null;
    this._pingId = 0;
    this._pingOutstanding = false;
    this._missedPongs = 0;
    this._heartbeatMs = DEFAULTS.heartbeatInterval;
    this._decoding = null;
    this._closedByPagehide = false;
    this._listening = false;
    this._reconnectTimer = null;
    this._heartbeatTimer = null;
    this._connectTimer = null;
    this._uptimeTimer = null;
    this._onVisibility = this._onVisibility.bind(this);
    this._onOnline = this._onOnline.bind(this);
    this._onPagehide = this._onPagehide.bind(this);
    this._onPageshow = this._onPageshow.bind(this);
    this._onFreeze = this._onFreeze.bind(this);
    this._onResume = this._onResume.bind(this);

    const positions = options.positions || {};
    for (const [name, seq] of Object.entries(positions.streams || {})) this._last.set(name, seq);
    for (const [name, epoch] of Object.entries(positions.epochs || {})) if (epoch) this._epochs.set(name, epoch);

    /** The signed-in user's inbox: unread counts, pages, mark read, archive. */
    this.inbox = new Inbox(this, options.inbox);
  }

  /**
   * Build a client from a `<script>` element's `data-*` attributes (what the
   * `{% realtime_client %}` template tag renders), connect it unless
   * `data-autoconnect="false"`, and expose it as `window[data-global]` when set.
   *
   * @param {HTMLScriptElement} script
   * @returns {RealtimeClient}
   */
  static fromScript(script) {
    const data = script.dataset;
    const number = (value) => (value === undefined || value === "" ? undefined : Number(value));
    const client = new RealtimeClient({
      url: data.url || undefined,
      heartbeatInterval: number(data.heartbeat),
      backoffMin: number(data.backoffMin),
      backoffMax: number(data.backoffMax),
      backoffFloor: number(data.backoffFloor),
      minUptime: number(data.minUptime),
      connectTimeout: number(data.connectTimeout),
      positions: data.positions ? JSON.parse(data.positions) : undefined,
      inbox: {
        url: data.inboxUrl,
        unread: data.inboxUnread ? JSON.parse(data.inboxUnread) : undefined,
        csrfToken: data.csrfToken,
        csrfCookie: data.csrfCookie,
        csrfHeader: data.csrfHeader,
      },
      share: data.share ? { key: data.share, worker: data.worker } : false,
    });
    script.realtimeClient = client;
    if (data.global) window[data.global] = client;
    if (data.autoconnect !== "false") client.connect();
    return client;
  }

  /** @returns {State} The connection state. */
  get state() {
    return this._state;
  }

  /** @returns {number | null} When the pending reconnect will start (ms since the epoch), or null. */
  get retryAt() {
    return this._retryAt;
  }

  /** @returns {number} Failed attempts since the last healthy connection. */
  get attempt() {
    return this._attempt;
  }

  /**
   * @returns {"worker" | "leader" | "follower" | null} How this tab reaches the server when it
   *   shares a connection: through a SharedWorker, holding the socket for the other tabs, or
   *   through the tab that holds it; null when it connects alone.
   */
  get sharing() {
    if (this._link === null) return null;
    if (this._link.mode === "worker") return "worker";
    return this._link.leading ? "leader" : "follower";
  }

  /** @returns {Positions} A copy of the last seq and epoch the client holds per stream. */
  get positions() {
    return { streams: Object.fromEntries(this._last), epochs: Object.fromEntries(this._epochs) };
  }

  /**
   * Resolve once the client is open and the server's `welcome` arrived;
   * reject if the client closes for good first.
   *
   * @returns {Promise<RealtimeClient>}
   */
  ready() {
    if (this._state === STATES.OPEN) return Promise.resolve(this);
    return new Promise((resolve, reject) => {
      const onState = ({ newState, code }) => {
        if (newState === STATES.OPEN) {
          this.off("state", onState);
          resolve(this);
        } else if (newState === STATES.CLOSED) {
          this.off("state", onState);
          reject(new Error(`realtime: the connection closed (code ${code ?? "none"}) before it was ready`));
        }
      };
      this.on("state", onState);
    });
  }

  // Streams ------------------------------------------------------------------

  /**
   * Join `stream` (and keep it joined across reconnects); `handler`, if
   * given, is called with every message of that stream.
   *
   * @param {string} stream
   * @param {(message: Envelope) => void} [handler]
   */
  subscribe(stream, handler) {
    if (handler) {
      if (!this._streamHandlers.has(stream)) this._streamHandlers.set(stream, new Set());
      this._streamHandlers.get(stream).add(handler);
    }
    this._left.delete(stream);
    if (this._subscriptions.has(stream)) return;
    this._subscriptions.add(stream);
    if (this._state === STATES.OPEN || this._link !== null) this._sendSubscribe(stream);
  }

  /**
   * Leave `stream` and drop the handlers given for it to {@link RealtimeClient#subscribe}.
   *
   * @param {string} stream
   */
  unsubscribe(stream) {
    this._subscriptions.delete(stream);
    this._streamHandlers.delete(stream);
    this._last.delete(stream);
    this._epochs.delete(stream);
    this._healing.delete(stream);
    this._left.add(stream);
    this._send({ type: "unsubscribe", stream });
  }

  _sendSubscribe(stream) {
    const frame = { type: "subscribe", stream };
    if (this._last.has(stream)) frame.since = this._last.get(stream);
    if (this._epochs.has(stream)) frame.epoch = this._epochs.get(stream);
    this._send(frame);
  }

  // Connection ---------------------------------------------------------------

  /**
   * Open the connection (resuming from the positions the client holds).
   * Does nothing while connecting or open; skips the wait when a retry is pending.
   */
  connect() {
    if (this._state === STATES.CONNECTING || this._state === STATES.OPEN) return;
    if (this._state === STATES.CLOSED || this._state === STATES.IDLE) this._attempt = 0;
    this._closedByPagehide = false;
    this._listen(true);
    if (this._link !== null) {
      this._link.post({ op: "connect" });
      return;
    }
    if (this._share !== null) {
      this._link = openLink(this, this._share);
      if (this._link !== null) {
        this._setState(STATES.CONNECTING, { attempt: 0 });
        return;
      }
      this._share = null; // neither SharedWorker nor Web Locks here: connect alone
    }
    this._open();
  }

  /**
   * Close the connection for good (until the next {@link RealtimeClient#connect}).
   *
   * @param {number} [code=1000]
   * @param {string} [reason=""]
   */
  close(code = 1000, reason = "") {
    this._clearAllTimers();
    this._closedByPagehide = false;
    this._listen(false);
    if (this._link !== null) {
      // Only this tab leaves; the shared socket closes with the last one.
      const link = this._link;
      this._link = null;
      link.close();
      if (this._state === STATES.OPEN) this._emit("close", { code, reason, wasClean: true });
      this._setState(STATES.CLOSED, { code });
      return;
    }
    const hadSocket = this._socket !== null;
    this._dropSocket(code, reason);
    if (hadSocket) this._emit("close", { code, reason, wasClean: true });
    this._setState(STATES.CLOSED, { code });
  }

  /**
   * Send a ping now; the heartbeat keeps its schedule.
   *
   * @returns {boolean} False when not open.
   */
  ping() {
    if (this._state !== STATES.OPEN) return false;
    this._pingId += 1;
    this._pingOutstanding = true;
    return this._send({ type: "ping", id: this._pingId });
  }

  _open() {
    this._clearReconnectTimer();
    this._retryAt = null;
    const url = this._connectUrl();
    this._welcomed = false;
    this._setState(STATES.CONNECTING, { attempt: this._attempt });
    const generation = ++this._generation;
    let socket;
    try {
      socket = new WebSocket(url);
    } catch (error) {
      // A malformed URL or a refused scheme: retrying would fail the same way.
      console.error("realtime: cannot open a WebSocket to", String(url), error);
      this._emit("error", { kind: "socket", error });
      this._clearAllTimers();
      this._listen(false);
      this._setState(STATES.CLOSED, { code: null });
      return;
    }
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this._receive(generation, event.data);
    socket.onclose = (event) => this._onSocketClose(generation, event);
    socket.onerror = () => {
      if (generation === this._generation) this._emit("error", { kind: "socket" });
    };
    this._socket = socket;
    this._startConnectTimer();
  }

  /** @returns {URL} The WebSocket URL, without a resume. */
  _socketUrl() {
    return resolveUrl(this.options.url);
  }

  /** The options a shared connection's core is made with: what can cross to a worker. */
  _coreOptions() {
    const { heartbeatInterval, backoffMin, backoffMax, backoffFloor, minUptime, connectTimeout } = this.options;
    return { url: String(this._socketUrl()), heartbeatInterval, backoffMin, backoffMax, backoffFloor, minUptime, connectTimeout };
  }

  _connectUrl() {
    const url = this._socketUrl();
    const streams = {};
    for (const name of this._subscriptions) streams[name] = null;
    for (const [name, seq] of this._last) streams[name] = seq;
    this._urlStreams = new Set(Object.keys(streams));
    if (this._urlStreams.size) {
      const epochs = Object.fromEntries([...this._epochs].filter(([name]) => name in streams));
      url.searchParams.set("resume", JSON.stringify({ streams, epochs }));
    }
    return url;
  }

  _onSocketClose(generation, event) {
    if (generation !== this._generation) return;
    this._socket = null;
    this._lost({
      code: event.code,
      reason: event.reason,
      wasClean: event.wasClean,
      welcomed: this._welcomed,
      attempt: this._attempt,
    });
  }

  // Give up on the current socket without waiting for its close handshake,
  // which never completes on a dead link.
  _abandon(code, reason) {
    this._dropSocket(code, reason);
    this._lost({ code, reason, wasClean: false });
  }

  _lost(info) {
    this._clearHeartbeatTimer();
    this._clearConnectTimer();
    this._clearUptimeTimer();
    const generation = this._generation;
    this._emit("close", info);
    // A handler may have called close() or connect() already.
    if (generation !== this._generation || this._state === STATES.CLOSED) return;
    let retry = false;
    try {
      retry = Boolean(this.options.shouldReconnect(info));
    } catch (error) {
      console.error("realtime: shouldReconnect threw; not reconnecting", error);
    }
    if (retry) {
      this._scheduleReconnect(info.code);
      return;
    }
    this._listen(false);
    this._setState(STATES.CLOSED, { code: info.code });
  }

  _dropSocket(code, reason) {
    const socket = this._socket;
    this._socket = null;
    this._generation += 1;
    if (socket === null) return;
    socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close(code, reason);
    } catch (error) {
      // Codes outside 1000 and 3000-4999 throw; the socket must go anyway.
      socket.close();
    }
  }

  _scheduleReconnect(code) {
    const { backoffMin, backoffMax, backoffFloor } = this.options;
    const delay = backoffDelay(this._attempt, backoffMin, backoffMax, Math.random, backoffFloor);
    const attempt = this._attempt;
    this._attempt += 1;
    this._startReconnectTimer(delay);
    this._setState(STATES.WAITING, { code, delay, attempt });
  }

  // While waiting, move the pending retry to within `wakeDelay` unless it is due sooner.
  _retrySoon() {
    if (this._state !== STATES.WAITING) return;
    const delay = wakeDelay(this.options.backoffFloor, this.options.backoffMin);
    if (this._retryAt !== null && this._retryAt - Date.now() <= delay) return;
    this._startReconnectTimer(delay);
  }

  /**
   * Change the state and emit `state` with `{oldState, newState, ...detail}`.
   * The one place the state changes.
   *
   * @param {State} newState
   * @param {object} [detail]
   */
  _setState(newState, detail = {}) {
    const oldState = this._state;
    if (oldState === newState) return;
    this._state = newState;
    this._emit("state", { ...detail, oldState, newState });
  }

  // Page lifecycle -----------------------------------------------------------

  _listen(on) {
    if (on === this._listening || typeof window === "undefined") return;
    this._listening = on;
    const method = on ? "addEventListener" : "removeEventListener";
    document[method]("visibilitychange", this._onVisibility);
    window[method]("online", this._onOnline);
    window[method]("pagehide", this._onPagehide);
    window[method]("pageshow", this._onPageshow);
    document[method]("freeze", this._onFreeze);
    document[method]("resume", this._onResume);
  }

  _onVisibility() {
    if (this._link !== null) {
      const visible = document.visibilityState === "visible";
      this._link.post({ op: "visible", visible });
      if (visible) this._link.post({ op: "wake" });
      return;
    }
    if (document.visibilityState !== "visible") return;
    // Timers of hidden pages are throttled: check the link now, not a heartbeat later.
    if (this._state === STATES.OPEN) this.ping();
    else this._retrySoon();
  }

  _onOnline() {
    if (this._link !== null) this._link.post({ op: "wake" });
    else this._retrySoon();
  }

  _onPagehide() {
    if (this._state === STATES.IDLE || this._state === STATES.CLOSED) return;
    this.close(1000, "page hidden");
    // Listen again so a page restored from the back/forward cache reconnects.
    this._listen(true);
    this._closedByPagehide = true;
  }

  _onPageshow(event) {
    if (event.persisted && this._closedByPagehide) this.connect();
  }

  // A frozen page runs no code: it cannot read its socket, nor serve the
  // tabs that share it. Leave, and come back when the page resumes.
  _onFreeze() {
    this._onPagehide();
  }

  _onResume() {
    if (this._closedByPagehide) this.connect();
  }

  // Timers: one handle and one clear function each ---------------------------

  _startHeartbeat() {
    this._clearHeartbeatTimer();
    this._heartbeatTimer = setTimeout(() => {
      this._heartbeatTimer = null;
      this._heartbeatTick();
    }, this._heartbeatMs);
  }

  _heartbeatTick() {
    if (this._pingOutstanding) {
      this._missedPongs += 1;
      if (this._missedPongs >= MISSED_PONGS_LIMIT) {
        this._abandon(CLOSE_DEAD_LINK, "no pong");
        return;
      }
    }
    this.ping();
    this._startHeartbeat();
  }

  _clearHeartbeatTimer() {
    if (this._heartbeatTimer !== null) clearTimeout(this._heartbeatTimer);
    this._heartbeatTimer = null;
  }

  _startConnectTimer() {
    this._clearConnectTimer();
    this._connectTimer = setTimeout(() => {
      this._connectTimer = null;
      this._abandon(CLOSE_DEAD_LINK, "connect timeout");
    }, this.options.connectTimeout);
  }

  _clearConnectTimer() {
    if (this._connectTimer !== null) clearTimeout(this._connectTimer);
    this._connectTimer = null;
  }

  _startUptimeTimer() {
    this._clearUptimeTimer();
    this._uptimeTimer = setTimeout(() => {
      this._uptimeTimer = null;
      this._attempt = 0;
    }, this.options.minUptime);
  }

  _clearUptimeTimer() {
    if (this._uptimeTimer !== null) clearTimeout(this._uptimeTimer);
    this._uptimeTimer = null;
  }

  _startReconnectTimer(delay) {
    this._clearReconnectTimer();
    this._retryAt = Date.now() + delay;
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      this._open();
    }, delay);
  }

  _clearReconnectTimer() {
    if (this._reconnectTimer !== null) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
  }

  _clearAllTimers() {
    this._clearReconnectTimer();
    this._clearHeartbeatTimer();
    this._clearConnectTimer();
    this._clearUptimeTimer();
    this._retryAt = null;
  }

  // Receiving ----------------------------------------------------------------

  _receive(generation, data) {
    if (data instanceof Blob || this._decoding) {
      // blob.text() is asynchronous: later frames wait behind it to keep their order.
      const job = (this._decoding || Promise.resolve())
        .then(() => (data instanceof Blob ? data.text() : data))
        .then(
          (text) => this._receiveText(generation, typeof text === "string" ? text : decodeBinary(text), data),
          (error) => this._invalid(generation, data, `undecodable binary frame (${error})`),
        );
      this._decoding = job;
      job.then(() => {
        if (this._decoding === job) this._decoding = null;
      });
      return;
    }
    this._receiveText(generation, typeof data === "string" ? data : decodeBinary(data), data);
  }

  _receiveText(generation, text, raw) {
    if (generation !== this._generation) return;
    if (text === null) {
      this._invalid(generation, raw, "binary frame that is not UTF-8 text");
      return;
    }
    let frame;
    try {
      frame = JSON.parse(text);
    } catch (error) {
      this._invalid(generation, raw, `invalid JSON (${error.message})`);
      return;
    }
    const problem = envelopeProblem(frame);
    if (problem) {
      this._invalid(generation, raw, problem);
      return;
    }
    if (this._tap !== null) this._tap(frame);
    this._handleFrame(frame, raw);
  }

  _handleFrame(frame, raw) {
    try {
      if (PROTOCOL_TYPES.has(frame.type)) this._onProtocolFrame(frame);
      else this._onMessage(frame);
    } catch (error) {
      console.error("realtime: failed to handle a frame", raw, error);
      this._emit("error", { kind: "client", error, data: raw });
    }
  }

  // Sharing (share.js) -------------------------------------------------------

  /**
   * A message from the core of the shared connection. The one way the
   * shared connection changes this tab.
   *
   * @param {object} message
   */
  _fromCore(message) {
    if (this._link === null) return;
    switch (message.op) {
      case "state": {
        const { oldState: _old, newState, retryAt, ...detail } = message.detail;
        this._retryAt = retryAt ?? null;
        if (Number.isInteger(detail.attempt)) this._attempt = detail.attempt;
        // Open is entered with the core's `open`, which brings where it stands.
        if (newState !== STATES.OPEN) this._setState(newState, detail);
        break;
      }
      case "open":
        this._onSharedOpen(message);
        break;
      case "frame":
        this._lead = message.lead !== false;
        try {
          this._handleFrame(message.frame, message.frame);
        } finally {
          this._lead = true;
        }
        break;
      case "close":
        this._emit("close", message.info);
        break;
      case "inbox-counts":
        this.inbox._fromOtherTab(message.unread);
        break;
      case "refused":
        this._unshare();
        break;
      default:
        break;
    }
  }

  _onSharedOpen({ welcome, ts, positions, defaults, recount }) {
    this._welcomed = true;
    this._recounts = recount;
    this._welcomedAt = ts;
    this._healing.clear();
    const behind = {};
    const defaultStreams = new Set(defaults);
    for (const [name, seq] of Object.entries(positions.streams)) {
      if (!this._subscriptions.has(name) && !(defaultStreams.has(name) && !this._left.has(name))) continue;
      const mine = this._last.get(name);
      if (!Number.isInteger(mine)) this._setPosition(name, seq, positions.epochs[name]);
      else if (Number.isInteger(seq) && mine < seq) behind[name] = mine;
    }
    this._setState(STATES.OPEN);
    this._emit("open", welcome);
    // Behind the shared connection: the server replays from here, the other tabs drop the repeats.
    for (const name of Object.keys(behind)) this._healing.add(name);
    if (Object.keys(behind).length) this._resume(behind);
  }

  /** Hand the inbox counts this tab fetched to the other tabs of the shared connection. */
  _shareCounts(unread) {
    if (this._link !== null) this._link.post({ op: "share", message: { op: "inbox-counts", unread } });
  }

  // The core stopped answering (its worker died): reach a new one, which
  // resumes from where this tab stands.
  _relink() {
    const link = this._link;
    if (link === null) return;
    this._link = null;
    link.close();
    this._link = openLink(this, this._share);
    if (this._link === null) {
      this._share = null;
      this._open();
      return;
    }
    this._setState(STATES.CONNECTING, { attempt: 0 });
  }

  // This browser cannot share after all (the worker failed or refused): connect alone.
  _unshare() {
    const link = this._link;
    this._link = null;
    this._share = null;
    if (link !== null) {
      try {
        link.close();
      } catch (error) {
        // Closing a link that never worked.
      }
    }
    if (this._state !== STATES.IDLE && this._state !== STATES.CLOSED) this._open();
  }

  _invalid(generation, data, reason) {
    if (generation !== this._generation) return;
    console.error(`realtime: ignoring an invalid frame: ${reason}; raw data:`, data);
    this._emit("invalid", { data, reason });
  }

  _onProtocolFrame(frame) {
    const payload = frame.payload;
    switch (frame.type) {
      case "welcome":
        this._onWelcome(payload, frame.ts);
        break;
      case "pong":
        this._onPong(payload);
        break;
      case "subscribed":
        if (typeof payload.stream === "string" && this._subscriptions.has(payload.stream)) {
          const mine = this._last.get(payload.stream);
          if (this._link !== null && Number.isInteger(mine)) {
            // Shared: the connection joined for another tab, or from where this one stands.
            if (Number.isInteger(payload.seq) && payload.seq > mine) this._resume({ [payload.stream]: mine });
          } else {
            this._setPosition(payload.stream, payload.seq, payload.epoch);
          }
        }
        break;
      case "resync":
        this._setPosition(payload.stream, payload.seq, payload.epoch);
        this._emit("resync", payload);
        break;
      case "error":
        // Where a developer looks first: a refused stream is otherwise silent.
        console.warn(
          `realtime: the server answered ${payload.code}: ${payload.message}` +
            (payload.code === "forbidden" ? ' (streams beyond the defaults need REALTIME["AUTHORIZE"] to allow them)' : ""),
        );
        if ((payload.code === "forbidden" || payload.code === "too_many_streams") && payload.stream) {
          // The server will not serve it: stop asking on every reconnect.
          this._subscriptions.delete(payload.stream);
          this._last.delete(payload.stream);
        }
        this._emit("error", { kind: "server", code: payload.code, message: payload.message, payload });
        break;
      default:
        break;
    }
  }

  _setPosition(stream, seq, epoch) {
    if (typeof stream !== "string") return;
    if (Number.isInteger(seq) || seq === null) this._last.set(stream, seq);
    if (typeof epoch === "string" && epoch) this._epochs.set(stream, epoch);
    this._healing.delete(stream);
  }

  _onWelcome(payload, ts) {
    this._clearConnectTimer();
    this._welcomed = true;
    this._welcomedAt = serverTime(ts);
    for (const [name, seq] of Object.entries(payload.streams || {})) {
      this._setPosition(name, seq, (payload.epochs || {})[name]);
    }
    this._heartbeatMs = this.options.heartbeatInterval || payload.heartbeat || 25000;
    this._pingOutstanding = false;
    this._missedPongs = 0;
    this._startHeartbeat();
    this._startUptimeTimer();
    this._setState(STATES.OPEN);
    this._emit("open", payload);
    for (const stream of this._subscriptions) {
      if (!this._urlStreams.has(stream)) this._sendSubscribe(stream);
    }
  }

  _onPong(payload) {
    this._pingOutstanding = false;
    this._missedPongs = 0;
    // A stream created after we joined had no epoch then; learn it (only then:
    // a later epoch must arrive as a resync, never be adopted silently).
    for (const [name, epoch] of Object.entries(payload.epochs || {})) {
      if (this._last.has(name) && !this._epochs.has(name) && typeof epoch === "string" && epoch) {
        this._epochs.set(name, epoch);
      }
    }
    // The server delivers what it knows is missing before it answers, so a
    // head beyond our last seq now means a message really went astray.
    const behind = {};
    for (const [name, head] of Object.entries(payload.streams || {})) {
      const last = this._last.get(name);
      if (Number.isInteger(head) && Number.isInteger(last) && head > last) behind[name] = last;
    }
    if (Object.keys(behind).length) this._resume(behind);
  }

  _resume(streams) {
    const epochs = {};
    for (const name of Object.keys(streams)) {
      if (this._epochs.has(name)) epochs[name] = this._epochs.get(name);
    }
    this._send({ type: "resume", streams, epochs });
  }

  _onMessage(message) {
    const { stream, seq } = message;
    if (seq !== null) {
      const last = this._last.get(stream);
      if (Number.isInteger(last)) {
        if (seq <= last) return;
        if (seq > last + 1) {
          // Never expected from the server; dropping it and asking for the
          // range again keeps order without losing anything. A tab that
          // shares a connection sees this whenever it is behind the others.
          if (this._link === null) {
            console.warn(`realtime: gap in ${stream} (had ${last}, got ${seq}); asking for the missing messages`);
          }
          if (!this._healing.has(stream)) {
            this._healing.add(stream);
            this._resume({ [stream]: last });
          }
          return;
        }
      }
      this._last.set(stream, seq);
      this._healing.delete(stream);
    }
    this._emit("message", message);
    if (!LIFECYCLE_EVENTS.has(message.type)) this._emit(message.type, message);
    this._call(message.type, this._streamHandlers.get(stream), message);
  }

  _send(frame) {
    if (this._link !== null) {
      this._link.post({ op: "send", frame });
      return true;
    }
    const socket = this._socket;
    if (socket === null || socket.readyState !== WebSocket.OPEN) return false;
    try {
      socket.send(JSON.stringify(frame));
      return true;
    } catch (error) {
      console.error("realtime: send failed", error);
      return false;
    }
  }
}

// The inbox -------------------------------------------------------------------

/** The message type that tells a user's clients their inbox changed (Python: `realtime.inbox.CHANGED`). */
export const INBOX_CHANGED = "inbox.changed";

// Attempts at a recount that inbox traffic keeps spoiling; then the messages alone keep the count.
const RECOUNT_ATTEMPTS = 3;
// With a shared connection, how long a tab waits for the counts another tab
// fetches after a reconnect before it fetches them itself, in ms.
const SHARED_COUNTS_WAIT = 5000;
// Items remembered (per inbox) to add back onto counts that are older than they are.
const RECENT_ITEMS = 500;

/** A failed inbox request: `status` 0 when the server was not reached, `code` the server's error code. */
export class InboxRequestError extends Error {
  /**
   * @param {string} message
   * @param {{status: number, code: string, cause?: *}} detail
   */
  constructor(message, { status, code, cause }) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = "InboxRequestError";
    this.status = status;
    this.code = code;
  }
}

/**
 * The signed-in user's inbox, as `client.inbox`: the unread count kept live,
 * and the HTTP endpoints to page through items, mark them read and archive
 * them.
 *
 * The count is per stream of the inbox. An arriving message with
 * `inbox: true` adds one; an `inbox.changed` message on the user's stream
 * (any tab or device acted) sets it; after every (re)connect, and a resync of
 * one of its streams, it is fetched again, so a device that was away comes
 * back right. Server times order them, whatever order they arrive in (streams
 * are replayed one after the other): a count is not replaced by an older
 * one, and a count is fetched again if inbox messages arrived while it was
 * on its way. Every count the server gives names the newest seq of each
 * stream it includes (`heads`), so an item that arrives after a count that
 * already includes it is not added again.
 *
 * Events (`on(type, handler)`): `count` ({total, streams, oldTotal}), `item`
 * (the message of a new inbox item), `change` (the `inbox.changed` message),
 * `error` ({kind: "request" | "handler", ...}). Off (`enabled` false, no
 * requests) without `url`: for anonymous visitors.
 */
export class Inbox extends Emitter {
  /**
   * Created by the client; use `client.inbox`.
   *
   * @param {RealtimeClient} client
   * @param {InboxOptions} [options]
   */
  constructor(client, options = {}) {
    super();
    this._client = client;
    this._url = options.url ? new URL(options.url, documentBase()) : null;
    this._csrfToken = options.csrfToken || "";
    this._csrfCookie = options.csrfCookie || "csrftoken";
    this._csrfHeader = options.csrfHeader || "X-CSRFToken";
    /** @type {Map<string, number> | null} Unread per stream; null until known. */
    this._counts = null;
    // Server time (ms) up to which the counts include every item; items from
    // before it are not added again, counts from before it are not taken.
    this._countedAt = null;
    /** @type {Map<string, number>} Per stream, the newest seq the counts include (the server's `heads`). */
    this._heads = new Map();
    /** @type {Array<{stream: string, seq: number, at: number | null}>} Items seen, oldest first. */
    this._recent = [];
    this._seen = new Set();
    // Bumped by every item and change: a count fetched while it moved may be older than they are.
    this._activity = 0;
    // The newest server time (ms) of a message this client received.
    this._newest = null;
    this._userStream = null;
    this._recounting = null;
    // The answer the counts were last taken from (to hand to other tabs), and
    // the seq of the newest inbox.changed seen (a count from before it is stale).
    this._taken = null;
    this._changedSeq = null;
    this._sharedTimer = null;
    if (!this._url) return;
    const unread = options.unread && countsFrom(options.unread);
    if (unread) this._setCounts(unread, serverTime(options.unread.ts), headsFrom(options.unread));
    client.on("open", (welcome) => this._onOpen(welcome));
    client.on("message", (message) => this._onMessage(message));
    client.on("resync", ({ stream }) => this._onResync(stream));
  }

  /** @returns {boolean} Whether the inbox is on (a signed-in user, the endpoints known). */
  get enabled() {
    return this._url !== null;
  }

  /** @returns {number | null} Unread items in the whole inbox; null until known. */
  get count() {
    return this._counts === null ? null : sum(this._counts);
  }

  /** @returns {Counts | null} A copy of the unread counts; null until known. */
  get counts() {
    return this._counts === null ? null : { total: sum(this._counts), streams: Object.fromEntries(this._counts) };
  }

  /**
   * Unread items of one stream of the inbox.
   *
   * @param {string} stream
   * @returns {number | null} 0 for a stream that is not part of the inbox; null until known.
   */
  countFor(stream) {
    return this._counts === null ? null : this._counts.get(stream) || 0;
  }

  /**
   * A page of the inbox, newest first.
   *
   * @param {{before?: string | null, limit?: number}} [options]  `before`: the previous page's `next`.
   * @returns {Promise<InboxPage>}
   */
  async items({ before = null, limit } = {}) {
    const query = new URLSearchParams();
    if (before) query.set("before", before);
    if (limit !== undefined) query.set("limit", String(limit));
    const mark = this._mark();
    const data = await this._request("GET", "", undefined, query);
    if (!Array.isArray(data.items)) throw new InboxRequestError("realtime: the inbox page has no items", { status: 200, code: "invalid" });
    this._tookCounts(data.unread, mark);
    return data;
  }

  /**
   * Mark items read.
   *
   * @param {Array<ItemRef | [string, number]>} items
   * @returns {Promise<Counts>} The counts after the change.
   */
  async markRead(items) {
    return this._change("read", { items: refsOf(items) });
  }

  /**
   * Archive items: they are read and no longer listed.
   *
   * @param {Array<ItemRef | [string, number]>} items
   * @returns {Promise<Counts>} The counts after the change.
   */
  async archive(items) {
    return this._change("archive", { items: refsOf(items) });
  }

  /**
   * Mark every item read, or every item of one stream.
   *
   * @param {string} [stream]
   * @returns {Promise<Counts>} The counts after the change.
   */
  async markAllRead(stream) {
    return this._change("read-all", stream === undefined ? {} : { stream });
  }

  /**
   * Fetch the counts again (the inbox does after every connect).
   *
   * @returns {Promise<Counts | null>} The counts, once taken at a moment no inbox message arrived.
   */
  refresh() {
    if (this._recounting === null) {
      this._recounting = this._recount().finally(() => {
        this._recounting = null;
      });
    }
    return this._recounting;
  }

  // Counts -------------------------------------------------------------------

  /**
   * Replace the counts and emit `count` when they changed. The one place they change.
   *
   * @param {Map<string, number>} counts
   * @param {number | null} countedAt  Server time (ms) the counts include every item up to.
   * @param {Map<string, number> | null} [heads]  The server's newest seq per stream the counts include.
   */
  _setCounts(counts, countedAt, heads = null) {
    if (countedAt !== null && (this._countedAt === null || countedAt > this._countedAt)) this._countedAt = countedAt;
    if (heads !== null) this._heads = heads;
    const old = this._counts;
    this._counts = counts;
    if (old !== null && old.size === counts.size && [...counts].every(([name, n]) => old.get(name) === n)) return;
    this._emit("count", { total: sum(counts), streams: Object.fromEntries(counts), oldTotal: old === null ? null : sum(old) });
  }

  // Taken as a request leaves: how busy the inbox was, and a server time the
  // server will count after (the newest it told the client: the welcome, or
  // the newest message).
  _mark() {
    const welcomedAt = this._client._welcomedAt;
    const seenAt = welcomedAt !== null && (this._newest === null || welcomedAt > this._newest) ? welcomedAt : this._newest;
    return { activity: this._activity, seenAt };
  }

  // Counts from an HTTP answer: taken only when no inbox message arrived while
  // it was on its way, since the answer may be older or newer than that message.
  _tookCounts(unread, mark) {
    const counts = countsFrom(unread);
    if (counts === null || mark.activity !== this._activity) return false;
    this._setCounts(counts, mark.seenAt, headsFrom(unread));
    this._taken = unread;
    return true;
  }

  async _recount() {
    for (let attempt = 1; ; attempt += 1) {
      const mark = this._mark();
      const data = await this._request("GET", "count");
      if (this._tookCounts(data, mark) || attempt >= RECOUNT_ATTEMPTS) return this.counts;
    }
  }

  _recountInBackground() {
    this.refresh().catch((error) => this._failed(error));
  }

  _onOpen(welcome) {
    this._userStream = welcome && welcome.user !== null && welcome.user !== undefined ? `user:${welcome.user}` : null;
    const recounts = this._client._recounts;
    if (recounts === undefined) {
      this._recountInBackground();
    } else if (recounts === true) {
      // One tab of the shared connection fetches the counts for all of them:
      // a reconnect costs one request per browser, not one per tab.
      this._taken = null;
      this.refresh().then(
        () => this._taken !== null && this._client._shareCounts(this._taken),
        (error) => this._failed(error),
      );
    } else if (recounts === false) {
      this._clearSharedTimer();
      this._sharedTimer = setTimeout(() => {
        this._sharedTimer = null;
        this._recountInBackground(); // the tab that was to fetch them did not
      }, SHARED_COUNTS_WAIT);
    } else if (this._counts === null) {
      this._recountInBackground(); // joined an open connection without rendered counts
    }
  }

  // Counts another tab of the shared connection fetched: its counts, plus the
  // items this tab has seen above their heads. Dropped if this tab has seen an
  // inbox.changed newer than them.
  _fromOtherTab(unread) {
    this._clearSharedTimer();
    if (!this.enabled) return;
    const counts = countsFrom(unread);
    const heads = headsFrom(unread);
    if (counts === null || heads === null) return;
    const userHead = this._userStream === null ? undefined : heads.get(this._userStream);
    if (this._changedSeq !== null && (userHead === undefined || this._changedSeq > userHead)) return;
    this._setCounts(this._plusSeenAfter(counts, heads, null), null, heads);
  }

  /**
   * `counts` plus the items seen that they do not include: above their
   * `heads` (the newest seq per stream they include) or, for a stream
   * without a head, published after server time `at`.
   */
  _plusSeenAfter(counts, heads, at) {
    for (const item of this._recent) {
      const head = heads ? heads.get(item.stream) : undefined;
      const after = head !== undefined ? item.seq > head : item.at !== null && at !== null && item.at > at;
      if (after && counts.has(item.stream)) counts.set(item.stream, counts.get(item.stream) + 1);
    }
    return counts;
  }

  _clearSharedTimer() {
    if (this._sharedTimer !== null) clearTimeout(this._sharedTimer);
    this._sharedTimer = null;
  }

  _onResync(stream) {
    // The stream's seqs may start again from 1 (a reset): forget the items seen on it.
    this._recent = this._recent.filter((item) => item.stream !== stream);
    this._seen = new Set(this._recent.map((item) => `${item.stream}\n${item.seq}`));
    this._heads.delete(stream);
    if (this._counts === null || this._counts.has(stream)) this._recountInBackground();
  }

  _onMessage(message) {
    const at = serverTime(message.ts);
    if (at !== null && (this._newest === null || at > this._newest)) this._newest = at;
    if (message.type === INBOX_CHANGED && message.stream === this._userStream) {
      this._onChanged(message);
    } else if (message.inbox === true && Number.isInteger(message.seq)) {
      this._onItem(message);
    }
  }

  _onItem(message) {
    const { stream, seq } = message;
    const key = `${stream}\n${seq}`;
    if (this._seen.has(key) || (this._counts !== null && !this._counts.has(stream))) return;
    const at = serverTime(message.ts);
    this._seen.add(key);
    this._recent.push({ stream, seq, at });
    if (this._recent.length > RECENT_ITEMS) {
      const { stream: oldStream, seq: oldSeq } = this._recent.shift();
      this._seen.delete(`${oldStream}\n${oldSeq}`);
    }
    this._activity += 1;
    // An item the counts include already: its seq is at or below their head
    // (an answer that overtook the item's message), or, for counts without
    // heads, it is older than they are (e.g. replayed after a recount).
    const head = this._heads.get(stream);
    const counted = head !== undefined ? seq <= head : at !== null && this._countedAt !== null && at <= this._countedAt;
    if (this._counts !== null && !counted) {
      const counts = new Map(this._counts);
      counts.set(stream, counts.get(stream) + 1);
      this._setCounts(counts, null);
    }
    this._emit("item", message);
  }

  _onChanged(message) {
    this._activity += 1;
    if (Number.isInteger(message.seq) && (this._changedSeq === null || message.seq > this._changedSeq)) {
      this._changedSeq = message.seq;
    }
    const counts = countsFrom(message.payload.unread);
    const heads = counts && headsFrom(message.payload.unread);
    const at = serverTime(message.ts);
    if (counts === null) {
      console.warn("realtime: ignoring an inbox.changed message without unread counts", message);
    } else if (at === null || this._countedAt === null || at >= this._countedAt) {
      // Newer than the counts held: take its counts plus the items that came after it.
      this._setCounts(this._plusSeenAfter(counts, heads, at), at, heads);
    }
    this._emit("change", message);
  }

  // Requests -----------------------------------------------------------------

  async _change(endpoint, body) {
    const mark = this._mark();
    const data = await this._request("POST", endpoint, body);
    // Usually this change's inbox.changed arrived first, and already set the counts.
    this._tookCounts(data, mark);
    return countsFrom(data) ? { total: data.total, streams: { ...data.streams } } : this.counts;
  }

  /**
   * One JSON request to the inbox endpoint `endpoint` (relative to `url`).
   *
   * @returns {Promise<object>} The answer.
   */
  async _request(method, endpoint, body, query) {
    if (!this._url) {
      throw new InboxRequestError("realtime: the inbox is off (anonymous, or no inbox url given)", { status: 0, code: "disabled" });
    }
    const url = new URL(endpoint, this._url);
    if (query) url.search = query.toString();
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") {
      init.headers["Content-Type"] = "application/json";
      init.headers[this._csrfHeader] = this._csrf();
      init.body = JSON.stringify(body);
      // Finishes even when the page is left right after (a notification's link was followed).
      init.keepalive = true;
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      throw new InboxRequestError(`realtime: the inbox request failed: ${error.message}`, { status: 0, code: "network", cause: error });
    }
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      // Not JSON: a proxy's error page, Django's CSRF failure page.
    }
    const valid = data !== null && typeof data === "object" && !Array.isArray(data);
    if (!response.ok || !valid) {
      const code = valid && typeof data.error === "string" ? data.error : `http_${response.status}`;
      const text = valid && typeof data.message === "string" ? data.message : `HTTP ${response.status}`;
      throw new InboxRequestError(`realtime: ${method} ${url.pathname}: ${text}`, { status: response.status, code });
    }
    return data;
  }

  _csrf() {
    if (typeof document !== "undefined" && document.cookie) {
      for (const pair of document.cookie.split(";")) {
        const [name, ...value] = pair.trim().split("=");
        if (name === this._csrfCookie) return decodeURIComponent(value.join("="));
      }
    }
    return this._csrfToken;
  }

  _failed(error) {
    console.warn("realtime: could not fetch the inbox count", error);
    this._emit("error", { kind: "request", error });
  }
}

/** `{total, streams}` as a Map of stream to count, or null when it is not that shape. */
function countsFrom(value) {
  if (value === null || typeof value !== "object" || value.streams === null || typeof value.streams !== "object") {
    return null;
  }
  const counts = new Map();
  for (const [name, n] of Object.entries(value.streams)) {
    if (!Number.isInteger(n) || n < 0) return null;
    counts.set(name, n);
  }
  return counts;
}

/** The `heads` of counts (newest seq per stream they include) as a Map, or null without them. */
function headsFrom(value) {
  if (value === null || typeof value !== "object" || value.heads === null || typeof value.heads !== "object") return null;
  const heads = new Map();
  for (const [name, seq] of Object.entries(value.heads)) {
    if (Number.isInteger(seq) && seq >= 0) heads.set(name, seq);
  }
  return heads;
}

function sum(counts) {
  let total = 0;
  for (const n of counts.values()) total += n;
  return total;
}

/** An envelope's `ts` in ms since the epoch, or null. */
function serverTime(ts) {
  const at = typeof ts === "string" ? Date.parse(ts) : NaN;
  return Number.isNaN(at) ? null : at;
}

/** `[{stream, seq}]` from items, item messages or `[stream, seq]` pairs; a TypeError for anything else. */
function refsOf(items) {
  if (!Array.isArray(items)) throw new TypeError("realtime: give the inbox items as an array");
  return items.map((item) => {
    const [stream, seq] = Array.isArray(item) ? item : [item?.stream, item?.seq];
    if (typeof stream !== "string" || !Number.isInteger(seq) || seq < 1) {
      throw new TypeError(`realtime: not an inbox item: ${JSON.stringify(item)}`);
    }
    return { stream, seq };
  });
}

const utf8 = typeof TextDecoder !== "undefined" ? new TextDecoder("utf-8", { fatal: true }) : null;

/** @returns {string | null} The UTF-8 text of an ArrayBuffer (view), or null if it is not UTF-8. */
function decodeBinary(data) {
  try {
    return utf8.decode(data);
  } catch (error) {
    return null;
  }
}

export default RealtimeClient;
