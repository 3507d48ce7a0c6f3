/**
 * The connection badge of the demo pages' top bar: shows the client's state,
 * counts down to the next retry, and reconnects when clicked while offline.
 *
 * Its words come from Django's JavaScript catalog (`jsi18n/`), which the page
 * loads before this module.
 */

const { gettext, interpolate } = window;

const LABELS = {
  idle: gettext("Not connected"),
  connecting: gettext("Connecting…"),
  open: gettext("Live"),
  closed: gettext("Offline · reconnect"),
};

/**
 * Keep `badge` (the `#connection` button) in step with `client`.
 *
 * @param {import("/static/realtime/realtime.js").RealtimeClient} client
 * @param {HTMLElement} badge
 */
export function showConnection(client, badge) {
  const label = badge.querySelector(".badge-label");
  let countdown = null;

  const show = (state) => {
    badge.dataset.state = state;
    clearInterval(countdown);
    countdown = null;
    if (state !== "waiting") {
      label.textContent = LABELS[state];
      return;
    }
    const tick = () => {
      const seconds = Math.max(0, Math.ceil(((client.retryAt ?? Date.now()) - Date.now()) / 1000));
      label.textContent = interpolate(gettext("Reconnecting in %(seconds)s s"), { seconds }, true);
    };
    tick();
    countdown = setInterval(tick, 250);
  };

  client.on("state", ({ newState }) => show(newState));
  badge.addEventListener("click", () => {
    if (client.state === "waiting" || client.state === "closed") client.connect();
  });
  show(client.state);
}
