"""A separate publishing process for the end-to-end tests.

    python -m tests.publisher STREAM COUNT [--type T] [--start K] [--delay S] [--pad BYTES]
    python -m tests.publisher STREAM,STREAM,... COUNT --batches SEED

Publishes COUNT messages ``{"n": K..K+COUNT-1}`` (plus ``"pad"``: that many
"x" with ``--pad``) to STREAM with realtime.notify()
using tests.e2e_settings (the test database, REDIS_URL's layer) and prints the
seqs it got, one per line.

With ``--batches``, publishes COUNT ``notify_many()`` batches instead, each to
a random selection of the streams in a random order (some twice), and prints
``stream seq`` per message.
"""

import argparse
import os
import random
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
    parser.add_argument("--batches", type=int, default=None, metavar="SEED")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.e2e_settings")
    import django

    django.setup()
    from realtime import notify, notify_many

    if args.batches is not None:
        rng = random.Random(args.batches)
        names = args.stream.split(",")
        for _ in range(args.count):
            picked = rng.sample(names, rng.randint(1, len(names)))
            picked += rng.sample(picked, rng.randint(0, min(2, len(picked))))
            for result in notify_many([(name, args.type, {"n": i}) for i, name in enumerate(picked)]):
                sys.stdout.write(f"{result.stream} {result.seq}\n")
        sys.stdout.flush()
        return

    for n in range(args.start, args.start + args.count):
        payload = {"n": n, "pad": "x" * args.pad} if args.pad else {"n": n}
        result = notify(args.stream, args.type, payload)
        sys.stdout.write(f"{result.seq}\n")
        if args.delay:
            time.sleep(args.delay)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
