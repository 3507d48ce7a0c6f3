"""The supported Django × Python combinations, one nox session each.

    .venv/bin/nox -l                                   # list the sessions
    .venv/bin/nox -s "tests(python='3.13', django='6.1')"   # one combination
    .venv/bin/nox -s tests -- -k inbox                 # all, with pytest arguments

Each session installs the test requirements with that Django into its own
virtualenv (under .nox/) and runs the suite without the browser tests but
one (:data:`BROWSER_SMOKE`: the template tag, the client and a real Chromium
end to end), with
DeprecationWarnings and PendingDeprecationWarnings raised from realtime's own
code as errors (Django 5.2 warns of what 6.0 and 6.1 remove), so the next
Django release does not surprise anyone. `make test` runs the default
combination (the .venv: Django 5.2 on Python 3.11, the oldest), browser tests
included; `.ci/run` adds the newest combination here.
"""

import glob
import os

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
# A missing interpreter fails the session: no silent skips.
nox.options.error_on_missing_interpreters = True

# pyenv's shims answer python3.13 only for the versions pyenv has selected;
# the interpreters themselves are found here whatever is selected.
_PYENV = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin")), reverse=True)
os.environ["PATH"] = os.pathsep.join([*_PYENV, os.environ.get("PATH", "")])

PYTHONS = ["3.11", "3.12", "3.13"]
DJANGOS = ["5.2", "6.0", "6.1"]
# Django 6.0 and later need Python 3.12 or newer.
COMBINATIONS = [
    (python, django) for django in DJANGOS for python in PYTHONS if django == "5.2" or python >= "3.12"
]


#: The browser test each combination runs: 10 tabs of the test page sharing one socket, 1,000 messages.
BROWSER_SMOKE = "tests/browser/test_sharing.py::test_ten_tabs_hold_one_socket_and_each_gets_every_message_once[worker]"


@nox.session
@nox.parametrize("python,django", COMBINATIONS)
def tests(session, django):
    session.install("-q", "-r", "requirements-dev.txt", f"Django~={django}.0")
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider",
        "--ignore=tests/browser", "--ignore=tests/test_quickstart.py",
        "-W", "error::DeprecationWarning:realtime",
        # Django 5.2 raises what 6.1 removes as PendingDeprecationWarning.
        "-W", "error::PendingDeprecationWarning:realtime",
        *session.posargs,
    )
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", BROWSER_SMOKE)
