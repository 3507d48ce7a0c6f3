"""Settings of ``python -m bench.share``: bench.settings, with static files served and its page routed.

DEBUG is on so that daphne serves ``/static/`` (project/urls.py adds
``staticfiles_urlpatterns()``, which serves only under DEBUG): the pages load
the client's modules from the server under test.
"""

from bench.settings import *  # noqa: F401,F403

DEBUG = True
ROOT_URLCONF = "bench.share_urls"
# Cross-origin isolated pages (COOP + COEP), for a 5 µs clock instead of 100 µs.
MIDDLEWARE = [*MIDDLEWARE, "bench.share_urls.isolate"]  # noqa: F405
