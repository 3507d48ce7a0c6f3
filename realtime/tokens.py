"""Publish tokens: creating them, and finding the one a request presents.

A database token reads ``rtp_<prefix>_<secret>``: the prefix finds the row,
and the SHA-256 of the whole token is compared with the stored one in constant
time. The secret has 256 bits of entropy, so a fast hash is enough: there is
nothing to brute-force. Tokens may also be listed in
``REALTIME["PUBLISH_TOKENS"]`` (for deployments that keep secrets in the
environment); those are compared the same way.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase

from django.utils import timezone

from .conf import setting

TOKEN_PREFIX = "rtp_"

#: Settings tokens shorter than this are refused by the system check realtime.E004.
MIN_SECRET_LENGTH = 32

#: ``last_used_at`` is written at most this often per token.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class Credential:
    """A token that authenticated a request.

    ``key`` identifies it for rate limiting; ``patterns`` are the stream name
    globs it may publish to.
    """

    key: str
    name: str
    patterns: tuple

    def allows(self, stream):
        """True if this token may publish to ``stream``."""
        return any(fnmatchcase(stream, pattern) for pattern in self.patterns)


def hash_token(token):
    """The hex SHA-256 of a presented token, as stored in ``PublishToken.secret_hash``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token():
    """Return ``(prefix, token)`` for a new database token."""
    prefix = secrets.token_hex(4)
    return prefix, f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def issue(token_obj):
    """Give a :class:`~realtime.models.PublishToken` a new secret; return the token to show once.

    The caller saves the object.
    """
    prefix, token = new_token()
    token_obj.prefix = prefix
    token_obj.secret_hash = hash_token(token)
    return token


def authenticate(presented):
    """Return the :class:`Credential` of a presented token, or None if it is not valid.

    Inactive database tokens are not valid. Comparisons use
    :func:`hmac.compare_digest` so timing does not reveal how much matched.
    Settings tokens are checked first and never touch the database; looking
    up an ``rtp_`` token does, and lets :class:`django.db.DatabaseError`
    propagate when the database is unavailable (that is not a bad token).
    """
    if not presented or len(presented) > 200:
        return None
    digest = hash_token(presented)
    credential = _from_settings(digest)
    if credential is not None:
        return credential
    return _from_database(presented, digest)


def _from_database(presented, digest):
    from .models import PublishToken

    if not presented.startswith(TOKEN_PREFIX):
        return None
    prefix = presented[len(TOKEN_PREFIX) :].split("_", 1)[0]
    token = PublishToken.objects.filter(prefix=prefix, active=True).first()
    if token is None or not hmac.compare_digest(digest, token.secret_hash):
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        PublishToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return Credential(f"db:{token.pk}", token.name, tuple(token.patterns))


def _from_settings(digest):
    found = None
    for entry in setting("PUBLISH_TOKENS"):
        # Check every entry, so the time taken does not say which one matched.
        if entry["secret"] and hmac.compare_digest(digest, hash_token(entry["secret"])):
            found = found or entry
    if found is None:
        return None
    return Credential(f"settings:{found['name']}", found["name"], tuple(found["streams"]))
