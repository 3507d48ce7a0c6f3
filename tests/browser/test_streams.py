"""Streams beyond the defaults: subscribe, resume them after a reconnect, unsubscribe."""

import pytest

from tests.browser.conftest import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_subscribe_resume_and_unsubscribe(live, open_page, publish):
    server = live(realtime={"AUTHORIZE": "tests.browser.asgi.authorize"})
    page = open_page(server, hold=1)
    page.evaluate(
        """async () => {
          window.orders = [];
          realtime.connect();
          await realtime.ready();
          realtime.subscribe("orders", (message) => orders.push(message.payload.n));
          realtime.subscribe("secret");
        }"""
    )
    wait_until(page, "realtime.positions.streams.orders !== undefined")
    publish("orders", 1)
    wait_until(page, "orders.length === 1")

    # Published while the page is offline: the reconnect resumes "orders" too.
    page.evaluate("realtime.close()")
    publish("orders", 2)
    page.evaluate("realtime.connect(); realtime.ready()")
    wait_until(page, "orders.length === 2")
    assert page.evaluate("orders") == [1, 2]
    assert {"kind": "server", "code": "forbidden", "event": None} in page.evaluate("rec.errors")
    assert "secret" not in page.evaluate("realtime.positions.streams")
    # The developer sees why in the console, without listening for "error".
    assert any("forbidden" in line and "AUTHORIZE" in line for line in page.console_warnings)

    page.evaluate("realtime.unsubscribe('orders')")
    wait_until(page, "__frames.some((f) => f.dir === 'in' && f.data.includes('\"unsubscribed\"'))")
    publish("orders", 3)
    publish("broadcast", 4)
    wait_until(page, "rec.messages.some((m) => m.payload.n === 4)")
    assert page.evaluate("orders") == [1, 2]
