"""README's "Plugging it into your project", followed in a fresh ``startproject``.

The test reads the section's code blocks from README.md, finds each by its
first line (``# mysite/settings.py``, ``# mysite/asgi.py``, ...), applies them
to a new ``django-admin startproject mysite`` as a reader would, and runs the
section's commands with this interpreter and the checkout on ``PYTHONPATH``.
It signs in through the admin in Chromium and checks that the README's
``notify()``, run from ``manage.py shell``, reaches the README's
``realtime.on(...)`` handler, the channel layer being the README's Redis one
(pointed at the session's Redis through ``REDIS_URL``). It does so twice:

* ``runserver``, what the README runs in development: daphne's runserver,
  which serves static files itself;
* ``daphne mysite.asgi:application``, what it runs in production, after
  ``collectstatic``; Playwright stands in for the web server that serves
  ``STATIC_ROOT``. Only this one loads ``asgi.py`` the way daphne does
  (runserver sets Django up before importing it).

Only the page holding the template snippet, its URL and ``STATIC_ROOT`` are
the test's own. The last test builds the wheel of the checkout and checks that
it ships what the Python files alone do not: templates, static files and
translations.
"""

import ast
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
import zipfile
from urllib.parse import urlsplit

import pytest

from tests.procs import ROOT, free_port, wait_for_port

CHROMIUM = "/usr/bin/chromium"
SECTION = "## Plugging it into your project"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.S | re.M)
PASSWORD = "quickstart-password-1"

#: What the test adds to the README's snippets: a page holding the template
#: block, its URL, and the STATIC_ROOT the README tells production to set.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>quickstart</title></head>
<body>
{snippet}
</body></html>
"""
GLUE_SETTINGS = """
# test glue
TEMPLATES[0]["DIRS"] = [BASE_DIR / "templates"]
STATIC_ROOT = BASE_DIR / "static-root"
"""
GLUE_URLS = """
# test glue
from django.views.generic import TemplateView

urlpatterns += [path("page/", TemplateView.as_view(template_name="page.html"))]
"""


def readme_section():
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else None]


def readme_blocks():
    """``[(language, code)]`` of the plug-in section's fenced blocks, in order."""
    return FENCE.findall(readme_section())


def block(first_line, language=None):
    """The code of the one block of the section whose first line is ``first_line`` (or of ``language``)."""
    found = [
        code
        for lang, code in readme_blocks()
        if (lang == language if language else code.splitlines()[0].strip() == first_line)
    ]
    assert len(found) == 1, f"README's plug-in section needs exactly one block starting with {first_line or language!r}"
    return found[0]


def apply_settings(settings_py, snippet):
    """Edit ``settings.py`` as the README says: names it already assigns in place, the rest appended."""
    source = settings_py.read_text()
    lines = source.splitlines(keepends=True)
    existing = {
        target.id: node
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    replaced, appended = [], []
    for node in ast.parse(snippet).body:
        code = ast.get_source_segment(snippet, node, padded=True)
        name = node.targets[0].id if isinstance(node, ast.Assign) else None
        if name in existing:
            replaced.append((existing[name].lineno, existing[name].end_lineno, code))
        else:
            appended.append(code)
    for first, last, code in sorted(replaced, reverse=True):
        lines[first - 1 : last] = [code + "\n"]
    settings_py.write_text("".join(lines) + "\n\n" + "\n\n".join(appended) + "\n")


def manage_commands(sh_block):
    """The ``python manage.py ...`` lines of a shell block, as argv lists for this interpreter."""
    argvs = []
    for line in sh_block.splitlines():
        words = line.split("#", 1)[0].split()
        if words[:2] == ["python", "manage.py"]:
            argvs.append([sys.executable, *words[1:]])
    return argvs


class Project:
    """A ``startproject`` folder, the environment its commands run in, and the README's runserver."""

    def __init__(self, path, redis_url, runserver):
        self.path = path
        self.runserver = runserver
        # Nothing of the suite's own configuration leaks in (DJANGO_SETTINGS_MODULE above all).
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REALTIME_"))}
        self.env = {**env, "PYTHONPATH": str(ROOT), "REDIS_URL": redis_url}

    def run(self, argv, **env):
        result = subprocess.run(
            argv, cwd=self.path, env={**self.env, **env}, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{' '.join(argv[1:])} failed:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def manage(self, *args, **env):
        return self.run([sys.executable, "manage.py", *args], **env)


class Server:
    """A server process of the project, in its own process group (runserver's reloader has a child).

    ``static_root``: the folder a web server in front of it would serve at ``/static/``, if any.
    """

    def __init__(self, project, argv, port, static_root=None):
        self.url = f"http://127.0.0.1:{port}"
        self.static_root = static_root
        self.log = project.path / f"{argv[1]}-{port}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                argv, cwd=project.path, env=project.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_port(port, timeout=30, proc=self.proc, log=str(self.log))

    def output(self):
        return self.log.read_text()

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def project(tmp_path, redis_url):
    """A fresh ``startproject mysite`` with the README's plug-in section applied and migrated."""
    site = tmp_path / "mysite"
    site.mkdir()
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(site)], check=True)
    apply_settings(site / "mysite" / "settings.py", block("# mysite/settings.py"))
    (site / "mysite" / "asgi.py").write_text(block("# mysite/asgi.py"))
    (site / "mysite" / "urls.py").write_text(block("# mysite/urls.py"))
    with open(site / "mysite" / "settings.py", "a") as fh:
        fh.write(GLUE_SETTINGS)
    with open(site / "mysite" / "urls.py", "a") as fh:
        fh.write(GLUE_URLS)
    (site / "templates").mkdir()
    (site / "templates" / "page.html").write_text(PAGE.format(snippet=block(None, language="django")))

    run = manage_commands(block("python manage.py migrate"))
    assert [argv[2] for argv in run] == ["migrate", "runserver"], run
    project = Project(site, redis_url, runserver=run[1])
    project.run(run[0])
    project.manage(
        "createsuperuser", "--noinput", "--username", "alice", "--email", "alice@example.com",
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    return project


@pytest.fixture
def chromium():
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"{CHROMIUM} is missing: run `make test` (it installs it) or `apt-get install chromium`.", pytrace=False
        )
    from playwright.sync_api import sync_playwright

    from tests.browser.conftest import CHROMIUM_ARGS

    # Started and stopped by this test: Playwright's sync API marks an event
    # loop as running in this thread for as long as it lives.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def start_runserver(project, port):
    """Development: the README's ``python manage.py runserver``, on a free port."""
    return Server(project, [*project.runserver, f"127.0.0.1:{port}"], port)


