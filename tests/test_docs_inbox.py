"""docs/inbox.md: the Python blocks run as written against the test database."""

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from realtime import notify_many

PAGE = Path(__file__).resolve().parent.parent / "docs" / "inbox.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_page_runs_as_written():
    user = User.objects.create_user("ann", pk=7)
    # The items the API block names: user:7 #41 and broadcast #12.
    notify_many([{"target": user, "type": "t", "inbox": True} for _ in range(40)])
    notify_many([{"target": "broadcast", "type": "t", "inbox": True} for _ in range(11)])
    namespace = {"user": user}
    for block in BLOCKS:
        exec(block, namespace)
    assert namespace["inbox"].unread_count(user)["total"] == 0
