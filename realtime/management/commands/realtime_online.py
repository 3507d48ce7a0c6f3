import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from realtime import presence


class Command(BaseCommand):
    help = gettext_lazy("Show who is connected: users and connections per stream, from presence.")

    def add_arguments(self, parser):
        parser.add_argument("--stream", help=_("List the users connected to this stream."))
        parser.add_argument("--json", action="store_true", help=_("Print JSON instead of a table."))

    def handle(self, *args, **options):
        stream, as_json = options["stream"], options["json"]
        backend = presence.get_backend()
        if not backend.shared:
            raise CommandError(
                _(
                    "Presence is kept in each server process's memory (%(backend)s), so this "
                    "command cannot see any connection. Use a Redis channel layer (in the demo "
                    'project: set REDIS_URL) or set REALTIME["PRESENCE"] = {"BACKEND": '
                    '"realtime.presence.RedisPresence", "URL": ...}.'
                )
                % {"backend": type(backend).__name__}
            )
        users = self._usernames(backend.online_users(stream))
        if stream is not None:
            self._print(
                as_json, {"stream": stream, "users": users}, [f"{name} ({pk})" for pk, name in users.items()]
            )
            return
        counts = backend.stream_counts()
        lines = [_("%(count)d user(s) online") % {"count": len(users)}]
        width = max([len(name) for name in counts] + [6])
        lines.append(f"{_('stream'):<{width}}  {_('users'):>6}  {_('connections'):>11}")
        for name, count in sorted(counts.items()):
            lines.append(f"{name:<{width}}  {count['users']:>6}  {count['connections']:>11}")
        self._print(as_json, {"users": users, "streams": counts}, lines)

    def _usernames(self, pks):
        User = get_user_model()
        names = dict(User._default_manager.filter(pk__in=pks).values_list("pk", User.USERNAME_FIELD))
        return {pk: names.get(pk, "?") for pk in pks}

    def _print(self, as_json, data, lines):
        if as_json:
            self.stdout.write(json.dumps(data, default=str, sort_keys=True))
        else:
            for line in lines:
                self.stdout.write(line)
