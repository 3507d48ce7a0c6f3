"""Real processes for end-to-end tests: a private redis-server and daphne servers.

Every process listens on loopback only, on a free port, and is stopped by the
fixture that started it. A missing executable fails the test with the fix.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port, timeout=20.0, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout}s:\n{_tail(log)}")


def _tail(path, lines=40):
    if not path or not os.path.exists(path):
        return ""
    with open(path, errors="replace") as fh:
        return "".join(fh.readlines()[-lines:])


def require(executable, fix):
    path = shutil.which(executable)
    if path is None:
        pytest.fail(f"{executable} is not installed: {fix}", pytrace=False)
    return path


class RedisServer:
    """A private redis-server that keeps nothing on disk; can be stopped and restarted on its port."""

    def __init__(self, workdir, args=()):
        self.exe = require("redis-server", "run `make test` (it installs it) or `apt-get install redis-server`.")
        self.port = free_port()
        self.workdir = str(workdir)
        self.log = os.path.join(self.workdir, f"redis-{self.port}.log")
        #: More command-line options, e.g. ``["--replicaof", "127.0.0.1", "6379"]``.
        self.args = list(args)
        self.proc = None

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self):
        return [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.workdir, "--logfile", self.log, *self.args]

    def start(self):
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc, log=self.log)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


class SentinelServer(RedisServer):
    """A Redis Sentinel (``redis-server sentinel.conf --sentinel``) watching ``master`` as ``name``.

    Quick to act, for tests: the master is down after 1 s without an answer.
    """

    def __init__(self, workdir, master, name="mymaster", quorum=2):
        super().__init__(workdir)
        self.conf = os.path.join(self.workdir, f"sentinel-{self.port}.conf")
        with open(self.conf, "w") as fh:  # the sentinel rewrites it as it learns
            fh.write(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\nlogfile {self.log}\n"
                f"sentinel monitor {name} 127.0.0.1 {master.port} {quorum}\n"
                f"sentinel down-after-milliseconds {name} 1000\n"
                f"sentinel failover-timeout {name} 5000\n"
            )

    def command(self):
        return [self.exe, self.conf, "--sentinel"]


class DaphneServer:
    """``daphne project.asgi:application`` in a child process, on a free port."""

    def __init__(self, workdir, env, name="daphne", app="project.asgi:application", port=None):
        self.app = app
        self.port = port or free_port()
        self.env = {**os.environ, **env}
        self.log = os.path.join(str(workdir), f"{name}-{self.port}.log")
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}/ws/realtime/"

    def command(self):
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), self.app]

    def start(self, timeout=30.0):
        self.proc = subprocess.Popen(
            self.command(), cwd=str(ROOT), env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, timeout=timeout, proc=self.proc, log=self.log)
        return self

    def kill(self):
        """SIGKILL: no close frames, no disconnect handlers, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def output(self):
        return _tail(self.log, 200)


class UvicornServer(DaphneServer):
    """The same application under uvicorn (websockets): realtime's plain ASGI path."""

    def command(self):
        return [
            sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1", "--port", str(self.port),
            "--ws", "websockets", "--no-access-log",
        ]


def publish(env, stream, count, start=0, procs=1, pad=0, delay=0.0):
    """Start ``procs`` processes publishing ``count`` messages in all (tests/publisher.py); wait with :func:`finish`."""
    per = count // procs
    children = []
    for i in range(procs):
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.publisher", stream, str(per), "--start", str(start + i * per), "--pad", str(pad), "--delay", str(delay)],
                cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.e2e_settings", **env, **_tmp_env()},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
        )
    return children


def _tmp_env():
    from django.conf import settings

    name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    return {"REALTIME_TEST_TMP": os.path.dirname(name)} if name else {}


def finish(children, timeout=180):
    for child in children:
        out, err = child.communicate(timeout=timeout)
        assert child.returncode == 0, err
