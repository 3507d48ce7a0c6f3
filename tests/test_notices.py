"""Admin notices: the add form pushes to exactly the audience; "send again"; the admin pages."""

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError

from realtime import notices
from realtime.models import Message, Notice, validate_link
from realtime.testing import capture_notifications

pytestmark = pytest.mark.django_db

ADD = "/admin/realtime/notice/add/"


def add(client, **fields):
    data = {
        "title": "Maintenance",
        "body": "At 22:00",
        "level": "warning",
        "link": "/status/",
        "audience": "everyone",
    }
    data.update(fields)
    with capture_notifications() as sent:
        response = client.post(ADD, data)
    assert response.status_code == 302, (
        response.context["adminform"].form.errors if response.context else response
    )
    return Notice.objects.latest("pk"), sent


def test_everyone(admin, people):
    notice, sent = add(admin)
    assert [(n.stream, n.type, n.seq) for n in sent] == [("broadcast", "notice", 1)]
    assert sent[0].payload == {
        "id": notice.pk,
        "title": "Maintenance",
        "body": "At 22:00",
        "level": "warning",
        "link": "/status/",
    }
    assert notice.created_by == people[0] and notice.sent_at is not None and notice.send_count == 1


def test_staff(admin):
    _notice, sent = add(admin, audience="staff")
    assert [n.stream for n in sent] == ["staff"]


def test_selected_users(admin, people):
    _admin, alice, bob, _carol = people
    _notice, sent = add(admin, audience="users", users=[alice.pk, bob.pk])
    assert sorted(n.stream for n in sent) == sorted([f"user:{alice.pk}", f"user:{bob.pk}"])
    assert {n.type for n in sent} == {"notice"}


def test_selected_groups_reach_active_members_once(admin, people):
    _admin, alice, bob, carol = people
    ops, dev = Group.objects.create(name="ops"), Group.objects.create(name="dev")
    alice.groups.add(ops, dev)
    carol.groups.add(ops)  # inactive: not notified
    bob.groups.add(Group.objects.create(name="other"))
    _notice, sent = add(admin, audience="groups", groups=[ops.pk, dev.pk])
    assert [n.stream for n in sent] == [f"user:{alice.pk}"]


@pytest.mark.parametrize("audience", ["users", "groups"])
def test_selected_audience_needs_a_selection(admin, audience):
    with capture_notifications() as sent:
        response = admin.post(ADD, {"title": "t", "level": "info", "audience": audience})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {
        audience: ["Select at least one, or choose another audience."]
    }
    assert sent == [] and not Notice.objects.exists()


def test_groups_without_active_members_send_nothing_and_say_so(admin, people):
    empty = Group.objects.create(name="empty")
    people[3].groups.add(empty)  # carol is inactive
    with capture_notifications() as sent:
        response = admin.post(
            ADD, {"title": "t", "level": "info", "audience": "groups", "groups": [empty.pk]}, follow=True
        )
    assert sent == []
    assert any("audience is empty" in str(m) for m in response.context["messages"])
    assert Notice.objects.get().send_count == 0


def test_editing_does_not_resend(admin):
    notice, _sent = add(admin)
    with capture_notifications() as sent:
        response = admin.post(
            f"/admin/realtime/notice/{notice.pk}/change/",
            {"title": "Changed", "body": "", "level": "info", "link": "", "audience": "everyone"},
        )
    assert response.status_code == 302
    assert sent == []


def test_send_again_sends_once_more_with_a_new_seq(admin, people):
    first, sent = add(admin, audience="users", users=[people[1].pk])
    second, _ = add(admin, title="Other")
    with capture_notifications() as again:
        response = admin.post(
            "/admin/realtime/notice/", {"action": "send_again", "_selected_action": [first.pk]}, follow=True
        )
    assert response.status_code == 200
    assert [(n.stream, n.seq) for n in sent] == [(f"user:{people[1].pk}", 1)]
    assert [(n.stream, n.seq, n.payload["id"]) for n in again] == [(f"user:{people[1].pk}", 2, first.pk)]
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.send_count, second.send_count) == (2, 1)
    assert Message.objects.filter(type="notice").count() == 3


def test_send_outside_the_admin():
    notice = Notice.objects.create(title="t", audience="staff")
    with capture_notifications() as sent:
        published = notices.send(notice)
    assert [p.stream for p in published] == ["staff"] == [n.stream for n in sent]
    assert notice.send_count == 1


@pytest.mark.parametrize("link", ["/orders/1", "https://example.com/x", "http://example.com"])
def test_links_accepted(link):
    validate_link(link)


@pytest.mark.parametrize("link", ["javascript:alert(1)", "//evil.example", "ftp://example.com", "orders"])
def test_links_refused(link):
    with pytest.raises(ValidationError):
        validate_link(link)
