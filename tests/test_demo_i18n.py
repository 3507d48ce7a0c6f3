"""The demo in Simplified Chinese: the language switch, no English left, and a complete catalog.

The demo's catalog is project/locale (``LOCALE_PATHS``), apart from realtime's
own (tests/test_locale.py). The live part, the switch in a real browser and the
words the page scripts write, is tests/browser/test_demo_i18n.py.
"""

import gettext
import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import translation

from project.models import Task

ROOT = Path(__file__).resolve().parents[1]
LOCALE = ROOT / "project" / "locale" / "zh_Hans" / "LC_MESSAGES"
DOMAINS = ("django", "djangojs")

#: Latin words a zh-Hans page may show: the product's name, the switch back to
#: English (each language is named in its own), and the test user's name.
ALLOWED_LATIN = {"realtime", "English", "alice"}

#: Attributes whose text a user sees or hears.
TEXT_ATTRIBUTES = ("title", "placeholder", "aria-label", "alt")

REFRESH = (
    "in the repository root, for -d django and -d djangojs: DJANGO_SETTINGS_MODULE=project.settings "
    "python -m django makemessages -l zh_Hans -d DOMAIN -i realtime -i tests -i bench -i scripts "
    "-i docs -i test-artifacts -i build; translate; then in project/: django-admin compilemessages"
)


class VisibleText(HTMLParser):
    """Collects the text of a page a user can see or hear: text outside scripts and styles, labels, hints."""

    SKIP = {"script", "style"}

    def __init__(self):
        super().__init__()
        self.chunks = []
        self._skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self._skipping += 1
        self.chunks.extend(value for name, value in attrs if name in TEXT_ATTRIBUTES and value)

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self._skipping -= 1

    def handle_data(self, data):
        if not self._skipping and data.strip():
            self.chunks.append(data.strip())


def english_words(html):
    """The Latin words in ``html``'s visible text that are not in ``ALLOWED_LATIN``."""
    parser = VisibleText()
    parser.feed(html)
    words = re.findall(r"[A-Za-z]{2,}", " ".join(parser.chunks))
    return sorted(set(words) - ALLOWED_LATIN)


def po_entries(domain, directory=LOCALE):
    """``{(msgctxt, msgid): msgstr}`` of a .po file (msgctxt None when absent; a plural's first form)."""
    entries = {}
    for block in (directory / f"{domain}.po").read_text(encoding="utf-8").split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line.startswith("#"):
                continue
            match = re.match(r"^(msgctxt|msgid_plural|msgid|msgstr(?:\[0\])?|msgstr\[\d+\]) (\".*\")$", line)
            if match:
                key = match.group(1)
                fields[key] = [match.group(2)]
            elif key:
                fields[key].append(line)
        if "msgid" not in fields:
            continue
        unquote = lambda parts: "".join(eval(part) for part in parts)  # noqa: E731
        msgstr = fields.get("msgstr") or fields.get("msgstr[0]")
        entries[(unquote(fields["msgctxt"]) if "msgctxt" in fields else None, unquote(fields["msgid"]))] = unquote(
            msgstr
        )
    entries.pop((None, ""), None)
    return entries


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password="unused-password", is_staff=True)


@pytest.fixture
def chinese(alice):
    """A client signed in as alice (staff: the page has the send form) that chose 简体中文."""
    client = Client()
    client.force_login(alice)
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/board/"})
    assert response.status_code == 302 and response.url == "/board/"
    return client


# The switch ------------------------------------------------------------------


def test_pages_render_in_chinese_after_switching_and_back(alice):
    client = Client()
    client.force_login(alice)
    english = client.get("/").content.decode()
    assert '<html lang="en">' in english and "Send a notice" in english

    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    home = client.get("/").content.decode()
    board = client.get("/board/").content.decode()
    assert '<html lang="zh-hans">' in home
    assert "<title>realtime 演示</title>" in home
    assert "发送通知" in home and "退出登录" in home
    assert 'value="zh-hans" lang="zh-hans" aria-pressed="true">简体中文</button>' in home
    assert "<title>看板 · realtime 演示</title>" in board
    assert "待办" in board and "进行中" in board and "已完成" in board

    client.post("/i18n/setlang/", {"language": "en", "next": "/"})
    assert "Send a notice" in client.get("/").content.decode()


def test_the_switch_is_on_every_page_and_returns_to_it(alice):
    client = Client()
    login = client.get("/login/?next=/board/").content.decode()
    assert 'action="/i18n/setlang/"' in login and 'name="next" value="/login/?next=/board/"' in login
    response = client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/login/?next=/board/"})
    assert response.url == "/login/?next=/board/"
    assert "<h1>登录</h1>" in client.get(response.url).content.decode()


