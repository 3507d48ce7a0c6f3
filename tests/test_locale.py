"""The shipped zh_Hans translation: complete, compiled, and used."""

import gettext
import re
from pathlib import Path

import pytest
from django.utils import translation

import realtime

LOCALE = Path(realtime.__file__).resolve().parent / "locale" / "zh_Hans" / "LC_MESSAGES"


def po_entries(directory=LOCALE):
    text = (directory / "django.po").read_text(encoding="utf-8")
    entries = {}
    for block in text.split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith("#")]
        joined = "\n".join(lines)
        msgid = re.search(r'^msgid ((?:".*"\n?)+)', joined, re.M)
        msgstr = re.search(r'^msgstr(?:\[0\])? ((?:".*"\n?)+)', joined, re.M)
        if msgid:
            unquote = lambda s: "".join(eval(part) for part in s.split("\n") if part)  # noqa: E731
            entries[unquote(msgid.group(1))] = unquote(msgstr.group(1))
    entries.pop("", None)
    return entries


def test_every_message_is_translated():
    entries = po_entries()
    assert len(entries) > 80
    assert [msgid for msgid, msgstr in entries.items() if not msgstr] == []
    assert "#, fuzzy" not in (LOCALE / "django.po").read_text(encoding="utf-8")


def test_compiled_catalog_matches_the_po():
    with open(LOCALE / "django.mo", "rb") as fh:
        catalog = gettext.GNUTranslations(fh)
    stale = [msgid for msgid, msgstr in po_entries().items() if catalog.gettext(msgid) != msgstr]
    assert stale == [], "run `cd realtime && django-admin compilemessages`"


def test_translation_is_used(client, db):
    with translation.override("zh-hans"):
        assert translation.gettext("Send again") == "再次发送"
    response = client.get("/realtime/api/publish", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.json()["message"] == "请使用 POST。"


def test_po_is_up_to_date_with_the_code(tmp_path):
    """makemessages over a copy of the app finds no message the shipped .po lacks."""
    import os
    import shutil
    import subprocess
    import sys

    copy = tmp_path / "realtime"
    shutil.copytree(LOCALE.parents[2], copy, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(copy / "locale" / "zh_Hans")
    (copy / "locale" / "zh_Hans").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "django", "makemessages", "-l", "zh_Hans"],
        cwd=copy,
        capture_output=True,
        text=True,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(LOCALE.parents[3])},
    )
    assert result.returncode == 0, result.stderr
    shipped = set(po_entries())
    fresh = set(po_entries(copy / "locale" / "zh_Hans" / "LC_MESSAGES"))
    assert len(fresh) > 80
    assert (
        sorted(fresh - shipped) == []
    ), "run `cd realtime && django-admin makemessages -l zh_Hans` and translate"
