# The two commands a user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-fast lint demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check recorder sinks tests

# Every test, in four shards run side by side (the tests wait on processes and sockets more
# than they compute); each shard is a whole pytest session with its own temp folder, and the
# output of both is printed when they are done.
SHARDS := 4
test: $(STAMP) lint
	@rm -rf .test-shards && mkdir -p .test-shards
	@pids=""; for k in $$(seq 1 $(SHARDS)); do \
	  RECORDER_TEST_SHARD=$$k/$(SHARDS) $(BIN)/pytest -q -p no:cacheprovider \
	    --basetemp=.test-shards/tmp$$k > .test-shards/out$$k.txt 2>&1 & pids="$$pids $$!"; \
	done; \
	status=0; for pid in $$pids; do wait $$pid || status=1; done; \
	for k in $$(seq 1 $(SHARDS)); do echo "== shard $$k/$(SHARDS)"; cat .test-shards/out$$k.txt; done; \
	exit $$status

# Unit tests only (no simulator, no recorder processes): under a minute.
test-fast: $(STAMP) lint
	$(BIN)/pytest -q -m "not e2e"

demo: $(STAMP)
	$(BIN)/python -m recorder.demo

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) *.egg-info data bench/results.json .pytest_cache .ruff_cache .test-shards
