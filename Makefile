# Two commands matter: `make demo` runs the whole lifecycle on the real data,
# `make test` runs the tests. Both create .venv from the pinned requirements.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FILE ?=

.PHONY: demo test up down status replay lint bench-sink bench-training clean

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]}; set PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@# The Compose Specification schema ships inside this wheel; the tests read
	@# it from there instead of installing the retired docker-compose 1.x.
	$(BIN)/python -m pip download --quiet --no-deps --dest $(VENV)/share/compose-schema docker-compose==1.29.2
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/ml-lifecycle demo

test: $(STAMP)
	$(BIN)/python -m pytest

up: $(STAMP)
	$(BIN)/ml-lifecycle up

down:
	@if [ -x $(BIN)/ml-lifecycle ]; then $(BIN)/ml-lifecycle down; else echo "nothing to stop"; fi

status: $(STAMP)
	$(BIN)/ml-lifecycle status

# Replays FILE (default: the UCI Online Retail data) into the running stack.
replay: $(STAMP)
	@test -f .local/env || { echo "start the stack first: make up"; exit 1; }
	. .local/env && $(BIN)/ml-lifecycle replay $(FILE)

# Prints the sink's throughput against the bare consume rate and its peak memory.
bench-sink: $(STAMP)
	$(BIN)/ml-lifecycle bench sink

# Prints each grid preset's training time and peak memory on the full data,
# and a rolling-origin backtest of the selected model against the moving average.
bench-training: $(STAMP)
	$(BIN)/ml-lifecycle bench training

lint: $(STAMP)
	$(BIN)/ruff check plugins dags tests include
	$(BIN)/ruff format --check plugins dags tests include
	$(BIN)/mypy

clean: down
	rm -rf .local
