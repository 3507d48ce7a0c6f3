"""Fixtures of the browser tests: one Chromium for the suite, logged-in pages, a live server.

The Playwright browser lives as long as the ``tests/browser`` package runs (the
widest scope that does not outlive it): its sync API keeps an asyncio loop
marked as running in the main thread, which would make every later sync test
in the session believe it runs inside an event loop.
"""

import json
import os
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

#: Records every WebSocket the page opens and every frame it sends or receives,
#: and every message the page's ``window.realtime`` client delivers (its socket
#: may be another tab's or a shared worker's) in ``__delivered``.
FRAME_RECORDER = """
(() => {
  const delivered = (window.__delivered = []);
  let client;
  Object.defineProperty(window, "realtime", {
    configurable: true,
    get: () => client,
    set: (value) => {
      client = value;
      if (value && typeof value.on === "function") value.on("message", (message) => delivered.push(message));
    },
  });
  const Native = window.WebSocket;
  const frames = (window.__frames = []);
  let count = 0;
  window.WebSocket = class RecordedWebSocket extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      const socket = (this.__socket = ++count);
      frames.push({ socket, dir: "connect", url: String(url), t: performance.now() });
      this.addEventListener("message", (event) => frames.push({
        socket, dir: "in", data: typeof event.data === "string" ? event.data : "<binary>", t: performance.now(),
      }));
      this.addEventListener("close", (event) => frames.push({ socket, dir: "close", code: event.code, t: performance.now() }));
    }
    send(data) {
      frames.push({ socket: this.__socket, dir: "out", data, t: performance.now() });
      super.send(data);
    }
  };
})();
"""


@pytest.fixture(scope="package")
def browser():
    """One headless Chromium for the whole browser suite."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: run `make test` (it installs it) or `apt-get install chromium`.",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    # Playwright's sync API marks an event loop as running in this thread, and
    # Django refuses ORM calls there; the tests' own ORM calls (creating users,
    # flushing the database) are safe, as nothing else runs in this thread.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "1"
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def worker():
    """A thread for code that must not run where Playwright's loop is: ``notify()``, ``async_to_sync``."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="publisher")

    def run(func, *args, **kwargs):
        return pool.submit(func, *args, **kwargs).result(timeout=60)

    yield run
    pool.submit(connections.close_all).result(timeout=60)
    pool.shutdown()


@pytest.fixture
def publish(worker, redis_layer_settings):
    """``publish(target, n)``: notify a ``notice`` with payload ``{"n": n}``; returns the seq."""
    import realtime

    def send(target, n, type="notice"):
        return worker(realtime.notify, target, type, {"n": n, "title": f"notice {n}"}).seq

    return send


@pytest.fixture
def live(daphne_factory, redis_url, layer_prefix):
    """Start daphne with the test routes on the session Redis; ``live(port=...)`` restarts one."""

    def start(port=None, realtime=None):
        env = {
            "DJANGO_SETTINGS_MODULE": "tests.browser.settings",
            "REDIS_URL": redis_url,
            "REALTIME_REDIS_PREFIX": layer_prefix,
            # Keep Django's async safety checks on in the server under test.
            "DJANGO_ALLOW_ASYNC_UNSAFE": "",
            "REALTIME_JSON": json.dumps(realtime or {}),
        }
        return daphne_factory(env=env, app="tests.browser.asgi:application", port=port, name="browser-daphne")

    return start


@pytest.fixture
def user(transactional_db):
    return User.objects.create_user("alice", password="unused-password")


@pytest.fixture
def open_page(browser, user):
    """``open_page(server, **query)``: the test page, logged in as ``user``, recording frames and console."""
    contexts = []

    def open_(server, path="/test/page/", as_user=None, viewport=None, **query):
        client = Client()
        client.force_login(as_user or user)
        context = browser.new_context(base_url=server.url, viewport=viewport or {"width": 1000, "height": 700})
        contexts.append(context)
        context.add_cookies(
            [{"name": "sessionid", "value": client.cookies["sessionid"].value, "domain": "127.0.0.1", "path": "/"}]
        )
        context.add_init_script(FRAME_RECORDER)
        page = context.new_page()
        page.console_errors = []
        page.console_warnings = []
        page.page_errors = []
        page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
        page.on("console", lambda msg: msg.type == "warning" and page.console_warnings.append(msg.text))
        page.on("pageerror", lambda error: page.page_errors.append(str(error)))
        url = path + ("?" + urlencode(query) if query else "")
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()


def wait_until(page, expression, timeout=15000, arg=None):
    """Wait for a JS expression (``rec`` and ``__frames`` are in scope) to be truthy."""
    page.wait_for_function(expression, arg=arg, timeout=timeout)


def notices(page):
    """The ``n`` of every ``notice`` the page's client delivered, in order."""
    return page.evaluate("rec.messages.filter((m) => m.type === 'notice').map((m) => m.payload.n)")


@pytest.fixture
def proxy():
    """Start a :class:`BlackHoleProxy` in front of a server; all are stopped at the end."""
    from tests.browser.proxy import BlackHoleProxy

    proxies = []

    def start(server):
        proxies.append(BlackHoleProxy(server.port).start())
        return proxies[-1]

    yield start
    for started in proxies:
        started.stop()
