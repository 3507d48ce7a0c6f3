"""A URLconf that does not include realtime.urls (for the publish API check)."""

urlpatterns = []
