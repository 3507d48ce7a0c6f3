"""HTTP routes of realtime; include with ``path("realtime/", include("realtime.urls"))``."""

app_name = "realtime"

urlpatterns = []
