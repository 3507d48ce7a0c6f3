/**
 * The notification bell of `{% realtime_inbox %}`: a button with the unread
 * count that opens a panel (a non-modal dialog) listing the inbox's items.
 *
 * It attaches to the page's `{% realtime_client %}` once the page's scripts
 * have run, and shows `client.inbox`: the badge follows the inbox's `count`
 * event, the open list its `item` and `change` events, whichever tab or
 * device acted. The words come from the tag's template, already translated;
 * numbers and dates are formatted for the page's `lang`.
 *
 * Keyboard: Enter or Space on the button opens the panel and moves focus
 * into it; Tab walks its buttons and links; ArrowUp and ArrowDown (Home,
 * End) move between items; Escape closes it and returns focus to the button.
 *
 * @module realtime/inbox
 */

import { RealtimeClient } from "./realtime.js";

const LEVELS = ["info", "success", "warning", "error"];
// How often the open panel's relative times are brought up to date, in ms.
const CLOCK_INTERVAL = 30000;
// [unit, how many of it make the next one]: "now", then seconds, minutes, ... years.
const UNITS = [["second", 60], ["minute", 60], ["hour", 24], ["day", 7], ["week", 4.345], ["month", 12], ["year", Infinity]];

/** A bell of `{% realtime_inbox %}`, bound to a client's inbox. */
export class InboxBell {
  /**
   * @param {HTMLElement} root  The tag's `[data-realtime-inbox]` element.
   * @param {RealtimeClient} client
   */
  constructor(root, client) {
    this.root = root;
    this.inbox = client.inbox;
    this.button = root.querySelector("[data-inbox-button]");
    this.badge = root.querySelector("[data-inbox-badge]");
    this.panel = root.querySelector("[data-inbox-panel]");
    this.list = root.querySelector("[data-inbox-list]");
    this.status = root.querySelector("[data-inbox-status]");
    this.empty = root.querySelector("[data-inbox-empty]");
    this.template = root.querySelector("template[data-inbox-item]");
    this.readAll = root.querySelector('[data-action="read-all"]');
    this.more = root.querySelector('[data-action="more"]');
    this.retry = root.querySelector('[data-action="retry"]');
    this.words = root.dataset;
    this.pageSize = Number(root.dataset.pageSize) || 20;
    const language = document.documentElement.lang || undefined;
    this.numbers = safely(() => new Intl.NumberFormat(language), () => new Intl.NumberFormat());
    this.relative = safely(
      () => new Intl.RelativeTimeFormat(language, { numeric: "auto", style: "short" }),
      () => new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" }),
    );
    this.absolute = safely(
      () => new Intl.DateTimeFormat(language, { dateStyle: "medium", timeStyle: "short" }),
      () => new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" }),
    );
    this._next = null;
    // Bumped by every (re)load of the list; answers to an older one are dropped.
    this._generation = 0;
    // Inbox events that arrive while the list loads, applied once it is shown; null when not loading.
    this._queued = null;
    this._ids = 0;
    this._clockTimer = null;

    this.button.addEventListener("click", () => (this.isOpen ? this.close(true) : this.open()));
    root.addEventListener("keydown", (event) => this._onKeydown(event));
    root.addEventListener("focusout", (event) => {
      // Tabbing out of the panel closes it; focus stays where it went.
      if (this.isOpen && event.relatedTarget && !root.contains(event.relatedTarget)) this.close(false);
    });
    document.addEventListener("pointerdown", (event) => {
      if (this.isOpen && !root.contains(event.target)) this.close(false);
    });
    this.panel.addEventListener("click", (event) => this._onClick(event));

    this.inbox.on("count", ({ total }) => this._showCount(total));
    this.inbox.on("item", (message) => this._whenShown(() => this._prepend(message)));
    this.inbox.on("change", (message) => this._whenShown(() => this._applyChange(message)));
    if (this.inbox.count !== null) this._showCount(this.inbox.count);
  }

  /** @returns {boolean} Whether the panel is open. */
  get isOpen() {
    return !this.panel.hidden;
  }

