"""A separate publishing process for the end-to-end tests.

    python -m tests.publisher STREAM COUNT [--type T] [--start K] [--delay S] [--pad BYTES]

Publishes COUNT messages ``{"n": K..K+COUNT-1}`` (plus ``"pad"``: that many
"x" with ``--pad``) to STREAM with realtime.notify()
using tests.e2e_settings (the test database, REDIS_URL's layer) and prints the
seqs it got, one per line.
"""

import argparse
import os
import sys
import time


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("stream")
    parser.add_argument("count", type=int)
    parser.add_argument("--type", default="test.message")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--pad", type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.e2e_settings")
    import django

    django.setup()
    from realtime import notify

    for n in range(args.start, args.start + args.count):
        payload = {"n": n, "pad": "x" * args.pad} if args.pad else {"n": n}
        result = notify(args.stream, args.type, payload)
        sys.stdout.write(f"{result.seq}\n")
        if args.delay:
            time.sleep(args.delay)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
