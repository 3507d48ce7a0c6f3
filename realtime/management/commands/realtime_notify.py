import json

from channels.layers import InMemoryChannelLayer
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from realtime import layer
from realtime.api import notify
from realtime.conf import setting
from realtime.exceptions import RealtimeError
from realtime.streams import BROADCAST, STAFF, user_stream


class Command(BaseCommand):
    help = gettext_lazy(
        "Publish a message from the command line, e.g. "
        "realtime_notify --user alice --text 'Your export is ready'."
    )

    def add_arguments(self, parser):
        target = parser.add_argument_group(_("targets (at least one; they combine)"))
        target.add_argument(
            "--user",
            action="append",
            default=[],
            metavar="USERNAME",
            help=_("A user's private stream; repeatable."),
        )
        target.add_argument(
            "--stream", action="append", default=[], metavar="NAME", help=_("A stream by name; repeatable.")
        )
        target.add_argument("--broadcast", action="store_true", help=_("The broadcast stream (everyone)."))
        target.add_argument("--staff", action="store_true", help=_("The staff stream."))
        parser.add_argument("--type", default="notice", help=_("Message type (default: notice)."))
        body = parser.add_mutually_exclusive_group()
        body.add_argument("--payload", metavar="JSON", help=_("The payload, a JSON object."))
        body.add_argument("--text", help=_("Shortcut for --payload '{\"text\": TEXT}'."))
        parser.add_argument(
            "--ephemeral", action="store_true", help=_("Do not store the message (seq null, never replayed).")
        )
        parser.add_argument("--idempotency-key", help=_("Publish at most once per stream for this key."))
        parser.add_argument(
            "--no-inbox",
            action="store_true",
            help=_("Do not make it an inbox item (stored messages are, by default: unread counts, mark read)."),
        )
        parser.add_argument(
            "--store-only",
            action="store_true",
            help=_(
                "With a channel layer this process cannot push through (the in-memory one), "
                "store the message and succeed: connected clients fetch it on their next heartbeat."
            ),
        )

    def handle(self, *args, **options):
        targets = self._targets(options)
        payload = self._payload(options)
        live = self._can_push_live()
        if options["ephemeral"] and not live:
            raise CommandError(self._no_layer_message(stored=False))
        try:
            results = notify(
                targets,
                options["type"],
                payload,
                persist=not options["ephemeral"],
                idempotency_key=options["idempotency_key"],
                inbox=not (options["ephemeral"] or options["no_inbox"]),
            )
        except RealtimeError as exc:
            raise CommandError(str(exc)) from exc
        for result in results:
            line = f"{result.stream} seq={'-' if result.seq is None else result.seq} id={result.id}"
            if not result.created:
                line += " " + _("(already published with this idempotency key; not sent again)")
            self.stdout.write(line)
        if not live:
            if not options["store_only"]:
                raise CommandError(self._no_layer_message(stored=True))
            self.stderr.write(
                _("Stored only: connected clients receive it on their next heartbeat (within %(seconds)s s).")
                % {"seconds": setting("HEARTBEAT_INTERVAL")}
            )

    def _targets(self, options):
        targets = list(options["stream"])
        User = get_user_model()
        for username in options["user"]:
            user = User._default_manager.filter(**{User.USERNAME_FIELD: username}).first()
            if user is None:
                raise CommandError(_("No user %(username)r.") % {"username": username})
            targets.append(user_stream(user))
        if options["broadcast"]:
            targets.append(BROADCAST)
        if options["staff"]:
            targets.append(STAFF)
        if not targets:
            raise CommandError(_("Say where to publish: --user, --stream, --broadcast or --staff."))
        return targets

    def _payload(self, options):
        if options["text"] is not None:
            return {"text": options["text"]}
        if options["payload"] is None:
            return {}
        try:
            payload = json.loads(options["payload"])
        except ValueError as exc:
            raise CommandError(_("--payload is not valid JSON: %(error)s") % {"error": exc}) from None
        if not isinstance(payload, dict):
            raise CommandError(_('--payload must be a JSON object, e.g. \'{"text": "hi"}\'.'))
        return payload

    def _can_push_live(self):
        configured = layer.get_layer()
        return configured is not None and not (isinstance(configured, InMemoryChannelLayer) and not layer.serving())

    def _no_layer_message(self, stored):
        first = (
            _(
                "The message was stored but cannot be pushed live from this process: the "
                "channel layer %(alias)r is in-memory (or missing), and an in-memory layer only "
                "reaches sockets served by the process that publishes. Connected clients will "
                "still receive it on their next heartbeat ping (within %(seconds)s s)."
            )
            if stored
            else _(
                "Nothing was sent: an ephemeral message is never stored, and the channel layer "
                "%(alias)r is in-memory (or missing), so it cannot reach sockets served by "
                "another process."
            )
        ) % {"alias": setting("CHANNEL_LAYER"), "seconds": setting("HEARTBEAT_INTERVAL")}
        fix = _(
            "To push live from commands, configure channels_redis.core.RedisChannelLayer in "
            "CHANNEL_LAYERS (in the demo project: set REDIS_URL). To accept delivery on the "
            "next heartbeat, pass --store-only."
        )
        return f"{first} {fix}"
