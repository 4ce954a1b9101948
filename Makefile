# The two set-up commands of the README: `make demo` and `make test`. Both create .venv when needed.
# CPU installs go through constraints/cpu.txt, which pins the CPU wheel of torch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: demo test lint install install-dev bench clean-runs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.installed: pyproject.toml constraints/cpu.txt | $(BIN)/python
	$(PIP) install -q -c constraints/cpu.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints/cpu.txt | $(BIN)/python
	$(PIP) install -q -c constraints/cpu.txt -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/raychat demo $(ARGS)

test: $(VENV)/.installed-dev
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(VENV)/.installed-dev
	for b in benchmarks/*.py; do echo "== $$b"; RAY_AUTH_MODE=disabled $(BIN)/python $$b || exit 1; done

clean-runs:
	rm -rf runs
