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


def test_a_users_inbox_state_is_visible_read_only(admin):
    from django.contrib.auth.models import User

    from realtime import inbox, notify

    ann = User.objects.create_user("ann")
    for n in range(3):
        notify(ann, "mention", {"n": n}, inbox=True)
    inbox.mark_read(ann, [(f"user:{ann.pk}", 2)])
    page = admin.get("/admin/realtime/inboxstate/?q=ann")
    assert page.status_code == 200
    assert f"user:{ann.pk}" in page.content.decode()
    rows = page.context["cl"].result_list
    assert [(r.user.username, page.context["cl"].model_admin.unread(r)) for r in rows if r.stream.name.startswith("user:")] == [("ann", 2)]
    assert admin.post(f"/admin/realtime/inboxstate/{rows[0].pk}/change/", {}).status_code == 403
    assert admin.get("/admin/realtime/inboxstate/add/").status_code == 403
