# The two commands of the README. Everything else here is what they need.
#   make dev   - AutoCrane installed by helm on a local cluster's real node (built from Go modules
#                on first use), with a sample app reading a data set you can edit;
#                make dev CLUSTER=path/to/kubeconfig installs the chart on that cluster instead
#                (its nodes must be able to pull the images: HELM_ARGS="--set image.repository=...")
#   make test  - lint and the whole test suite, including the real-control-plane tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: dev test lint binaries install clean

HELM := $(or $(AUTOCRANE_CACHE),$(HOME)/.cache/autocrane)/bin/helm

dev: install binaries
ifdef CLUSTER
	$(HELM) upgrade --install autocrane charts/autocrane --namespace autocrane-system --create-namespace \
		--kubeconfig $(CLUSTER) --wait $(HELM_ARGS)
else
	$(BIN)/python -m devcluster up
endif

# --durations: the slowest tests, to keep a warm run within its budget (about 15 minutes)
test: install binaries lint
	$(BIN)/pytest -v --durations=20

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

binaries: install
	$(BIN)/python -m devcluster build

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v go >/dev/null || { echo "error: Go is needed to build the control plane (https://go.dev/dl)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) test-logs .pytest_cache .ruff_cache
