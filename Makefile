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

.PHONY: install run dev test bench lint lock clean

$(STAMP): pyproject.toml $(LOCK)
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[server,test]'
	touch $(STAMP)

$(PEERS_STAMP): $(PEERS_IN) $(PEERS_LOCK)
	test -d $(PEERS) || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/pip install --quiet -c $(PEERS_LOCK) -r $(PEERS_IN)
	touch $(PEERS_STAMP)

install: $(STAMP)

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
	$(BIN)/python bench/scan.py
	$(BIN)/python bench/interference.py

lint: install
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

lock:
	PYTHON=$(PYTHON) sh requirements/lock.sh

clean:
	rm -rf $(VENV) $(PEERS) .khoa .pytest_cache .mypy_cache .ruff_cache