def test_an_accept_language_header_picks_chinese_too():
    page = Client().get("/login/", HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9").content.decode()
    assert '<html lang="zh-hans">' in page and "登录后即可实时接收通知。" in page


# No English left ---------------------------------------------------------------


def test_no_english_is_left_on_the_chinese_pages(chinese, alice):
    Task.objects.create(title="整理发布说明", status="doing")
    pages = {
        "home": chinese.get("/"),
        "board": chinese.get("/board/"),
        # Plain form posts, as without JavaScript: the answers carry the forms' errors.
        "notice errors": chinese.post("/notices/", {"audience": "user", "level": "info", "title": ""}),
        "no such user": chinese.post("/notices/", {"audience": "user", "username": "无名氏", "title": "你好"}),
        "task errors": chinese.post("/board/tasks/", {"title": " "}),
    }
    chinese.post("/notices/", {"audience": "everyone", "level": "info", "title": "午饭到了"})
    pages["home after sending"] = chinese.get("/")
    chinese.post("/logout/")
    pages["login"] = chinese.get("/login/")
    pages["login error"] = chinese.post("/login/", {"username": "alice", "password": "wrong"})

    assert "要发给谁？" in pages["notice errors"].content.decode()
    assert "没有名为“无名氏”的用户。" in pages["no such user"].content.decode()
    assert "请填写任务标题。" in pages["task errors"].content.decode()
    assert "通知已发送给所有人。" in pages["home after sending"].content.decode()
    leftovers = {name: english_words(page.content.decode()) for name, page in pages.items()}
    assert leftovers == {name: [] for name in pages}


def test_json_answers_and_refusals_are_translated_too(chinese):
    accept = {"HTTP_ACCEPT": "application/json"}
    assert chinese.post("/board/tasks/", {"title": ""}, **accept).json() == {"errors": {"title": ["请填写任务标题。"]}}
    sent = chinese.post("/notices/", {"audience": "everyone", "level": "info", "title": "午饭到了"}, **accept).json()
    assert sent["to"] is None
    bob = User.objects.create_user("bob", password="unused-password")
    client = Client()
    client.force_login(bob)
    client.post("/i18n/setlang/", {"language": "zh-hans", "next": "/"})
    assert client.post("/notices/", {"title": "x"}).content.decode() == "只有员工可以发送通知。"


def test_the_scripts_get_their_words_in_the_chosen_language(chinese):
    response = chinese.get("/jsi18n/")
    assert response.status_code == 200
    catalog = json.loads(re.search(r"const newcatalog = (\{.*?\});", response.content.decode(), re.S).group(1))
    assert catalog["Live"] == "已连接"
    assert catalog["Reconnecting in %(seconds)s s"] == "%(seconds)s 秒后重新连接"
    # Only the demo's own words: the admin's script catalog is not sent to every page.
    assert set(catalog) == {msgid for _, msgid in po_entries("djangojs")}


def test_the_admin_names_the_demo_board_in_chinese(chinese, alice):
    alice.is_superuser = True
    alice.save()
    page = chinese.get("/admin/demo/task/").content.decode()
    assert "演示" in page and "任务" in page and "状态" in page


# The catalog -------------------------------------------------------------------


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_message_is_translated_and_compiled(domain):
    entries = po_entries(domain)
    assert len(entries) > (40 if domain == "django" else 20)
    assert [key for key, msgstr in entries.items() if not msgstr] == []
    assert "#, fuzzy" not in (LOCALE / f"{domain}.po").read_text(encoding="utf-8")
    with open(LOCALE / f"{domain}.mo", "rb") as fh:
        catalog = gettext.GNUTranslations(fh)

    def compiled(context, msgid):
        if context:
            return catalog.pgettext(context, msgid)
        # A plural entry is only found by ngettext.
        found = catalog.gettext(msgid)
        return found if found != msgid else catalog.ngettext(msgid, msgid, 1)

    assert {key: compiled(*key) for key in entries} == entries, f"the .mo is stale: {REFRESH}"


def test_the_demo_catalog_wins_over_other_apps_with_the_same_msgid():
    """``LOCALE_PATHS`` puts it first: the admin, listed before the demo, says 增加 for "Add"."""
    with translation.override("zh-hans"):
        assert translation.gettext("Add") == "添加"
        assert translation.pgettext("recipient", "To") == "发给"


def test_po_files_are_up_to_date_with_the_code(tmp_path):
    """makemessages over a copy of the demo finds exactly the messages the shipped .po files have."""
    for folder in ("templates", "static", "project"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "locale"))
    (tmp_path / "locale" / "zh_Hans").mkdir(parents=True)
    # No settings: with them, LOCALE_PATHS would point makemessages at the real catalog.
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    for domain in DOMAINS:
        result = subprocess.run(
            [sys.executable, "-m", "django", "makemessages", "-l", "zh_Hans", "-d", domain],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        fresh = set(po_entries(domain, tmp_path / "locale" / "zh_Hans" / "LC_MESSAGES"))
        shipped = set(po_entries(domain))
        assert len(fresh) > 20
        assert (sorted(fresh - shipped, key=str), sorted(shipped - fresh, key=str)) == ([], []), REFRESH
