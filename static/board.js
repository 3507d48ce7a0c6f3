/**
 * The demo board: tasks in three columns, the same in every tab.
 *
 * The server renders the board as of seq `n` of the "board" stream (the
 * `#board-seq` script). Every save or delete of a task is pushed to that
 * stream by `realtime.sync`; this script applies each message after `n` to
 * the page, whoever made the change: this tab, another one, the admin. Its
 * own edits are posted and then shown when their message arrives, like
 * anyone else's. When the stream cannot be followed message by message (a
 * `resync`, or changes between rendering and subscribing) it reloads the
 * board from `data-state-url`.
 *
 * The client is started by `{% realtime_client global=True autoconnect=False %}`:
 * "board" is subscribed before the first connect, so `welcome` already says
 * where the server starts sending it. Its words come from Django's JavaScript
 * catalog (`jsi18n/`), loaded before it.
 */

import { showConnection } from "./connection.js";

const { gettext } = window;

const STREAM = "board";
const STATUSES = ["todo", "doing", "done"];

const client = window.realtime;
const board = document.getElementById("board");
const template = document.getElementById("task-template");
const status = document.getElementById("board-status");
const csrfToken = document.querySelector("#new-task [name=csrfmiddlewaretoken]").value;
const tasksUrl = board.dataset.tasksUrl;

/** The last seq of "board" the page shows: messages at or below it are already in. */
let seq = JSON.parse(document.getElementById("board-seq").textContent);
/** Messages that arrive while the board is being reloaded, or null when not reloading. */
let queued = null;
let reloadAgain = false;

const hint = status.innerHTML;
let hintTimer = null;

/** Show `text` where the hint is, for a few seconds. */
function say(text) {
  clearTimeout(hintTimer);
  status.textContent = text;
  hintTimer = setTimeout(() => {
    status.innerHTML = hint;
  }, 5000);
}

// Showing tasks ---------------------------------------------------------------

function column(taskStatus) {
  return board.querySelector(`.column[data-status="${taskStatus}"] .tasks`);
}

function card(pk) {
  return board.querySelector(`.task[data-pk="${pk}"]`);
}

/** Put `node` (a card) into its status' column, keeping the columns in creation (pk) order. */
function place(node, taskStatus) {
  node.dataset.status = taskStatus;
  const list = column(taskStatus);
  const pk = Number(node.dataset.pk);
  const next = [...list.children].find((other) => other !== node && Number(other.dataset.pk) > pk);
  list.insertBefore(node, next ?? null);
}

/** Show `fields` (all of a task's or some of them) on the card of task `pk`, making it if needed. */
function upsert(pk, fields) {
  let node = card(pk);
  if (node === null) {
    node = template.content.firstElementChild.cloneNode(true);
    node.dataset.pk = String(pk);
    node.classList.add("fresh");
  }
  if (fields.title !== undefined) node.querySelector(".task-title").textContent = fields.title;
  const taskStatus = STATUSES.includes(fields.status) ? fields.status : node.dataset.status || "todo";
  if (!node.isConnected || node.dataset.status !== taskStatus) place(node, taskStatus);
}

function remove(pk) {
  card(pk)?.remove();
}

function updateCounts() {
  for (const section of board.querySelectorAll(".column")) {
    const count = section.querySelector(".tasks").children.length;
    section.querySelector(".count").textContent = count ? String(count) : "";
    section.classList.toggle("is-empty", count === 0);
  }
}

/** Replace every card with the tasks of a snapshot from `data-state-url`. */
function showSnapshot(snapshot) {
  const wanted = new Set(snapshot.tasks.map((task) => String(task.pk)));
  for (const node of board.querySelectorAll(".task")) {
    if (!wanted.has(node.dataset.pk)) node.remove();
  }
  for (const task of snapshot.tasks) upsert(task.pk, task);
  seq = snapshot.seq;
}

// Following the stream --------------------------------------------------------

