# The two commands of the README: `make demo` and `make test`. Each does its own set-up.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
# command:package pairs; a package is installed only when its command is missing (a machine
# may already have node and npm from elsewhere, which conflicts with Debian's npm package).
SYSTEM_COMMANDS := git:git dockerd:docker.io docker-registry:docker-registry /bin/busybox:busybox-static node:nodejs npm:npm docker-compose:docker-compose pg_ctlcluster:postgresql /usr/sbin/sshd:openssh-server chromium:chromium chromedriver:chromium-driver
PYTEST_ARGS ?=

.PHONY: demo test test-unit test-integration setup system-packages uv stack-down lint

demo: setup
	$(UV) run opsflow demo
	@echo "The stack keeps running for the Prefect UI; stop it with: $(UV) run opsflow stack down"

test: setup
	$(UV) run ruff check .
	$(UV) run lint-imports
	$(UV) run pytest $(PYTEST_ARGS)

# Only the tests that need no services (seconds; no system packages needed), or only those against the stack.
test-unit: uv
	$(UV) sync --frozen
	$(UV) run pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	$(UV) run pytest tests/integration $(PYTEST_ARGS)

setup: system-packages uv
	$(UV) sync --frozen

# Debian/Ubuntu packages, installed only when missing and only when we are root.
system-packages:
	@missing=""; for pair in $(SYSTEM_COMMANDS); do cmd=$${pair%%:*}; pkg=$${pair#*:}; \
	  command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing system packages:$$missing (run as root, or: sudo apt-get install$$missing)"; exit 1; fi; \
	fi

uv:
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --quiet --user uv || python3 -m pip install --quiet --break-system-packages --user uv

stack-down:
	$(UV) run opsflow stack down

lint:
	$(UV) run ruff check .
	$(UV) run lint-imports
