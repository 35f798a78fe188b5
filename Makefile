# Khoa — make targets are pinned interfaces (the design's section 6; docs/architecture.md): install, run,
# test, bench, lint.
#
# Two environments, so that what is compared with Khoa never shares packages with Khoa:
#   .venv              Khoa's server and its test tools: `.[server,test]` (and `bench`'s granian and
#                      py-spy once `make bench` ran), constrained by requirements/server.lock, so a fresh
#                      machine resolves to the versions CI ran.
#   .venv-bench-peers  the peers `make bench` measures beside Khoa (moto's server), from
#                      requirements/bench-peers.in constrained by requirements/bench-peers.lock;
#                      bench/run.py starts moto from it (KHOA_BENCH_PEERS).
# `make lock` re-resolves both lock files (requirements/README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/server.lock
PEERS := .venv-bench-peers
PEERS_STAMP := $(PEERS)/.installed
PEERS_IN := requirements/bench-peers.in
PEERS_LOCK := requirements/bench-peers.lock

.PHONY: install run dev test bench lint lock clean softhsm chromium

$(STAMP): pyproject.toml $(LOCK)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[server,test]'
	touch $(STAMP)

$(PEERS_STAMP): $(PEERS_IN) $(PEERS_LOCK)
	test -d $(PEERS) || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet -c $(PEERS_LOCK) -r $(PEERS_IN)
	touch $(PEERS_STAMP)

# SoftHSM2 (a software PKCS#11 token) for the `khoa xks-proxy` tests: installed from Debian when missing
# and this runs as root with apt-get; otherwise the tests that need it skip (fail in CI:
# KHOA_REQUIRE_SERVICES=1). Never fails the install itself.
SOFTHSM_MODULE := /usr/lib/softhsm/libsofthsm2.so
softhsm:
	@if [ ! -e $(SOFTHSM_MODULE) ] || ! command -v softhsm2-util >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "softhsm2 is missing: installing it from Debian (apt-get install -y softhsm2)"; \
	    apt-get install -y -q softhsm2 >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1; apt-get install -y -q softhsm2 >/dev/null 2>&1; } || \
	      echo "warning: could not install softhsm2; the xks-proxy tests will not run"; \
	  else \
	    echo "note: softhsm2 is not installed (apt-get install softhsm2); the xks-proxy tests will not run"; \
	  fi; \
	fi

# Chromium for the web console's browser tests (Playwright's Python client drives the system browser,
# /usr/bin/chromium; Playwright never downloads one of its own): installed from Debian when missing and
# this runs as root with apt-get; otherwise the browser tests skip (fail in CI: KHOA_REQUIRE_SERVICES=1).
# Never fails the install itself.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "chromium is missing: installing it from Debian (apt-get install -y chromium)"; \
	    apt-get install -y -q chromium >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null 2>&1; apt-get install -y -q chromium >/dev/null 2>&1; } || \
	      echo "warning: could not install chromium; the browser tests will not run"; \
	  else \
	    echo "note: chromium is not installed (apt-get install chromium); the browser tests will not run"; \
	  fi; \
	fi

install: $(STAMP) softhsm chromium

run: install
	$(BIN)/khoa server

# A throwaway server: --dev (no signature checks), data in a temporary directory removed at exit;
# it prints the export line for the aws CLI and boto3.
dev: install
	$(BIN)/khoa server --dev

# Two pytest workers (pytest-xdist), a test file each at a time: most tests wait on a server process
# of their own, so two at once keep a 2-core machine busy and the suite well within 15 minutes.
test: install
	$(BIN)/pytest -q -n 2 --dist loadfile tests

bench: install $(PEERS_STAMP)
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[server,test,bench]'
	KHOA_BENCH_PEERS=$(CURDIR)/$(PEERS) $(BIN)/python bench/run.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/review.py
	$(BIN)/python bench/scan.py
	$(BIN)/python bench/interference.py
	$(BIN)/python bench/xks.py

lint: install
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

lock:
	PYTHON=$(PYTHON) sh requirements/lock.sh

clean:
	rm -rf $(VENV) $(PEERS) .khoa .pytest_cache .mypy_cache .ruff_cache
