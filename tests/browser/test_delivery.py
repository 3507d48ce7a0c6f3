"""Connect, receive what the server publishes, and nothing lost between render and connect."""

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import notices, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_notice_published_between_render_and_connect_is_shown_once(live, open_page, publish, user):
    server = live()
    before = publish("broadcast", 0)
    page = open_page(server, hold=1)
    # The page is rendered; the socket is not open yet. This one must not fall in between.
    publish("broadcast", 1)
    page.evaluate("realtime.connect()")
    wait_until(page, "realtime.state === 'open'")
    publish("broadcast", 2)
    wait_until(page, "rec.messages.length >= 2")
    page.wait_for_timeout(300)

    assert notices(page) == [1, 2]
    assert page.locator("#messages li").all_inner_texts() == [
        f'broadcast #{before + 1}: {{"n":1,"title":"notice 1"}}',
        f'broadcast #{before + 2}: {{"n":2,"title":"notice 2"}}',
    ]
    # The first connect resumed from the positions the template tag rendered.
    url = page.evaluate("__frames.find((f) => f.dir === 'connect').url")
    resume = json.loads(parse_qs(urlsplit(url).query)["resume"][0])
    assert resume["streams"]["broadcast"] == before
    assert set(resume["streams"]) == {"broadcast", f"user:{user.pk}"}
    assert page.page_errors == []
