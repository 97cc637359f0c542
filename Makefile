# Every target installs what it needs into .venv; `make test` is what CI runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROTO := protos/chandy_lamport.proto

.PHONY: install protos check-protos lint image checkov test test-fast demo simulate bench clean

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
	$(VENV)/bin/mypy node/core.py collector/verify.py simulator/engine.py diagram

image:
	bash scripts/build-image.sh

checkov:
	bash scripts/install-checkov.sh

# The whole suite: unit, property, multi-process integration, Terraform
# checks and the Docker end-to-end tests (which need a Docker engine).
test: install check-protos lint image checkov
	$(VENV)/bin/pytest -ra

# Everything that needs neither Docker nor the checkov scan.
test-fast: install
	$(VENV)/bin/pytest -ra -m "not docker"

demo: install
	$(PY) -m demo

# Benchmarks that print numbers and same-run ratios (see benchmarks/README.md).
bench: install
	$(PY) -m benchmarks.core
	$(PY) -m benchmarks.runtime
	$(PY) -m benchmarks.cluster

clean:
	rm -rf $(VENV) .venv-checkov build .demo .pytest_cache .hypothesis
