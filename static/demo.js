/**
 * The demo page: shows `notice` messages as toasts and in a feed, the
 * connection state in a badge, and sends notices from the staff form.
 * The client itself is started by `{% realtime_client global=True %}`.
 */

import { showConnection } from "./connection.js";

const client = window.realtime;
const feed = document.getElementById("feed");
const feedCount = document.getElementById("feed-count");
const toasts = document.getElementById("toasts");
const TOAST_MS = 6000;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

function level(payload) {
  return ["info", "success", "warning", "error"].includes(payload.level) ? payload.level : "info";
}

function showToast(payload) {
  const toast = element("div", `toast level-${level(payload)}`);
  toast.setAttribute("role", payload.level === "error" ? "alert" : "status");
  const close = element("button", "toast-close", "×");
  close.type = "button";
  close.setAttribute("aria-label", "Dismiss");
  toast.append(
    element("span", "toast-stripe"),
    element("div", "toast-title", String(payload.title ?? "Notice")),
    close,
    element("div", "toast-body", String(payload.body ?? "")),
  );
  const dismiss = () => {
    toast.classList.add("leaving");
    setTimeout(() => toast.remove(), 200);
  };
  close.addEventListener("click", dismiss);
  setTimeout(dismiss, TOAST_MS);
  toasts.prepend(toast);
}

function addToFeed(message) {
  const payload = message.payload;
  const item = element("li", `notice fresh level-${level(payload)}`);
  item.dataset.stream = message.stream;
  item.dataset.seq = String(message.seq);
  const time = new Date(message.ts || Date.now()).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  const to = message.stream === "broadcast" ? "everyone" : "you";
  item.append(
    element("span", "notice-dot"),
    element("span", "notice-title", String(payload.title ?? "Notice")),
    element("span", "notice-meta", `${payload.sender ? `${payload.sender} → ${to} · ` : ""}${time}`),
    element("p", "notice-body", String(payload.body ?? "")),
  );
  feed.prepend(item);
  feedCount.textContent = `${feed.children.length} received`;
}

client.on("notice", (message) => {
  addToFeed(message);
  showToast(message.payload);
});
client.on("resync", ({ stream }) => {
  showToast({ level: "warning", title: "Some notices are no longer available", body: `The history of “${stream}” was reset.` });
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
    status.textContent = "Sending…";
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
      status.textContent = `Sent to ${result.to}.`;
    } catch (error) {
      status.textContent = "Could not send; try again.";
    } finally {
      submit.disabled = false;
    }
  });
}
