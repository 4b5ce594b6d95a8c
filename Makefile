# Two commands on a fresh Debian machine:  `make up`  and  `make test`.
PYTHON ?= python3

.PHONY: up test install system-packages lint

up: install
	runyard up

test: install
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest

install: system-packages
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e '.[test]'

# Redis for the broker and streams; PostgreSQL server binaries for the store tests.
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

lint:
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .
