# The two commands of the README: `make demo` and `make test`. Each does its own set-up.
# One install per machine role (README "Install"): `make install-edge`, `make install-build`,
# `make install-webhook`; `make wheel` builds the package and its locked requirements per role.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
# command:package pairs; a package is installed only when its command is missing (a machine
# may already have node and npm from elsewhere, which conflicts with Debian's npm package).
# What each role runs: an edge node clones the applied commit (git) and deploys to its engine.
EDGE_COMMANDS := git:git dockerd:docker.io
# The build server also builds images on opsflow's busybox base.
BUILD_COMMANDS := $(EDGE_COMMANDS) /bin/busybox:busybox-static
# The local stack and the demo: the registry, the sample shop's toolchain, compose v1.
LOCAL_COMMANDS := $(BUILD_COMMANDS) docker-registry:docker-registry node:nodejs npm:npm docker-compose:docker-compose
# Only the tests: PostgreSQL for the session's Prefect server, sshd for SSH deploys, Chromium for the UI tests.
TEST_COMMANDS := $(LOCAL_COMMANDS) pg_ctlcluster:postgresql /usr/sbin/sshd:openssh-server chromium:chromium chromedriver:chromium-driver
SYSTEM_COMMANDS := $(TEST_COMMANDS)
PYTEST_ARGS ?=

.PHONY: demo test test-unit test-integration setup system-packages uv stack-down lint \
        install-edge install-build install-webhook wheel

demo: setup
	$(UV) run opsflow demo
	@echo "The stack keeps running for the Prefect UI; stop it with: $(UV) run opsflow stack down"

test: setup
	$(UV) run ruff check .
	$(UV) run lint-imports
	$(UV) run python -m tests.support.shards $(PYTEST_ARGS)

# Only the tests that need no services (seconds; no system packages needed), or only those against the stack.
test-unit: uv
	$(UV) sync --frozen
	$(UV) run pytest tests/unit $(PYTEST_ARGS)

test-integration: setup
	$(UV) run pytest tests/integration $(PYTEST_ARGS)

# Everything: the demo's and the tests' system packages and the whole locked environment (dev group included).
setup: system-packages uv
	$(UV) sync --frozen

# One machine role each: its system packages and `.venv` with only that role's libraries (no test tools).
install-edge: uv
	@$(MAKE) --no-print-directory system-packages SYSTEM_COMMANDS="$(EDGE_COMMANDS)"
	$(UV) sync --frozen --no-dev --extra edge

install-build: uv
	@$(MAKE) --no-print-directory system-packages SYSTEM_COMMANDS="$(BUILD_COMMANDS)"
	$(UV) sync --frozen --no-dev --extra build

install-webhook: uv
	$(UV) sync --frozen --no-dev

# The wheel and, per role, the lock's exact versions as a requirements file: for nodes without a checkout.
wheel: uv
	rm -rf dist && $(UV) build --wheel --out-dir dist
	$(UV) export --frozen --no-dev --no-emit-project --no-hashes --quiet --output-file dist/requirements-core.txt
	for role in edge build; do \
	  $(UV) export --frozen --no-dev --no-emit-project --no-hashes --quiet --extra $$role \
	    --output-file dist/requirements-$$role.txt; done

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
