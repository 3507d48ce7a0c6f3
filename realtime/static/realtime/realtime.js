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
 * The wire protocol is described in docs/protocol.md, this client in
 * docs/client.md. No dependencies, no build step: import it as an ES module.
 *
 * @module realtime
 */

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

function resolveUrl(url) {
  const base = typeof document !== "undefined" ? document.baseURI : globalThis.location?.href;
  const resolved = new URL(url, base);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  else if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved;
}

/**
 * A WebSocket connection to the realtime server that reconnects, resumes
 * where it left off and delivers each message once, in order.
 */
export class RealtimeClient {
  /**
   * Create a client; nothing happens until {@link RealtimeClient#connect}.
   *
   * @param {Options} [options]
   */
  constructor(options = {}) {
    /** @type {Required<Omit<Options, "positions" | "heartbeatInterval">> & {heartbeatInterval: number | null}} */
    this.options = { ...DEFAULTS, shouldReconnect: defaultShouldReconnect };
    for (const [key, value] of Object.entries(options)) {
      if (key !== "positions" && value !== undefined && value !== null) this.options[key] = value;
    }
    /** @type {State} */
    this._state = STATES.IDLE;
    /** @type {Map<string, Set<Function>>} */
    this._handlers = new Map();
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

    const positions = options.positions || {};
    for (const [name, seq] of Object.entries(positions.streams || {})) this._last.set(name, seq);
    for (const [name, epoch] of Object.entries(positions.epochs || {})) if (epoch) this._epochs.set(name, epoch);
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

  /** @returns {Positions} A copy of the last seq and epoch the client holds per stream. */
  get positions() {
    return { streams: Object.fromEntries(this._last), epochs: Object.fromEntries(this._epochs) };
  }

  // Events -------------------------------------------------------------------

  /**
   * Call `handler` for an event of the client (`state`, `open`, `message`,
   * `invalid`, `resync`, `error`, `close`) or for every message of a type.
   * Handlers get one argument: the event's detail or the message envelope.
   *
   * @param {string} type
   * @param {Function} handler
   * @returns {() => void} A function that removes the handler.
   */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  /**
   * Remove a handler added with {@link RealtimeClient#on}.
   *
   * @param {string} type
   * @param {Function} handler
   */
  off(type, handler) {
    this._handlers.get(type)?.delete(handler);
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

  _emit(type, detail) {
    this._call(type, this._handlers.get(type), detail);
  }

  _call(type, handlers, detail) {
    if (handlers === undefined) return;
    for (const handler of [...handlers]) {
      try {
        handler(detail);
      } catch (error) {
        // One broken handler must not silence the others or later messages.
        console.error(`realtime: a handler for "${type}" threw`, error);
        if (type !== "error") this._emit("error", { kind: "handler", event: type, error });
      }
    }
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
    if (this._subscriptions.has(stream)) return;
    this._subscriptions.add(stream);
    if (this._state === STATES.OPEN) this._sendSubscribe(stream);
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

  _connectUrl() {
    const url = resolveUrl(this.options.url);
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
  }

  _onVisibility() {
    if (document.visibilityState !== "visible") return;
    // Timers of hidden pages are throttled: check the link now, not a heartbeat later.
    if (this._state === STATES.OPEN) this.ping();
    else this._retrySoon();
  }

  _onOnline() {
    this._retrySoon();
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
    try {
      if (PROTOCOL_TYPES.has(frame.type)) this._onProtocolFrame(frame);
      else this._onMessage(frame);
    } catch (error) {
      console.error("realtime: failed to handle a frame", raw, error);
      this._emit("error", { kind: "client", error, data: raw });
    }
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
        this._onWelcome(payload);
        break;
      case "pong":
        this._onPong(payload);
        break;
      case "subscribed":
        if (typeof payload.stream === "string" && this._subscriptions.has(payload.stream)) {
          this._setPosition(payload.stream, payload.seq, payload.epoch);
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

  _onWelcome(payload) {
    this._clearConnectTimer();
    this._welcomed = true;
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
          // range again keeps order without losing anything.
          console.warn(`realtime: gap in ${stream} (had ${last}, got ${seq}); asking for the missing messages`);
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