  /** Open the panel, move focus into it and load the newest items. */
  open() {
    if (this.isOpen) return;
    this.panel.hidden = false;
    this.button.setAttribute("aria-expanded", "true");
    this.panel.focus();
    this._startClock();
    this._load();
  }

  /**
   * Close the panel.
   *
   * @param {boolean} [returnFocus=true]  Move focus back to the button (Escape, the close button).
   */
  close(returnFocus = true) {
    if (!this.isOpen) return;
    this.panel.hidden = true;
    this.button.setAttribute("aria-expanded", "false");
    this._clearClock();
    this._generation += 1;
    this._queued = null;
    if (returnFocus) this.button.focus();
  }

  // The badge -------------------------------------------------------------

  _showCount(total) {
    const shown = total > 99 ? `${this.numbers.format(99)}+` : this.numbers.format(total);
    this.badge.textContent = shown;
    this.badge.hidden = total === 0;
    this.button.setAttribute(
      "aria-label",
      total === 0 ? this.words.label : this.words.labelUnread.replace("%(count)s", this.numbers.format(total)),
    );
    this.readAll.setAttribute("aria-disabled", String(total === 0));
  }

  // The list --------------------------------------------------------------

  async _load() {
    const generation = ++this._generation;
    this._queued = [];
    this.list.setAttribute("aria-busy", "true");
    this._say(this.words.loading);
    this.retry.hidden = true;
    let page;
    try {
      page = await this.inbox.items({ limit: this.pageSize });
    } catch (error) {
      if (generation !== this._generation) return;
      console.warn("realtime: could not load the inbox", error);
      this.list.removeAttribute("aria-busy");
      this._queued = null;
      this._say(this.words.errorLoad);
      this.retry.hidden = false;
      return;
    }
    if (generation !== this._generation) return;
    this.list.replaceChildren(...page.items.map((item) => this._render(item)));
    this.list.removeAttribute("aria-busy");
    this._say("");
    this._setNext(page.next);
    const queued = this._queued;
    this._queued = null;
    for (const apply of queued) apply();
    this._showEmpty();
  }

  async _loadMore() {
    const generation = this._generation;
    this.more.setAttribute("aria-disabled", "true");
    let page;
    try {
      page = await this.inbox.items({ before: this._next, limit: this.pageSize });
    } catch (error) {
      console.warn("realtime: could not load more of the inbox", error);
      if (generation === this._generation) this._say(this.words.errorLoad);
      return;
    } finally {
      this.more.removeAttribute("aria-disabled");
    }
    if (generation !== this._generation) return;
    const added = page.items.filter((item) => !this._node(item.stream, item.seq)).map((item) => this._render(item));
    this.list.append(...added);
    this._setNext(page.next);
    this._say("");
    // The button may be gone (last page): continue from the first new item.
    if (added.length) added[0].focus();
    else if (this.more.hidden) this.panel.focus();
  }

  _setNext(next) {
    this._next = next;
    if (next) {
      this.more.hidden = false;
    } else {
      if (document.activeElement === this.more) this.panel.focus();
      this.more.hidden = true;
    }
  }

  // Inbox events change what is shown only once the list is: queued while it loads, ignored while closed.
  _whenShown(apply) {
    if (!this.isOpen) return;
    if (this._queued !== null) this._queued.push(apply);
    else apply();
  }

  _prepend(message) {
    if (this._node(message.stream, message.seq)) return;
    this.list.prepend(this._render({ ...message, read: false }));
    this._showEmpty();
  }

  _applyChange(message) {
    const { read, archived, all } = message.payload;
    for (const [stream, seq] of pairs(read)) {
      const node = this._node(stream, seq);
      if (node) this._setRead(node, true);
    }
    for (const [stream, seq] of pairs(archived)) {
      const node = this._node(stream, seq);
      if (node) this._remove(node);
    }
    if (typeof all === "string") {
      // Items published after the change are not part of it.
      const changedAt = Date.parse(message.ts);
      for (const node of this.list.children) {
        const before = Number.isNaN(changedAt) || !(Date.parse(node.dataset.ts) > changedAt);
        if ((all === "*" || node.dataset.stream === all) && before) this._setRead(node, true);
      }
    }
    this._showEmpty();
  }

