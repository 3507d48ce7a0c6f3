import os
import shutil
import uuid

import pytest
from django.contrib.auth.models import User
from channels.layers import channel_layers

from tests.channels_client import connect, make_user  # noqa: F401  (fixtures)
from tests.procs import DaphneServer, RedisServer


def pytest_sessionfinish(session):
    from tests import settings as test_settings

    if getattr(test_settings, "OWNS_TEST_TMP", False):
        shutil.rmtree(test_settings._tmp, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_layers():
    """Each test starts with new channel layer instances (the in-memory one holds state)."""
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A Redis for the session: REDIS_URL if given, else a private redis-server on a free port.

    Tests isolate themselves with a unique key prefix and never flush it.
    """
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_server(tmp_path):
    """A private redis-server this test may stop and restart."""
    server = RedisServer(tmp_path).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def layer_prefix():
    return f"rt{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_layer_settings(redis_url, layer_prefix, settings):
    """Point this process's channel layer at the session Redis."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [{"address": redis_url, "socket_timeout": None, "max_connections": 1000}],
                "prefix": layer_prefix,
            },
        }
    }
    channel_layers.backends.clear()
    return settings


@pytest.fixture
def daphne_factory(tmp_path, settings):
    """Start daphne processes sharing this test's database; all are stopped at the end.

    ``kind=UvicornServer`` starts the application under uvicorn instead.
    """
    started = []
    tmp = os.path.dirname(settings.DATABASES["default"]["TEST"]["NAME"]) if "TEST" in settings.DATABASES["default"] else str(tmp_path)

    def start(env=None, name="daphne", app="project.asgi:application", port=None, kind=DaphneServer):
        server = kind(
            tmp_path,
            {"DJANGO_SETTINGS_MODULE": "tests.e2e_settings", "REALTIME_TEST_TMP": tmp, **(env or {})},
            name=name,
            app=app,
            port=port,
        )
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def people():
    """An admin, two users and an inactive one."""
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    alice = User.objects.create_user("alice")
    bob = User.objects.create_user("bob")
    carol = User.objects.create_user("carol", is_active=False)
    return admin, alice, bob, carol


@pytest.fixture
def admin(client, people):
    """The test client, logged in as ``people``'s admin."""
    client.force_login(people[0])
    return client
