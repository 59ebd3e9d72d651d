# Two commands on a fresh machine: `make run` and `make test` (see README).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.farm-installed

.PHONY: run test test-quick lint install clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[cluster,test]"
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/farm run configs/default.yaml

# ruff and mypy over the package (config in pyproject.toml); CI runs it through `make test`.
lint: $(STAMP)
	$(BIN)/ruff check farm tests scripts jobs
	$(BIN)/mypy

# Two pytest workers, each test module whole on one worker (module fixtures run once), the
# longest modules first (tests/conftest.py; --no-loadscope-reorder keeps that order, xdist
# would sort modules by test count); TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2

test: lint
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-quick: $(STAMP)
	RAY_USAGE_STATS_ENABLED=0 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m "not slow"

clean:
	rm -rf $(VENV) results .pytest_cache
