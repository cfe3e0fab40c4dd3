# Two commands do everything: `make demo` (set up, pretrain SimCLR on Fashion-MNIST, evaluate,
# print the table) and `make test` (set up, run the fast test suite). CI runs `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
BUDGET ?= 15m
STAMP  := $(VENV)/.installed

.PHONY: setup data demo test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# pinned, and installed first so that nothing pulls another torch build
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

data:
	@scripts/install-data.sh

demo: setup data
	$(BIN)/selfsup demo --budget $(BUDGET)

test: setup data
	$(BIN)/python -m pytest -q

test-slow: setup data
	$(BIN)/python -m pytest -q -m slow

bench: setup data
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
