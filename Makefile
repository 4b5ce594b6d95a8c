# Two commands on a fresh Debian machine:  `make up`  and  `make test`.
# Everything Python goes into ./.venv; Redis and PostgreSQL binaries come from apt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: up test install system-packages lint clean studio

up: install
	$(BIN)/runyard up

test: install
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest

install: system-packages $(BIN)/runyard

$(BIN)/runyard: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Redis for the broker and streams; PostgreSQL server binaries for the store tests; a
# Docker engine and debootstrap (the tests build their run images locally, Debian 12 and
# Debian 11 for the oldest Python a run may have: no registry);
# Debian's docker-registry, the image registry the many-hosts tests start; Chromium for the
# Studio's browser tests; venv support when the system Python lacks it.
system-packages:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v dockerd >/dev/null || missing="$$missing docker.io"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| missing="$$missing postgresql"; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

lint: install
	$(BIN)/python -m ruff check . && $(BIN)/python -m ruff format --check .

# Rebuild the Studio's assets (api/studio/static, committed and shipped in the package)
# from the pinned npm packages in api/studio/web. Only needed after changing the front end.
studio:
	cd api/studio/web && npm ci --no-audit --no-fund && npm run build

clean:
	rm -rf $(VENV)
