"""``GET <realtime urls>/metrics``: the Prometheus metrics, for a scraper only.

404 unless ``REALTIME["METRICS"]["ENABLED"]``. Then a client address outside
``ALLOW_IPS`` (when it lists any) gets 403 and a request without the bearer
``TOKEN`` (when one is set) gets 401; the client address is
:mod:`realtime.clientip`'s, so ``TRUSTED_PROXIES`` applies.
"""

import hmac

from django.http import Http404, HttpResponse
from django.views.decorators.http import require_GET

from . import clientip, metrics
from .conf import setting
from .views import _bearer


@require_GET
def scrape(request):
    """The metrics in Prometheus' text format, or 404/403/401 as above."""
    config = setting("METRICS")
    if not config["ENABLED"]:
        raise Http404("Metrics are off.")
    if config["ALLOW_IPS"] and not clientip.in_networks(clientip.from_request(request), config["ALLOW_IPS"]):
        return HttpResponse("Forbidden: this address may not read the metrics.\n", status=403, content_type="text/plain")
    token = config["TOKEN"]
    if token and not hmac.compare_digest((_bearer(request) or "").encode(), token.encode()):
        response = HttpResponse(
            "Unauthorized: send 'Authorization: Bearer <token>'.\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="realtime-metrics"'
        return response
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)