  _showEmpty() {
    this.empty.hidden = this.list.children.length > 0 || this.list.hasAttribute("aria-busy");
  }

  /** The `<li>` of an item, built from the tag's `<template data-inbox-item>`. */
  _render(item) {
    const node = this.template.content.firstElementChild.cloneNode(true);
    const notice = describe(item, this.words.untitled);
    const id = `${this.root.id}-item-${++this._ids}`;
    node.dataset.stream = item.stream;
    node.dataset.seq = String(item.seq);
    node.dataset.ts = item.ts || "";
    node.classList.add(`realtime-inbox-level-${notice.level}`);
    let title = node.querySelector('[data-field="title"]');
    if (notice.link) {
      const link = document.createElement("a");
      link.className = title.className;
      link.dataset.field = "title";
      link.href = notice.link;
      title.replaceWith(link);
      title = link;
    }
    title.id = id;
    title.textContent = notice.title;
    const body = node.querySelector('[data-field="body"]');
    body.textContent = notice.body;
    body.hidden = notice.body === "";
    const time = node.querySelector('[data-field="time"]');
    const at = Date.parse(item.ts);
    if (Number.isNaN(at)) {
      time.remove();
    } else {
      time.dateTime = item.ts;
      time.title = this.absolute.format(at);
      time.textContent = this._ago(at);
    }
    for (const button of node.querySelectorAll("button")) button.setAttribute("aria-describedby", id);
    this._setRead(node, Boolean(item.read));
    return node;
  }

  _setRead(node, read) {
    node.classList.toggle("realtime-inbox-unread", !read);
    node.querySelector('[data-field="unread"]').hidden = read;
    const button = node.querySelector('[data-action="read"]');
    if (read && button.contains(document.activeElement)) node.focus();
    button.hidden = read;
  }

  _remove(node) {
    if (node.contains(document.activeElement)) {
      const neighbour = node.nextElementSibling || node.previousElementSibling;
      (neighbour || this.panel).focus();
    }
    node.remove();
  }

  /** @returns {HTMLElement | undefined} */
  _node(stream, seq) {
    return [...this.list.children].find((node) => node.dataset.stream === stream && node.dataset.seq === String(seq));
  }

  _say(text) {
    this.status.textContent = text;
  }

  // Actions ----------------------------------------------------------------

  _onClick(event) {
    const target = event.target instanceof Element ? event.target : null;
    const link = target?.closest('a[data-field="title"]');
    if (link) {
      const node = link.closest("li");
      // Following a notification reads it; keepalive lets the request finish as the page goes.
      if (node.classList.contains("realtime-inbox-unread")) this.inbox.markRead([ref(node)]).catch(() => {});
      return;
    }
    const action = target?.closest("[data-action]");
    if (!action || action.getAttribute("aria-disabled") === "true") return;
    const node = action.closest("li");
    switch (action.dataset.action) {
      case "close":
        this.close(true);
        break;
      case "read":
        this._act(() => this.inbox.markRead([ref(node)]), () => this._setRead(node, true));
        break;
      case "archive":
        this._act(() => this.inbox.archive([ref(node)]), () => this._remove(node));
        break;
      case "read-all": {
        // Only what was listed when asked: an item arriving meanwhile stays unread.
        const listed = [...this.list.children];
        this._act(() => this.inbox.markAllRead(), () => listed.forEach((item) => this._setRead(item, true)));
        break;
      }
      case "more":
        this._loadMore();
        break;
      case "retry":
        this.panel.focus();
        this._load();
        break;
      default:
        break;
    }
  }

  async _act(request, done) {
    try {
      await request();
    } catch (error) {
      console.warn("realtime: an inbox change failed", error);
      this._say(this.words.errorChange);
      return;
    }
    this._say("");
    done();
    this._showEmpty();
  }