/** Apply one message of "board": `{model, pk, event, fields}` as `realtime.sync` sends it. */
function apply(message) {
  const { pk, event, fields } = message.payload;
  if (event === "deleted") remove(pk);
  else if (event === "created" || card(pk) !== null) upsert(pk, fields);
  else reload(); // An update of a task the page never saw: something was missed.
}

function onMessage(message) {
  if (message.seq !== null && message.seq <= seq) return;
  if (queued !== null) {
    queued.push(message);
    return;
  }
  apply(message);
  if (message.seq !== null) seq = message.seq;
  updateCounts();
}

/** Fetch the whole board again, then apply what arrived meanwhile. */
async function reload() {
  if (queued !== null) {
    reloadAgain = true;
    return;
  }
  queued = [];
  let failed = false;
  try {
    do {
      reloadAgain = false;
      const response = await fetch(board.dataset.stateUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      showSnapshot(await response.json());
    } while (reloadAgain);
  } catch (error) {
    console.error("board: could not reload", error);
    failed = true;
  }
  const pending = queued;
  queued = null;
  for (const message of pending) onMessage(message);
  updateCounts();
  if (failed) {
    say(gettext("Could not reload the board; retrying…"));
    setTimeout(reload, 3000);
  }
}

client.subscribe(STREAM, onMessage);
client.on("open", (welcome) => {
  // The server starts after this seq; beyond what was rendered, the page missed some.
  if ((welcome.streams?.[STREAM] ?? 0) > seq) reload();
});
client.on("resync", ({ stream }) => {
  if (stream === STREAM) reload();
});
showConnection(client, document.getElementById("connection"));
client.connect();
updateCounts();

// Editing ---------------------------------------------------------------------

/** POST `fields` to `url` as a form; returns the JSON answer, or null after telling the user why not. */
async function post(url, fields) {
  try {
    const response = await fetch(url, {
      method: "POST",
      body: new URLSearchParams(fields),
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken },
      credentials: "same-origin",
    });
    if (response.status === 404) {
      say(gettext("That task was deleted meanwhile."));
      return null;
    }
    const result = await response.json();
    if (!response.ok) {
      say(Object.values(result.errors || {}).flat().join(" ") || gettext("That did not work."));
      return null;
    }
    return result;
  } catch (error) {
    say(gettext("Could not reach the server; try again."));
    return null;
  }
}

const form = document.getElementById("new-task");
const titleError = form.querySelector("[data-error-for=title]");
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const title = form.elements.title.value.trim();
  if (!title) {
    titleError.textContent = gettext("Give the task a title.");
    return;
  }
  titleError.textContent = "";
  const result = await post(form.action, { title });
  if (result !== null) form.elements.title.value = "";
});

function rename(node) {
  const title = node.querySelector(".task-title");
  const input = document.createElement("input");
  input.type = "text";
  input.maxLength = 200;
  input.className = "task-rename";
  input.value = title.textContent;
  input.setAttribute("aria-label", gettext("New title"));
  title.hidden = true;
  title.after(input);
  input.focus();
  input.select();

  let done = false;
  const finish = (save) => {
    if (done) return;
    done = true;
    const value = input.value.trim();
    input.remove();
    title.hidden = false;
    if (save && value && value !== title.textContent) post(`${tasksUrl}${node.dataset.pk}/`, { title: value });
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") finish(true);
    else if (event.key === "Escape") finish(false);
  });
  input.addEventListener("blur", () => finish(true));
}

board.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button === null) return;
  const node = button.closest(".task");
  const url = `${tasksUrl}${node.dataset.pk}/`;
  const index = STATUSES.indexOf(node.dataset.status);
  switch (button.dataset.action) {
    case "back":
      if (index > 0) post(url, { status: STATUSES[index - 1] });
      break;
    case "forward":
      if (index < STATUSES.length - 1) post(url, { status: STATUSES[index + 1] });
      break;
    case "rename":
      rename(node);
      break;
    case "delete":
      post(`${url}delete/`, {});
      break;
  }
});
