"""docs/notify.md: every Python block runs as written, in order, and does what the page says."""

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from realtime.models import Message

PAGE = Path(__file__).resolve().parent.parent / "docs" / "notify.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres_sensitive]


def payloads(stream):
    return [m.payload for m in Message.objects.filter(stream__name=stream).order_by("seq")]


def test_the_page_runs_as_written():
    assert len(BLOCKS) >= 6
    ann = User.objects.create_user("ann")
    bob = User.objects.create_user("bob")
    namespace = {}
    for block in BLOCKS:
        exec(block, namespace)
    assert payloads("broadcast") == [{"title": "Deploy at 18:00"}, {"open": 12}]
    assert payloads(f"user:{ann.pk}") == [{"project": 12, "role": "editor"}]
    assert payloads(f"user:{bob.pk}") == [{"project": 12, "role": "viewer"}]
    assert payloads("orders") == [{"id": 17}, {"id": 17}, {"id": 18}, {"id": 17}]
    assert payloads("staff") == [{"id": 17}]
    assert not Message.objects.filter(stream__name="cursor:doc-7").exists()  # ephemeral