  _onKeydown(event) {
    if (event.key === "Escape" && this.isOpen) {
      event.preventDefault();
      this.close(true);
      return;
    }
    if (!this.isOpen || !this.panel.contains(document.activeElement)) return;
    const items = [...this.list.children];
    if (!items.length || !["ArrowDown", "ArrowUp", "Home", "End"].includes(event.key)) return;
    const current = items.findIndex((item) => item.contains(document.activeElement));
    let next;
    if (event.key === "Home") next = 0;
    else if (event.key === "End") next = items.length - 1;
    else if (event.key === "ArrowDown") next = current < 0 ? 0 : Math.min(items.length - 1, current + 1);
    else next = current < 0 ? items.length - 1 : Math.max(0, current - 1);
    event.preventDefault();
    items[next].focus();
  }

  // Relative times ----------------------------------------------------------

  _ago(at) {
    let value = Math.min(0, (at - Date.now()) / 1000);
    if (value > -45) return this.relative.format(0, "second");
    for (const [unit, size] of UNITS) {
      if (Math.abs(Math.round(value)) < size) return this.relative.format(Math.round(value), unit);
      value /= size;
    }
    return "";
  }

  _startClock() {
    this._clearClock();
    this._clockTimer = setInterval(() => {
      for (const time of this.list.querySelectorAll("time[datetime]")) time.textContent = this._ago(Date.parse(time.dateTime));
    }, CLOCK_INTERVAL);
  }

  _clearClock() {
    if (this._clockTimer !== null) clearInterval(this._clockTimer);
    this._clockTimer = null;
  }
}

/** `{stream, seq}` of an item's `<li>`. */
function ref(node) {
  return { stream: node.dataset.stream, seq: Number(node.dataset.seq) };
}

/** The `[stream, seq]` pairs of an `inbox.changed` field; none when it is not a list of them. */
function pairs(value) {
  return Array.isArray(value) ? value.filter((pair) => Array.isArray(pair) && pair.length === 2) : [];
}

/** `value` as trimmed text; "" for null, undefined and blanks. */
function words(value) {
  return value === null || value === undefined ? "" : String(value).trim();
}

/** `link` when it is a site path or an http(s) URL, else null. */
function safeLink(link) {
  if (typeof link !== "string" || link === "") return null;
  try {
    const url = new URL(link, window.location.href);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * What an item shows, `{title, body, level, link}`: admin notices'
 * `{title, body, level, link}`, `{title, text}`, `{text}`
 * (`manage.py realtime_notify --text`); else the type, or `untitled` for a
 * bare `notice`.
 */
function describe(item, untitled) {
  const payload = item.payload !== null && typeof item.payload === "object" ? item.payload : {};
  const title = words(payload.title);
  const text = words(payload.text);
  return {
    title: title || text || (item.type === "notice" ? untitled : words(item.type)),
    body: words(payload.body) || (title ? text : ""),
    level: LEVELS.includes(payload.level) ? payload.level : "info",
    link: safeLink(payload.link),
  };
}

/** `make()`, or `fallback()` when it throws (an invalid language tag). */
function safely(make, fallback) {
  try {
    return make();
  } catch {
    return fallback();
  }
}

/** Bind every bell of the page that is not bound yet to the page's client. */
function start() {
  const script = document.querySelector("script[data-realtime-client]");
  for (const root of document.querySelectorAll("[data-realtime-inbox]")) {
    if (root.realtimeInbox) continue;
    // autostart.js has run by now; if it could not, start the client here.
    const client = script && (script.realtimeClient || RealtimeClient.fromScript(script));
    if (!client || !client.inbox.enabled) {
      console.warn("realtime: {% realtime_inbox %} needs {% realtime_client %} (with its inbox on) on the page");
      continue;
    }
    root.realtimeInbox = new InboxBell(root, client);
  }
}

// A bell above the client tag runs first. Starting the client from here would
// open the socket before the page's own scripts listen: wait until they ran
// (every module script of the page runs before DOMContentLoaded).
if (document.querySelector("script[data-realtime-client]")?.realtimeClient || document.readyState === "complete") {
  start();
} else {
  document.addEventListener("DOMContentLoaded", start, { once: true });
  window.addEventListener("load", start, { once: true });
}
