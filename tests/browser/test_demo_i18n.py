"""The demo's language switch in a real browser: the pages and the words their scripts write."""

import re

import pytest

import realtime
from tests.browser.conftest import wait_until
from tests.test_demo_i18n import ALLOWED_LATIN

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

#: What a user sees or hears on the page as it is now, scripts' words included.
VISIBLE_TEXT = """() => [
  document.title,
  document.body.innerText,
  ...[...document.querySelectorAll("[title], [placeholder], [aria-label]")].flatMap((node) =>
    ["title", "placeholder", "aria-label"].map((name) => node.getAttribute(name) || "")),
].join(" ")"""


def english_words(page):
    return sorted(set(re.findall(r"[A-Za-z]{2,}", page.evaluate(VISIBLE_TEXT))) - ALLOWED_LATIN)


def switch(page, language):
    """Press the top bar's button for ``language`` and wait for the page to come back in it."""
    page.click(f".languages button[value={language}]")
    page.wait_for_selector(f"html[lang={language}]")
    page.wait_for_selector("#connection[data-state=open]")


def test_switching_to_chinese_translates_the_page_and_its_scripts(live, open_page, worker, redis_layer_settings):
    server = live()
    page = open_page(server, path="/")
    page.wait_for_selector("#connection[data-state=open]")
    assert page.locator("#connection").inner_text() == "Live"

    switch(page, "zh-hans")
    assert page.url == f"{server.url.rstrip('/')}/"
    assert page.locator("#connection").inner_text() == "已连接"
    assert page.locator(".languages [aria-pressed=true]").inner_text() == "简体中文"

    worker(realtime.notify, "broadcast", "notice", {"text": "五分钟后开始部署"})
    worker(realtime.notify, "broadcast", "notice", {"level": "warning"})
    wait_until(page, "document.querySelectorAll('#feed li').length === 2")
    assert page.locator("#feed .notice-title").all_inner_texts() == ["通知", "五分钟后开始部署"]
    assert page.locator("#feed-count").inner_text() == "已收到 2 条"
    assert page.locator(".toast-close").first.get_attribute("aria-label") == "关闭"
    assert english_words(page) == []

    page.goto("/board/")
    page.wait_for_selector("#connection[data-state=open]")
    assert page.locator(".column-head").all_inner_texts() == ["待办", "进行中", "已完成"]
    page.fill("#new-task input[name=title]", "写周报")
    page.click("#new-task button[type=submit]")
    page.wait_for_selector(".task:has-text('写周报')")
    page.click(".task [data-action=rename]")
    assert page.locator("input.task-rename").get_attribute("aria-label") == "新标题"
    page.keyboard.press("Escape")
    assert english_words(page) == []

    server.kill()
    page.wait_for_selector("#connection[data-state=waiting]")
    assert re.fullmatch(r"\d+ 秒后重新连接", page.locator("#connection").inner_text())
    assert page.page_errors == []


def test_switching_back_to_english(live, open_page):
    server = live()
    page = open_page(server, path="/board/")
    page.wait_for_selector("#connection[data-state=open]")
    switch(page, "zh-hans")
    assert page.locator("h1").inner_text() == "看板"
    switch(page, "en")
    assert page.locator("h1").inner_text() == "Board"
    assert page.locator("#connection").inner_text() == "Live"
    assert page.locator(".languages [aria-pressed=true]").inner_text() == "English"
