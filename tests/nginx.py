"""nginx in front of test daphne processes, configured from docs/deployment.md.

The site configuration is the guide's ```nginx block itself. Only what cannot
be the same on a test machine is substituted, and every substitution must
match the guide exactly where it is expected, so a change to the guide either
is what the tests run or fails them loudly. The block belongs in nginx's
``http {}`` context; :class:`NginxServer` wraps it in the smallest complete
nginx.conf that keeps every file inside the test's folder.
"""

import os
import re
import shutil
import signal
import subprocess

import pytest

from tests.procs import ROOT, _tail, free_port, wait_for_port

GUIDE = ROOT / "docs" / "deployment.md"
FENCE = re.compile(r"^```nginx\n(.*?)^```$", re.S | re.M)
UPSTREAM = re.compile(r"upstream\s+\w+\s*\{(.*?)\}", re.S)
UPSTREAM_SERVER = re.compile(r"^(\s*server\s+)(\S+?)(\s[^;]*)?;", re.M)
LISTEN = re.compile(r"^(\s*listen\s+)80;", re.M)

#: The response header the wrapper adds: the backend nginx chose (``$upstream_addr``).
UPSTREAM_HEADER = "X-Upstream"

SKELETON = """\
pid {tmp}/nginx.pid;
error_log {tmp}/error.log notice;
{user}
events {{
    worker_connections 1024;
}}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    # Instrumentation of the test, not part of the guide: which backend served
    # each request and each WebSocket (the guide's blocks add no headers of
    # their own, so they inherit this one).
    add_header {header} $upstream_addr always;

{site}
}}
"""


def guide_site():
    """The one ```nginx block of docs/deployment.md, as written."""
    blocks = FENCE.findall(GUIDE.read_text())
    assert len(blocks) == 1, f"docs/deployment.md must have exactly one ```nginx block, found {len(blocks)}"
    return blocks[0]


def site_config(backends, port, overrides=None, site=None):
    """The guide's block with its upstream servers at ``backends`` (``host:port`` strings)
    and its ``listen 80;`` at 127.0.0.1:``port``.

    ``overrides`` maps a directive to the value every one of its occurrences
    gets instead (for a test that scales a timeout down); each must occur.
    """
    site = guide_site() if site is None else site
    upstreams = UPSTREAM.findall(site)
    assert len(upstreams) == 1, "the guide's nginx block must define one upstream"
    servers = UPSTREAM_SERVER.findall(upstreams[0])
    assert len(servers) == len(backends), (
        f"the guide's upstream lists {len(servers)} servers; the test starts {len(backends)}"
    )
    addresses = iter(backends)
    body = UPSTREAM_SERVER.sub(lambda m: f"{m[1]}{next(addresses)}{m[3] or ''};", upstreams[0])
    site = site.replace(upstreams[0], body, 1)
    site, listens = LISTEN.subn(rf"\g<1>127.0.0.1:{port};", site)
    assert listens == 1, "the guide's server block must say `listen 80;` once"
    for directive, value in (overrides or {}).items():
        site, found = re.subn(rf"^(\s*{re.escape(directive)}\s+)[^;]*;", rf"\g<1>{value};", site, flags=re.M)
        assert found, f"the guide's nginx block has no {directive}"
    return site


def executable():
    """nginx's path; it lives in /usr/sbin, which an unprivileged PATH may lack."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin:/sbin")
    if found is None:
        pytest.fail(
            "nginx is not installed: run `make test` (it installs it) or `apt-get install nginx`.",
            pytrace=False,
        )
    return found


class NginxServer:
    """nginx in the foreground, every path inside ``workdir``, on a free loopback port."""

    def __init__(self, workdir, backends, overrides=None):
        self.exe = executable()
        self.port = free_port()
        self.workdir = os.path.join(str(workdir), f"nginx-{self.port}")
        os.makedirs(self.workdir)
        self.conf = os.path.join(self.workdir, "nginx.conf")
        self.error_log = os.path.join(self.workdir, "error.log")
        with open(self.conf, "w") as fh:
            fh.write(SKELETON.format(
                tmp=self.workdir,
                # Run as root (in a container), nginx would switch its workers
                # to "nobody", who cannot enter the test's private folder.
                user="user root;" if os.geteuid() == 0 else "",
                header=UPSTREAM_HEADER,
                site=site_config(backends, self.port, overrides),
            ))
        self.proc = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self):
        return f"ws://127.0.0.1:{self.port}/ws/realtime/"

    def start(self):
        command = [self.exe, "-p", self.workdir + "/", "-c", self.conf, "-g", "daemon off;"]
        # Errors found before the configuration's error_log applies go to stderr.
        check = subprocess.run([*command, "-t"], capture_output=True, text=True)
        if check.returncode:
            pytest.fail(f"nginx refused the configuration {self.conf}:\n{check.stderr}", pytrace=False)
        self.proc = subprocess.Popen(
            command, stdout=open(os.path.join(self.workdir, "stderr.log"), "ab"), stderr=subprocess.STDOUT
        )
        wait_for_port(self.port, proc=self.proc, log=self.error_log)
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: open sockets are closed
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def errors(self):
        return _tail(self.error_log, 100)


def backend_port(headers):
    """The port of the backend that served a response, from its ``X-Upstream`` header.

    After a failed attempt nginx lists every backend it tried
    (``127.0.0.1:8001, 127.0.0.1:8002``): the last one answered.
    """
    value = headers.get(UPSTREAM_HEADER)
    if not value:
        return None
    return int(value.split(",")[-1].strip().rsplit(":", 1)[1])

