"""HTTP routes of realtime; include with ``path("realtime/", include("realtime.urls"))``."""

from django.urls import path

from . import health, inbox_views, metrics_views, views

app_name = "realtime"

urlpatterns = [
    path("api/publish", views.publish, name="publish"),
    path("inbox/", inbox_views.page, name="inbox"),
    path("inbox/count", inbox_views.count, name="inbox-count"),
    path("inbox/read", inbox_views.read, name="inbox-read"),
    path("inbox/read-all", inbox_views.read_all, name="inbox-read-all"),
    path("inbox/archive", inbox_views.archive, name="inbox-archive"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_views.scrape, name="metrics"),
]
