"""The supported Django × Python combinations, one nox session each.

    .venv/bin/nox -l                                   # list the sessions
    .venv/bin/nox -s "tests-3.13(django='5.2')"        # one combination
    .venv/bin/nox -s tests -- -k inbox                 # all, with pytest arguments

Each session installs the test requirements with that Django into its own
virtualenv (under .nox/) and runs the suite without the browser tests, with
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
# Django 6.0 and 6.1 join this list once this machine kind's package index
# carries them (it stops at 5.2.x); see CHANGELOG.
DJANGOS = ["5.2"]


@nox.session(python=PYTHONS)
@nox.parametrize("django", DJANGOS)
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
