# Every target installs what it needs into .venv; `make test` is what CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTO := protos/chandy_lamport.proto

.PHONY: install protos check-protos lint image checkov chromium screenshots test test-fast test-slow mutants demo simulate bench clean up down down-v compose-v2 cli

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

protos: install
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. $(PROTO)

# Fails when the committed generated code is not what the .proto produces.
check-protos: install
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -I. --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTO) && \
	diff -r -q $$tmp/protos protos --exclude='__init__.py' --exclude='*.proto' --exclude='__pycache__' \
	  || { echo "protos/ is stale: run 'make protos' and commit the result" >&2; rm -rf $$tmp; exit 1; }; \
	rm -rf $$tmp

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy node/core.py node/ids.py node/timeline.py collector/verify.py simulator/engine.py diagram
	$(VENV)/bin/mypy node/restore.py collector/restore.py
	$(VENV)/bin/mypy common/validation.py

# The stack on this host, whatever it has: builds the image (pull, or the
# Debian-built base), starts it with the Compose found (v2, else v1), waits
# until healthy, prints the next commands. Standard library only: no venv.
up:
	$(PYTHON) scripts/stack.py up

down:
	$(PYTHON) scripts/stack.py down

down-v:
	$(PYTHON) scripts/stack.py down -v

image:
	bash scripts/build-image.sh

# Compose v2 (Debian trixie's plugin) in build/docker-config, beside v1.
compose-v2:
	bash scripts/install-compose-v2.sh

# A small venv for the host-side tools (cl-initiator, cl-simulate, the compose
# generator, cl-certs): the runtime dependencies only, not the dev toolchain.
CLI_VENV := .venv-cli
$(CLI_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(CLI_VENV)
	$(CLI_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CLI_VENV)/bin/python -m pip install --quiet -e .
	touch $@

cli: $(CLI_VENV)/.installed

checkov:
	bash scripts/install-checkov.sh

# Debian's chromium, for the browser tests of the dashboard.
chromium:
	bash scripts/install-chromium.sh

# Regenerate the README's screenshots (docs/*.png) with the browser test.
screenshots: install chromium
	CL_SCREENSHOT_DIR=docs $(VENV)/bin/pytest -q tests/integration/test_dashboard_browser.py

# The whole suite: unit, property, multi-process integration, Terraform
# checks and the Docker end-to-end tests (which need a Docker engine).
test: install check-protos lint mutants image compose-v2 checkov chromium
	$(VENV)/bin/pytest -ra

# Everything that needs neither Docker nor the checkov scan.
test-fast: install
	$(VENV)/bin/pytest -ra -m "not docker"

# Planted-bug cores (tests/mutants/) against the suite's checks: prints the
# table mutant -> killed by which check and the score; fails if one survives.
mutants: install
	$(PY) -m tests.mutants

# The property suite with the slow Hypothesis profile: new random examples,
# >= 100,000 executions (CL_SLOW_SCALE scales it; see tests/oracle/profiles.py).
PROPERTY_SUITE := tests/test_simulator_properties.py tests/test_oracle_properties.py
test-slow: install
	HYPOTHESIS_PROFILE=slow $(VENV)/bin/pytest -ra -v --durations=0 --timeout=0 $(PROPERTY_SUITE)

demo: install
	$(PY) -m demo

# The example scenarios in the simulator (snapshots/sim/<name>/); SEED=N for
# another interleaving. Fails on the first scenario that does not verify.
SCENARIOS := $(wildcard simulator/scenarios/*.yaml)
simulate: install
	@for scenario in $(SCENARIOS); do \
	  $(VENV)/bin/cl-simulate $$scenario $(if $(SEED),--seed $(SEED)) || exit $$?; \
	done

# Benchmarks that print numbers and same-run ratios (see benchmarks/README.md).
bench: install
	$(PY) -m benchmarks.core
	$(PY) -m benchmarks.runtime
	$(PY) -m benchmarks.cluster
	$(PY) -m benchmarks.startup
	$(PY) -m benchmarks.collector
	$(PY) -m benchmarks.figures

clean:
	rm -rf $(VENV) .venv-checkov build .demo .pytest_cache .hypothesis
