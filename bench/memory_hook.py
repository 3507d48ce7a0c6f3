"""The ASGI app of ``python -m bench.memory --tracemalloc``: the demo project's, with a heap probe.

Importing this module starts :mod:`tracemalloc` (``BENCH_TRACEMALLOC_FRAMES``
frames per allocation, 25 unless set) and installs two
signal handlers in the server process:

* ``SIGUSR1`` takes the baseline: a garbage collection, a snapshot, the
  number of live objects per type and of asyncio tasks;
* ``SIGUSR2`` takes the same again and writes the difference as JSON to the
  file named by ``BENCH_MEMORY_DUMP`` (written to a temporary name, then
  renamed, so a reader never sees half of it).

The difference is grouped three ways: by the line that allocated
(``lineno``), by the first frame outside the standard library counting from
the allocation outwards (``caller``: who asked for the dict, the task or the
queue), by the package of that frame (``package``), and by the last few
such frames (``path``, innermost first).
"""

import asyncio
import gc
import json
import os
import signal
import sys
import sysconfig
import tracemalloc
from collections import Counter

tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", 25)))

from project.asgi import application  # noqa: E402,F401

STDLIB = sysconfig.get_paths()["stdlib"]
TOP = 40
#: Frames outside the standard library shown per allocation path.
PATH_FRAMES = 5
_baseline = None


def _package(filename):
    if filename.startswith(STDLIB) and "site-packages" not in filename:
        return "stdlib:" + os.path.relpath(filename, STDLIB).split(os.sep)[0].removesuffix(".py")
    if "site-packages" in filename:
        return filename.split("site-packages" + os.sep, 1)[1].split(os.sep)[0].removesuffix(".py")
    if filename.startswith("<"):
        return filename
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return os.path.relpath(filename, root).split(os.sep)[0]


def _short(frame):
    name = frame.filename
    if "site-packages" + os.sep in name:
        name = name.split("site-packages" + os.sep, 1)[1]
    elif name.startswith(STDLIB):
        name = "stdlib/" + os.path.relpath(name, STDLIB)
    else:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        name = os.path.relpath(name, root)
    return f"{name}:{frame.lineno}"


def _caller(traceback):
    """The innermost frame of ``traceback`` outside the standard library (or the innermost)."""
    for frame in reversed(traceback):  # tracemalloc keeps the most recent call last
        if not _package(frame.filename).startswith(("stdlib:", "<")):
            return frame
    return traceback[-1]


def _state():
    gc.collect()
    types = Counter(type(obj).__qualname__ for obj in gc.get_objects())
    try:
        tasks = len(asyncio.all_tasks(asyncio.get_event_loop()))
    except Exception:
        tasks = -1
    return tracemalloc.take_snapshot(), types, tasks


def _on_baseline(signum, frame):
    global _baseline
    _baseline = _state()


def _on_dump(signum, frame):
    snapshot, types, tasks = _state()
    base_snapshot, base_types, base_tasks = _baseline
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    snapshot = snapshot.filter_traces(ignore)
    base_snapshot = base_snapshot.filter_traces(ignore)
    by_line = snapshot.compare_to(base_snapshot, "lineno")
    by_trace = snapshot.compare_to(base_snapshot, "traceback")
    callers, packages, paths = Counter(), Counter(), Counter()
    for stat in by_trace:
        frame = _caller(stat.traceback)
        callers[_short(frame)] += stat.size_diff
        packages[_package(frame.filename)] += stat.size_diff
        outside = [_short(f) for f in stat.traceback if not _package(f.filename).startswith(("stdlib:", "<"))]
        paths[" < ".join(reversed(outside[-PATH_FRAMES:])) or _short(stat.traceback[-1])] += stat.size_diff
    result = {
        "traced_diff": sum(s.size_diff for s in by_line),
        "tasks": [base_tasks, tasks],
        "lineno": [[_short(s.traceback[-1]), s.size_diff, s.count_diff] for s in by_line[:TOP]],
        "caller": callers.most_common(TOP),
        "package": packages.most_common(),
        "path": paths.most_common(TOP),
        "types": (types - base_types).most_common(TOP),
    }
    path = os.environ["BENCH_MEMORY_DUMP"]
    with open(path + ".tmp", "w") as fh:
        json.dump(result, fh)
    os.replace(path + ".tmp", path)


signal.signal(signal.SIGUSR1, _on_baseline)
signal.signal(signal.SIGUSR2, _on_dump)
print("bench.memory_hook: tracemalloc on; SIGUSR1 = baseline, SIGUSR2 = dump", file=sys.stderr)
