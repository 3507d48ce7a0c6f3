// Load generator for `make bench`: N WebSocket clients that check what they get.
//
// Usage: node loadgen.js '<json config>'
//   {"urls": [...], "clients": 1000, "origin": "http://127.0.0.1:8001",
//    "mode": "realtime" | "plain", "inbox": false, "idleMs": 3000, "drainMs": 60000,
//    "maxMessages": 500}
// Protocol with the orchestrator: prints "READY" once every client is connected
// (and, in realtime mode, has its welcome); then reads "DONE <count>" on stdin
// when the publisher has sent messages m = 0..count-1; prints one JSON line of
// results when every client has all of its own, or nothing arrived for idleMs.
// A setup that cannot work (a stream refused) prints "FAIL <why>" and exits.
//
// Every message carries {"n": index, "t": publish time in ms since the epoch};
// per connection a bitmap of n counts unique, duplicate and out-of-order ones.
// Without "inbox" every client gets every message (n = m). With it (realtime
// only) client i joins its own stream "bench:u<i>" through ?resume= in the
// connect URL, and message m went to client m % clients as its n = m div clients;
// a message of any other stream is counted as misrouted.
"use strict";
const WebSocket = require("ws");
const readline = require("readline");

const cfg = JSON.parse(process.argv[2]);
const MAX_N = cfg.maxMessages || 20000;
const conns = [];
let latencies = new Float64Array(1 << 20);
let nLat = 0;
let lastArrival = Date.now();
let expected = null; // messages published, from "DONE <count>"

// How many of the published messages client i should receive.
function expectedOf(i) {
  if (!cfg.inbox) return expected;
  return Math.floor(expected / cfg.clients) + (i < expected % cfg.clients ? 1 : 0);
}

function fail(why) {
  process.stdout.write(`FAIL ${why}\n`);
  process.exit(1);
}

function record(c, data) {
  let msg;
  try {
    msg = JSON.parse(data);
  } catch (e) {
    c.invalid++;
    return;
  }
  if (cfg.mode === "realtime" && msg.type === "welcome") {
    if (c.stream && !(msg.payload && msg.payload.streams && c.stream in msg.payload.streams)) {
      fail(`client ${c.index} was not given stream ${c.stream}: ${data}`);
    }
    c.welcomed = true;
    maybeReady();
    return;
  }
  if (c.stream && msg.type === "error") fail(`client ${c.index} got ${data}`);
  const p = msg.payload;
  if (!p || typeof p.n !== "number") return;
  if (c.stream && msg.stream !== c.stream) {
    c.misrouted++;
    return;
  }
  lastArrival = Date.now();
  const n = p.n;
  if (n < 0 || n >= MAX_N) return;
  if (c.seen[n]) {
    c.dup++;
  } else {
    c.seen[n] = 1;
    c.unique++;
  }
  if (n < c.maxN) c.reordered++;
  else c.maxN = n;
  if (nLat === latencies.length) {
    const bigger = new Float64Array(latencies.length * 2);
    bigger.set(latencies);
    latencies = bigger;
  }
  latencies[nLat++] = Date.now() - p.t;
  if (expected !== null) maybeFinish();
}

let readyPrinted = false;
function maybeReady() {
  if (readyPrinted) return;
  if (conns.length < cfg.clients) return;
  for (const c of conns) {
    if (!c.open || (cfg.mode === "realtime" && !c.welcomed)) return;
  }
  readyPrinted = true;
  process.stdout.write("READY\n");
}

function open(i) {
  return new Promise((resolve) => {
    const c = conns[i] || {
      index: i, stream: cfg.inbox ? `bench:u${i}` : null, seen: new Uint8Array(MAX_N),
      unique: 0, dup: 0, reordered: 0, maxN: -1, invalid: 0, misrouted: 0, closed: 0,
    };
    conns[i] = c;
    let url = cfg.urls[i % cfg.urls.length];
    if (c.stream) {
      // Joined before the welcome, from the stream's head on (null: only new messages).
      url += "?resume=" + encodeURIComponent(JSON.stringify({ streams: { [c.stream]: null } }));
    }
    const attempt = (left) => {
      const ws = new WebSocket(url, { origin: cfg.origin, perMessageDeflate: false });
      ws.on("open", () => {
        c.open = true;
        c.ws = ws;
        resolve();
        maybeReady();
      });
      ws.on("message", (data, isBinary) => record(c, isBinary ? "" : data.toString()));
      ws.on("error", () => {
        if (!c.open && left > 0) setTimeout(() => attempt(left - 1), 100);
        else if (!c.open) resolve();
      });
      ws.on("close", () => {
        if (c.open) c.closed++;
        c.open = false;
      });
    };
    attempt(20);
  });
}

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

let finished = false;
function maybeFinish(force) {
  if (finished) return;
  let complete = true;
  for (const c of conns) {
    if (c.unique < expectedOf(c.index)) {
      complete = false;
      break;
    }
  }
  if (!complete && !force) return;
  finished = true;
  const lat = latencies.slice(0, nLat).sort();
  let want = 0, unique = 0, dup = 0, reordered = 0, invalid = 0, misrouted = 0, closed = 0;
  for (const c of conns) {
    want += expectedOf(c.index);
    misrouted += c.misrouted;
    unique += c.unique;
    dup += c.dup;
    reordered += c.reordered;
    invalid += c.invalid;
    closed += c.closed;
  }
  const out = {
    clients: conns.length,
    expected: want,
    delivered: unique,
    lost: want - unique,
    duplicated: dup,
    reordered,
    invalid,
    misrouted,
    closed,
    p50: percentile(lat, 0.5),
    p99: percentile(lat, 0.99),
    max: lat.length ? lat[lat.length - 1] : null,
    lastArrival,
  };
  process.stdout.write(JSON.stringify(out) + "\n");
  for (const c of conns) if (c.ws) c.ws.terminate();
  setTimeout(() => process.exit(0), 50);
}

async function main() {
  const batch = cfg.connectBatch || 100;
  for (let i = 0; i < cfg.clients; i += batch) {
    const wave = [];
    for (let j = i; j < Math.min(cfg.clients, i + batch); j++) wave.push(open(j));
    await Promise.all(wave);
  }
  maybeReady();
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    const m = /^DONE (\d+)/.exec(line);
    if (!m) return;
    expected = parseInt(m[1], 10);
    lastArrival = Math.max(lastArrival, Date.now());
    const started = Date.now();
    maybeFinish();
    const timer = setInterval(() => {
      const now = Date.now();
      if (now - lastArrival > (cfg.idleMs || 3000) || now - started > (cfg.drainMs || 60000)) {
        clearInterval(timer);
        maybeFinish(true);
      }
    }, 100);
  });
}

main();
