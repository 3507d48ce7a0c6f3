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
    ``?share=1`` lets it share one connection with the user's other tabs
    (off here, so that each test page holds its own socket for the frame
    recorder to see).
    """
    options = {name: int(request.GET[name]) for name in NUMBERS if name in request.GET}
    options["share"] = request.GET.get("share") == "1"
    if "url" in request.GET:
        options["url"] = request.GET["url"]
    return render(request, "browser/page.html", {"options": options, "hold": "hold" in request.GET})


urlpatterns = [
    path("test/page/", client_page),
    # Django's own view: it saves the new hash and gives the browser a new session key.
    path("test/password/", auth_views.PasswordChangeView.as_view(success_url="/test/page/?hold=1")),
    *project_urlpatterns,
]
