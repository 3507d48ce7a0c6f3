# The two commands of the README: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test venv deps system-deps migrate demo-user bench messages clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-installs only when a requirements file changed.
$(VENV)/.deps: requirements.txt requirements-dev.txt | $(PY)
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

deps: $(VENV)/.deps

system-deps:
	bash scripts/system-deps.sh

migrate: deps
	$(PY) manage.py migrate --noinput

demo-user: migrate
	$(PY) manage.py shell -c "from django.contrib.auth.models import User; u = User.objects.filter(username='demo').first() or User.objects.create_superuser('demo', 'demo@example.com', 'demo-password'); print('\nDemo login: demo / demo-password  ->  http://$(HOST):$(PORT)/\n')"

run: demo-user
	$(PY) -m daphne -b $(HOST) -p $(PORT) project.asgi:application

test: deps system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

$(VENV)/.bench-deps: requirements-bench.txt $(VENV)/.deps
	$(PY) -m pip install -q -r requirements-bench.txt
	touch $@

bench/node_modules: bench/package.json bench/package-lock.json
	@command -v npm >/dev/null || (echo "make bench needs Node.js and npm (apt-get install nodejs npm)" >&2; exit 1)
	cd bench && npm ci --no-audit --no-fund --silent
	touch $@

bench: deps system-deps $(VENV)/.bench-deps bench/node_modules
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.publish
	$(PY) -m bench.inbox
	$(PY) -m bench.pings
	$(PY) -m bench.share

# Refresh and compile realtime's translations after changing user-visible strings.
messages: deps
	cd realtime && DJANGO_SETTINGS_MODULE=project.settings PYTHONPATH=.. ../$(PY) -m django makemessages -l zh_Hans --no-obsolete
	cd realtime && DJANGO_SETTINGS_MODULE=project.settings PYTHONPATH=.. ../$(PY) -m django compilemessages -l zh_Hans

clean:
	rm -rf $(VENV) build db.sqlite3 .pytest_cache .hypothesis