def start_daphne(project, port):
    """Production: ``collectstatic``, then the README's ``daphne mysite.asgi:application``."""
    section = readme_section()
    assert "manage.py collectstatic" in section
    (app,) = set(re.findall(r"`daphne (mysite\.asgi:application)`", section))
    project.manage("collectstatic", "--noinput")
    argv = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), app]
    server = Server(project, argv, port, static_root=project.path / "static-root")
    # daphne serves no static files, as the README warns: the web server must.
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(f"{server.url}/static/realtime/realtime.js", timeout=10)
    answer.value.close()
    assert answer.value.code == 404
    return server


@pytest.mark.browser
@pytest.mark.e2e
@pytest.mark.parametrize("start", [start_runserver, start_daphne], ids=["runserver", "daphne"])
def test_readme_plug_in_section_works_in_a_fresh_project(project, chromium, start):
    server = start(project, free_port())
    try:
        page = chromium.new_page(base_url=server.url)
        if server.static_root is not None:
            # The web server in front of daphne: STATIC_URL served from STATIC_ROOT.
            def web_server(route):
                path = server.static_root / urlsplit(route.request.url).path.removeprefix("/static/")
                if path.is_file():
                    route.fulfill(path=path)
                else:
                    route.fulfill(status=404)

            page.route("**/static/**", web_server)
        console, errors = [], []
        page.on("console", lambda msg: console.append(msg.text))
        page.on("pageerror", lambda error: errors.append(str(error)))

        page.goto("/admin/login/?next=/page/")
        page.fill("#id_username", "alice")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url("**/page/")
        # The client's static files loaded and it connected as alice.
        page.wait_for_function("window.realtime && window.realtime.state === 'open'", timeout=15000)

        # The README's notify(), then one to alice alone: the socket knows who signed in.
        readme_notify = block("# python manage.py shell")
        (title,) = re.findall(r'"title": "([^"]+)"', readme_notify)
        with page.expect_console_message(lambda msg: msg.text == "notice: Hello, alice", timeout=15000):
            project.manage("shell", "-c", readme_notify)
            project.manage(
                "shell", "-c",
                "from django.contrib.auth.models import User; from realtime import notify; "
                "notify(User.objects.get(username='alice'), 'notice', {'title': 'Hello, alice'})",
            )
        assert [text for text in console if text.startswith("notice:")] == [f"notice: {title}", "notice: Hello, alice"]
        assert errors == []
        page.close()
    finally:
        server.stop()
    output = server.output()
    assert "Traceback" not in output, output
    if start is start_runserver:
        assert "System check identified no issues" in output, output


def test_wheel_ships_templates_static_files_and_translations(tmp_path):
    """``pip wheel`` of a copy of the checkout (building in place would write build/ into it)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    install = block('pip install "django-realtime-notify[redis]"').splitlines()[0]
    name, extra = re.fullmatch(r'pip install "([\w-]+)\[(\w+)\]"', install).groups()
    assert name == pyproject["project"]["name"]
    assert any(r.startswith("channels-redis") for r in pyproject["project"]["optional-dependencies"][extra])

    source = tmp_path / "src"
    shutil.copytree(ROOT / "realtime", source / "realtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for filename in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / filename, source / filename)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    offline = re.search(r"No matching distribution found for setuptools|NewConnectionError", result.stderr)
    if result.returncode and offline:
        pytest.fail(
            "pip cannot fetch the build backend (setuptools>=69) to build the wheel: give this machine "
            f"access to PyPI or a local index with setuptools.\n{result.stderr[-500:]}",
            pytrace=False,
        )
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "dist").glob("django_realtime_notify-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert {
        "realtime/static/realtime/realtime.js",
        "realtime/static/realtime/autostart.js",
        "realtime/templates/realtime/client.html",
        "realtime/locale/zh_Hans/LC_MESSAGES/django.mo",
        "realtime/migrations/0001_initial.py",
    } <= names
    assert f"Name: {name}" in metadata and f"Provides-Extra: {extra}" in metadata
