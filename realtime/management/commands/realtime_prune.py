from django.core.management.base import BaseCommand

from realtime import store
from realtime.conf import get_config


class Command(BaseCommand):
    help = (
        "Delete log entries older than REALTIME['RETENTION_SECONDS'] or beyond "
        "REALTIME['RETENTION_COUNT'] per stream. Run it from cron."
    )

    def add_arguments(self, parser):
        parser.add_argument("--max-age", type=int, help="Seconds to keep (overrides RETENTION_SECONDS).")
        parser.add_argument("--max-count", type=int, help="Messages per stream to keep (overrides RETENTION_COUNT).")

    def handle(self, *args, max_age=None, max_count=None, **options):
        config = get_config()
        max_age = config["RETENTION_SECONDS"] if max_age is None else max_age
        max_count = config["RETENTION_COUNT"] if max_count is None else max_count
        deleted = store.prune(max_age=max_age, max_count=max_count)
        self.stdout.write(f"Pruned {deleted} message(s).")
