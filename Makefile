# The two set-up commands of the README: `make demo` and `make test`. Both create .venv when needed.
# CPU installs go through constraints/cpu.txt, which pins the CPU wheel of torch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# torch's CPU wheels live on PyTorch's own index; only the torch wheel is looked up there (--no-deps: its
# own needs come from the registry in the next step), so a machine without that index loses seconds.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
export RAY_USAGE_STATS_ENABLED ?= 0

.PHONY: demo test lint install install-dev bench clean-runs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.torch: constraints/cpu.txt | $(BIN)/python
	$(PIP) install -q --no-deps --retries 1 --extra-index-url $(TORCH_CPU_INDEX) -c constraints/cpu.txt torch
	touch $@

$(VENV)/.installed: pyproject.toml constraints/cpu.txt $(VENV)/.torch
	$(PIP) install -q -c constraints/cpu.txt -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml constraints/cpu.txt $(VENV)/.torch
	$(PIP) install -q -c constraints/cpu.txt -e '.[dev]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/raychat demo $(ARGS)

# the 15 slowest tests are listed at the end, so a suite that nears CI's 20 minutes says where the time went
test: $(VENV)/.installed-dev
	RAY_AUTH_MODE=disabled $(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# benchmarks/_*.py are helpers the benchmarks run, not benchmarks
bench: $(VENV)/.installed-dev
	for b in benchmarks/*.py; do \
	  case $$b in benchmarks/_*) continue;; esac; \
	  case $$b in *gpu_mfu.py) $(BIN)/python -c 'import torch,sys; sys.exit(not torch.cuda.is_available())' || { echo "== $$b: no GPU, plan only"; $(BIN)/python $$b --dry-run || exit 1; continue; };; esac; \
	  echo "== $$b"; RAY_AUTH_MODE=disabled $(BIN)/python $$b || exit 1; done

clean-runs:
	rm -rf runs
