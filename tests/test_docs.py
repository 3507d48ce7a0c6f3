"""Settings snippets in the README and docs/ are valid settings, so they cannot drift.

Every ```python block whose statements are all imports and assignments to
UPPER_CASE names is run; a ``REALTIME`` it defines must pass realtime's own
validation. (The curl and PHP examples are run by tests/test_publish.py.)
"""

import ast
import os
import re
from pathlib import Path

import pytest

from realtime.conf import get_config

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def settings_blocks():
    for path in DOCS:
        for index, code in enumerate(BLOCK.findall(path.read_text())):
            try:
                tree = ast.parse(code)
            except SyntaxError:
                continue  # fragments such as "INSTALLED_APPS = [..., ]" are prose, not settings
            if tree.body and all(_is_setting(node) for node in tree.body):
                yield pytest.param(code, id=f"{path.name}-{index}")


def _is_setting(node):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return True
    return isinstance(node, ast.Assign) and all(
        isinstance(target, ast.Name) and target.id.isupper() for target in node.targets
    )


@pytest.mark.parametrize("code", list(settings_blocks()))
def test_documented_settings_are_valid(code, settings):
    # Documented secrets come from the environment: any name resolves to a long one.
    environ = _Environment(os.environ)
    namespace = {"os": _Os(environ)}
    exec(code, namespace)
    if "REALTIME" in namespace:
        settings.REALTIME = namespace["REALTIME"]
        get_config()


class _Environment(dict):
    def __missing__(self, key):
        return "s" * 43


class _Os:
    def __init__(self, environ):
        self.environ = environ

    def getenv(self, key, default=None):
        return self.environ.get(key, default)


def test_some_blocks_are_checked():
    names = {param.id.split("-")[0] for param in settings_blocks()}
    assert {"security.md", "settings.md", "deployment.md"} <= names, names
