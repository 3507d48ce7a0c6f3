"""docs/architecture.md names real places: every `file.py:name` and every file it mentions exists."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()
REFERENCES = sorted(set(re.findall(r"`((?:realtime|tests|bench)/[\w/]+\.py):([\w.]+)`", DOC)))
PATHS = sorted(set(re.findall(r"`((?:realtime|tests|bench|docs)/[\w/.-]+)`", DOC)) - {f"{f}:{n}" for f, n in REFERENCES})


@pytest.mark.parametrize("path, name", REFERENCES, ids=[f"{f}:{n}" for f, n in REFERENCES])
def test_named_functions_exist(path, name):
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    target = module
    for part in name.split("."):
        assert hasattr(target, part), f"docs/architecture.md names {path}:{name}, which does not exist"
        target = getattr(target, part)


@pytest.mark.parametrize("path", PATHS)
def test_named_files_exist(path):
    assert (ROOT / path.rstrip("/")).exists(), f"docs/architecture.md names {path}, which does not exist"


def test_the_page_names_the_hops():
    assert len(REFERENCES) >= 20
