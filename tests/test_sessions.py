"""realtime.sessions judges a session as Django's get_user() does, many at a time, without writing."""

import asyncio
import datetime
from importlib import import_module
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import get_user, login
from django.contrib.auth.backends import AllowAllUsersModelBackend
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import RequestFactory
from django.utils import timezone

from realtime import sessions

pytestmark = pytest.mark.django_db(transaction=True)


class AllowInactive(AllowAllUsersModelBackend):
    """A backend that lets inactive users in (and inherits ModelBackend.get_user)."""


class LookupBackend(AllowAllUsersModelBackend):
    """A backend with its own get_user, asked user by user."""

    def get_user(self, user_id):
        return User.objects.filter(pk=user_id, username__startswith="ok").first()


def log_in(user, backend="django.contrib.auth.backends.ModelBackend"):
    request = RequestFactory().get("/")
    request.session = import_module(settings.SESSION_ENGINE).SessionStore()
    login(request, user, backend=backend)
    request.session.save()  # what SessionMiddleware does with the response
    return request.session.session_key


def django_says(key, user):
    """What Django's own get_user() answers for the session (on a copy of it)."""
    store = import_module(settings.SESSION_ENGINE).SessionStore(key)
    found = get_user(SimpleNamespace(session=store))
    return found.is_authenticated and found.pk == user.pk


def end_by_expiry(user, key):
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - datetime.timedelta(seconds=1))


CASES = {
    "valid": lambda user, key: None,
    "deleted session": lambda user, key: Session.objects.filter(session_key=key).delete(),
    "expired session": end_by_expiry,
    "password changed": lambda user, key: (user.set_password("new"), user.save()),
    "password changed behind the ORM": lambda user, key: User.objects.filter(pk=user.pk).update(password="x"),
    "user deactivated": lambda user, key: User.objects.filter(pk=user.pk).update(is_active=False),
    "user deleted": lambda user, key: User.objects.filter(pk=user.pk).delete(),
}


@pytest.mark.parametrize("case", CASES)
def test_verdicts_match_djangos_get_user(case):
    user = User.objects.create_user("alice", password="old")
    key = log_in(user)
    CASES[case](user, key)
    ours = sessions.check_many([(key, str(user.pk))])[(key, str(user.pk))]
    assert ours == django_says(key, user) == (case == "valid")


def test_a_hash_made_with_a_fallback_secret_still_holds(settings):
    user = User.objects.create_user("alice", password="old")
    key = log_in(user)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-" + "x" * 40
    assert sessions.check_many([(key, str(user.pk))])[(key, str(user.pk))] is True
    assert django_says(key, user)
    settings.SECRET_KEY_FALLBACKS = []
    assert sessions.check_many([(key, str(user.pk))])[(key, str(user.pk))] is False


def test_the_backend_decides_who_may_still_log_in(settings):
    settings.AUTHENTICATION_BACKENDS = [f"{__name__}.AllowInactive", f"{__name__}.LookupBackend"]
    inactive = User.objects.create_user("alice", is_active=False)
    looked_up, refused = User.objects.create_user("ok-bob"), User.objects.create_user("carol")
    keys = {
        "inactive": log_in(inactive, f"{__name__}.AllowInactive"),
        "looked_up": log_in(looked_up, f"{__name__}.LookupBackend"),
        "refused": log_in(refused, f"{__name__}.LookupBackend"),
    }
    users = {"inactive": inactive, "looked_up": looked_up, "refused": refused}
    verdicts = sessions.check_many([(keys[name], str(users[name].pk)) for name in keys])
    for name in keys:
        assert verdicts[(keys[name], str(users[name].pk))] == django_says(keys[name], users[name])
    assert [verdicts[(keys[n], str(users[n].pk))] for n in ("inactive", "looked_up", "refused")] == [True, True, False]
    # A backend taken out of the settings logs nobody in.
    settings.AUTHENTICATION_BACKENDS = [f"{__name__}.LookupBackend"]
    assert sessions.check_many([(keys["inactive"], str(inactive.pk))])[(keys["inactive"], str(inactive.pk))] is False


def test_someone_elses_session_does_not_count():
    alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
    key = log_in(alice)
    assert sessions.check_many([(key, str(bob.pk))])[(key, str(bob.pk))] is False


def test_many_sessions_cost_two_queries(django_assert_max_num_queries):
    pairs = []
    for i in range(50):
        user = User.objects.create_user(f"user{i}")
        pairs.append((log_in(user), str(user.pk)))
    with django_assert_max_num_queries(2):
        verdicts = sessions.check_many(pairs)
    assert all(verdicts.values())


def test_nothing_is_written():
    user = User.objects.create_user("alice", password="old")
    key = log_in(user)
    before = Session.objects.get(session_key=key).session_data
    user.set_password("new")
    user.save()
    assert sessions.check_many([(key, str(user.pk))])[(key, str(user.pk))] is False
    assert Session.objects.get(session_key=key).session_data == before  # get_user() would have flushed it


def test_other_session_engines_are_read_key_by_key(settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
    user = User.objects.create_user("alice")
    key = log_in(user)
    assert sessions.check_many([(key, str(user.pk)), ("garbage", str(user.pk))]) == {
        (key, str(user.pk)): True,
        ("garbage", str(user.pk)): False,
    }


async def test_checks_asked_together_share_one_batch(monkeypatch):
    user = await sync_to_async(User.objects.create_user)("alice")
    key = await sync_to_async(log_in)(user)
    calls = []
    real = sessions.check_many

    def counting(pairs):
        calls.append(len(pairs))
        return real(pairs)

    monkeypatch.setattr(sessions, "check_many", counting)
    results = await asyncio.gather(*(sessions.still_logged_in(key, user) for _ in range(20)))
    assert results == [True] * 20 and calls == [1]
