"""The demo site's routes plus the page of ``python -m bench.share``."""

from django.http import HttpResponse
from django.template import engines
from django.urls import path

from project.urls import urlpatterns as project_urlpatterns

#: A bare page with a global client; its inline module stamps every "broadcast"
#: message with the page's clock, first thing in the handler, in arrival order.
PAGE = """{% load realtime %}<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>bench.share</title></head>
<body>
{% realtime_client global=True share=share %}
<script type="module">
  // [seq, arrival (ms since the epoch, the page's high-resolution clock), payload.i]
  const arrivals = (window.arrivals = []);
  window.realtime.on("message", (message) => {
    const t = performance.timeOrigin + performance.now();
    if (message.stream === "broadcast") arrivals.push([message.seq, t, message.payload ? message.payload.i : null]);
  });
</script>
</body>
</html>
"""


def isolate(get_response):
    """Middleware: serve every response cross-origin isolated (COOP + COEP).

    Chromium coarsens ``performance.now()`` to 100 µs on pages that are not
    isolated, and to 5 µs on pages that are; the shared worker's script gets
    the same headers, so the page may still start it.
    """

    def middleware(request):
        response = get_response(request)
        response["Cross-Origin-Opener-Policy"] = "same-origin"
        response["Cross-Origin-Embedder-Policy"] = "require-corp"
        return response

    return middleware


def share_page(request):
    """``?share=1``: the client shares the tab's connection (worker or leader); ``?share=0``: its own socket."""
    template = engines["django"].from_string(PAGE)
    return HttpResponse(template.render({"share": request.GET.get("share") == "1"}, request))


urlpatterns = [
    path("bench/share/", share_page),
    *project_urlpatterns,
]
