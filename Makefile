# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The repository's shared data folder, when it sits next to the checkout (CI and our machines). When it
# is there, a data test that skips fails the run (tests/conftest.py, BEYOND_INET_REQUIRE_SHARED_DATA).
DATA_ROOT ?= $(wildcard ../shared/data)
# 1: a data test may not skip (CI sets it; the environment or the command line may too).
BEYOND_INET_REQUIRE_SHARED_DATA ?= $(if $(DATA_ROOT),1,)
DEMO_OUT ?= beyond-inet-demo
# Where torch comes from: empty = the default index (CUDA wheels on Linux); machines without a GPU can take
# torch's CPU wheels, ~10x smaller: make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: setup demo test bench clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Each command installs only what it needs: the demo no test, browser or Ray dependency.
$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install -q torch torchvision $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/beyond-inet demo --out $(DEMO_OUT) $(if $(DATA_ROOT),--data-root $(DATA_ROOT))

test: $(VENV)/.installed-test
	BEYOND_INET_SHARED_DATA=$(abspath $(DATA_ROOT)) BEYOND_INET_REQUIRE_SHARED_DATA=$(BEYOND_INET_REQUIRE_SHARED_DATA) \
		$(BIN)/python -m pytest -q -p no:cacheprovider tests

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
