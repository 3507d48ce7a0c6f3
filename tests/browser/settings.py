"""Settings of the daphne processes the browser tests start: e2e plus test pages."""

from pathlib import Path

from tests.e2e_settings import *  # noqa: F401,F403
from tests.e2e_settings import TEMPLATES

# Static files (the client) are served by Django's staticfiles view, which needs DEBUG.
DEBUG = True
ROOT_URLCONF = "tests.browser.urls"
TEMPLATES = [{**TEMPLATES[0], "DIRS": [*TEMPLATES[0]["DIRS"], Path(__file__).parent / "templates"]}]
