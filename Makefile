# Every target bootstraps .venv itself and is quick when it already exists.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# libvirt-python needs libvirt's headers; take the extra only where they are installed.
EXTRAS := dev$(shell pkg-config --exists libvirt 2>/dev/null && echo ,libvirt)
# Where `make demo` / `make up` keep the Prefect server's data: sqlite (embedded, the
# default) or postgres (a local cluster under .werft/postgres; apt-get install postgresql).
WERFT_DB ?= sqlite
export WERFT_DB
# Test processes (pytest-xdist): one per core of the 2-core CI machine; WORKERS=1 runs one.
WORKERS ?= 2

.PHONY: test test-fleet test-live demo up bench lint clean

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	@rm -f $(VENV)/.installed-* && touch $@

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) lint
	$(BIN)/pytest -q -n $(WORKERS) -m "not fleet_scale"

# Whole-fleet end-to-end runs (the sample fleet under 10% faults, a fault at every request
# position, drift on 300 clusters): minutes each; CI runs them after `make test`.
test-fleet: $(STAMP)
	$(BIN)/pytest -q -n $(WORKERS) -m fleet_scale

# The Kubernetes-facing contract tests against a real cluster:
#   WERFT_LIVE_KUBECONFIG=~/.kube/config make test-live
test-live: $(STAMP)
	@test -n "$$WERFT_LIVE_KUBECONFIG" || { echo "set WERFT_LIVE_KUBECONFIG to a cluster's kubeconfig"; exit 2; }
	$(BIN)/pytest -q -m live tests/test_kube_real_server.py

demo: $(STAMP)
	$(BIN)/python -m werft.demo

up: $(STAMP)
	$(BIN)/python -m werft.demo --stay-up

bench: $(STAMP)
	$(BIN)/pytest -q -s -m bench tests/benchmarks -p no:randomly

clean:
	rm -rf $(VENV) .werft
