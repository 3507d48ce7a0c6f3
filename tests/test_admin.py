"""realtime's admin pages: the read-only log and who is online (notices: test_notices.py; tokens: test_publish.py)."""

import pytest

pytestmark = pytest.mark.django_db


def test_log_admin_pages_are_read_only_and_filterable(admin):
    from realtime import notify

    notify("orders", "order.shipped", {"n": 1})
    changelist = admin.get("/admin/realtime/message/?type=order.shipped")
    assert changelist.status_code == 200 and b"order.shipped" in changelist.content
    assert admin.get("/admin/realtime/message/add/").status_code == 403
    assert admin.get("/admin/realtime/stream/").status_code == 200


def test_online_now_page(admin, people, settings):
    import asyncio

    from realtime import presence

    settings.REALTIME = {}

    class Conn:
        connection_id = "c1"
        user = people[1]
        streams = ["broadcast", f"user:{people[1].pk}"]

    asyncio.run(presence.connected(Conn()))
    response = admin.get("/admin/realtime/stream/online/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "alice" in page and f"user:{people[1].pk}" in page and "bob" not in page
    assert "this server process" in page  # the in-memory backend says it sees one process
    assert b"/admin/realtime/stream/online/" in admin.get("/admin/realtime/stream/").content


def test_online_now_page_survives_an_unreachable_presence_store(admin, settings):
    settings.REALTIME = {
        "PRESENCE": {"BACKEND": "realtime.presence.RedisPresence", "URL": "redis://127.0.0.1:1/0"}
    }
    response = admin.get("/admin/realtime/stream/online/")
    assert response.status_code == 200
    assert any("cannot be read" in str(m) for m in response.context["messages"])


def test_online_now_page_needs_admin(client, people):
    client.force_login(people[1])
    assert client.get("/admin/realtime/stream/online/").status_code == 302
