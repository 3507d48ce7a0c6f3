/**
 * The demo page: shows `notice` messages as toasts and in a feed, the
 * connection state in a badge, and sends notices from the staff form.
 * The client itself is started by `{% realtime_client global=True %}`; the
 * page's words come from Django's JavaScript catalog (`jsi18n/`), loaded
 * before this module.
 */

import { showConnection } from "./connection.js";

const { gettext, ngettext, interpolate } = window;

const client = window.realtime;
const feed = document.getElementById("feed");
const feedCount = document.getElementById("feed-count");
const toasts = document.getElementById("toasts");
const TOAST_MS = 6000;
const LEVELS = ["info", "success", "warning", "error"];

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

/** `value` as trimmed text; "" for null, undefined and blanks. */
function words(value) {
  return value === null || value === undefined ? "" : String(value).trim();
}

/** `link` when it is a site path or an http(s) URL (what admin notices allow), else null. */
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
 * What a notice shows, `{title, body, level, link}`, from any payload shape the
 * docs describe: `{title, body?, level?, link?}` (admin notices, `notify()`,
 * this page's form) or `{text}` (`manage.py realtime_notify --text`). A
 * payload with neither title nor text is shown as a plain "Notice".
 */
function describe(payload) {
  const fields = payload !== null && typeof payload === "object" ? payload : {};
  const title = words(fields.title);
  const text = words(fields.text);
  return {
    title: title || text || gettext("Notice"),
    body: words(fields.body) || (title ? text : ""),
    level: LEVELS.includes(fields.level) ? fields.level : "info",
    link: safeLink(fields.link),
  };
}

/** The title of a notice: a link when the notice has one. */
function heading(notice, className) {
  const node = element(notice.link ? "a" : "span", className, notice.title);
  if (notice.link) node.href = notice.link;
  return node;
}

function showToast(notice) {
  const toast = element("div", `toast level-${notice.level}`);
  toast.setAttribute("role", notice.level === "error" ? "alert" : "status");
  const close = element("button", "toast-close", "×");
  close.type = "button";
  close.setAttribute("aria-label", gettext("Dismiss"));
  toast.append(
    element("span", "toast-stripe"),
    heading(notice, "toast-title"),
    close,
    element("div", "toast-body", notice.body),
  );
  const dismiss = () => {
    toast.classList.add("leaving");
    setTimeout(() => toast.remove(), 200);
  };
  close.addEventListener("click", dismiss);
  setTimeout(dismiss, TOAST_MS);
  toasts.prepend(toast);
}

/** Who a message on `stream` went to, as the feed says it. */
function audience(stream) {
  if (stream === "broadcast") return gettext("everyone");
  if (stream === "staff") return gettext("staff");
  return gettext("you");
}

function addToFeed(message, notice) {
  const item = element("li", `notice fresh level-${notice.level}`);
  item.dataset.stream = message.stream;
  item.dataset.seq = String(message.seq);
  const time = new Date(message.ts || Date.now()).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  const sender = words(message.payload?.sender);
  item.append(
    element("span", "notice-dot"),
    heading(notice, "notice-title"),
    element("span", "notice-meta", `${sender ? `${sender} → ${audience(message.stream)} · ` : ""}${time}`),
    element("p", "notice-body", notice.body),
  );
  feed.prepend(item);
  const count = feed.children.length;
  feedCount.textContent = interpolate(ngettext("%(count)s received", "%(count)s received", count), { count }, true);
}

client.on("notice", (message) => {
  const notice = describe(message.payload);
  addToFeed(message, notice);
  showToast(notice);
});
client.on("resync", ({ stream }) => {
  showToast({
    level: "warning",
    title: gettext("Some notices are no longer available"),
    body: interpolate(gettext("The history of “%(stream)s” was reset."), { stream }, true),
    link: null,
  });
});
showConnection(client, document.getElementById("connection"));

const form = document.getElementById("notice-form");
if (form) {
  const status = document.getElementById("send-status");
  const usernameField = document.getElementById("username-field");
  const submit = form.querySelector("button[type=submit]");
  const showErrors = (errors = {}) => {
    for (const slot of form.querySelectorAll("[data-error-for]")) {
      slot.textContent = (errors[slot.dataset.errorFor] || []).join(" ");
    }
  };

  form.addEventListener("change", () => {
    usernameField.hidden = form.elements.audience.value !== "user";
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    status.textContent = gettext("Sending…");
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      const result = await response.json();
      if (!response.ok) {
        showErrors(result.errors);
        status.textContent = "";
        return;
      }
      showErrors();
      form.elements.title.value = "";
      form.elements.body.value = "";
      status.textContent =
        result.to === null
          ? gettext("Sent to everyone.")
          : interpolate(gettext("Sent to %(username)s."), { username: result.to }, true);
    } catch (error) {
      status.textContent = gettext("Could not send; try again.");
    } finally {
      submit.disabled = false;
    }
  });
}
