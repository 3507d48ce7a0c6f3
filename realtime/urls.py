"""HTTP routes of realtime; include with ``path("realtime/", include("realtime.urls"))``."""

from django.urls import path

from . import views

app_name = "realtime"

urlpatterns = [
    path("api/publish", views.publish, name="publish"),
]
