"""The demo site's routes plus the test page of the browser tests."""

from django.contrib.auth import views as auth_views
from django.shortcuts import render
from django.urls import path

from project.urls import urlpatterns as project_urlpatterns

#: Query parameters of the test page passed on to ``{% realtime_client %}``.
NUMBERS = ("heartbeat", "backoff_min", "backoff_max", "backoff_floor", "min_uptime", "connect_timeout")


def client_page(request):
    """A bare page with a realtime client whose options come from the query string.

    ``?hold=1`` renders it without connecting; the test calls ``realtime.connect()``.
    """
    options = {name: int(request.GET[name]) for name in NUMBERS if name in request.GET}
    if "url" in request.GET:
        options["url"] = request.GET["url"]
    return render(request, "browser/page.html", {"options": options, "hold": "hold" in request.GET})


urlpatterns = [
    path("test/page/", client_page),
    # Django's own view: it saves the new hash and gives the browser a new session key.
    path("test/password/", auth_views.PasswordChangeView.as_view(success_url="/test/page/?hold=1")),
    *project_urlpatterns,
]
