"""A login that ends closes the page's socket; a login that moves to a new session keeps it live.

Django gives a new session key when the password changes (and on login), and
deletes the old one. The socket opened with the old key is closed with 4401;
the client looks once more, with the browser's new cookie, and carries on.
"""

import pytest

from tests.browser.conftest import notices, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CONNECTS = "__frames.filter((f) => f.dir === 'connect').length"
OPENS = "rec.states.filter((s) => s.newState === 'open').length"


def test_password_changed_in_another_tab_keeps_this_tab_live(live, open_page, publish, user):
    server = live()
    page = open_page(server)
    wait_until(page, f"{OPENS} >= 1")
    other = page.context.new_page()
    other.goto("/test/password/")
    other.fill("#id_old_password", "unused-password")
    other.fill("#id_new_password1", "a-New-password-4401")
    other.fill("#id_new_password2", "a-New-password-4401")
    other.click("[type=submit]")
    other.wait_for_url("**/test/page/**")

    wait_until(page, "rec.closes.some((c) => c.code === 4401)")
    wait_until(page, f"{OPENS} >= 2")
    publish(f"user:{user.pk}", 1)
    wait_until(page, "rec.messages.some((m) => m.type === 'notice')")
    assert notices(page) == [1]
    assert page.evaluate(CONNECTS) == 2
    assert page.evaluate("rec.states.at(-1).newState") == "open"


def test_logout_in_another_tab_closes_this_tab_for_good(live, open_page):
    server = live()
    page = open_page(server)
    wait_until(page, f"{OPENS} >= 1")
    other = page.context.new_page()
    other.goto("/test/password/")  # any page with a CSRF token
    other.evaluate(
        """async () => {
          const body = new FormData();
          body.append("csrfmiddlewaretoken", document.querySelector("[name=csrfmiddlewaretoken]").value);
          await fetch("/logout/", { method: "POST", body });
        }"""
    )
    wait_until(page, "rec.states.at(-1).newState === 'closed'")
    codes = page.evaluate("rec.closes.map((c) => c.code)")
    # The open socket is closed; the one look with the browser's cookie finds no login.
    assert codes == [4401, 4401]
    assert page.evaluate(CONNECTS) == 2
    page.wait_for_timeout(1000)
    assert page.evaluate(CONNECTS) == 2
