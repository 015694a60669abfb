# Entry points. `make demo` and `make test` work on a fresh machine: they create
# the virtual environment in .venv and install the pinned dependencies first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)

.PHONY: setup setup-test browser demo test bench clean-venv

# The pipeline's dependencies; the test extra (pytest, pycma, selenium, moto, ...) only
# where tests or benchmarks need it, so `make demo` installs no more than it runs.
setup: $(VENV)/.installed
setup-test: $(VENV)/.installed-test

# --no-compile: pip would byte-compile all ~23,000 installed modules (about 80 s on 2 cores);
# instead the first stage compiles the few thousand modules it imports and caches them for
# the others (env -u PYTHONDONTWRITEBYTECODE below: some machines set it, and then every
# stage process would compile them all again).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile --upgrade pip
	$(BIN)/pip install --quiet --no-compile -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet --no-compile -e '.[test]'
	touch $@

demo: setup
	env -u PYTHONDONTWRITEBYTECODE dvc repro

# The atlas is tested in headless Chromium: Debian's chromium and chromium-driver packages.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver; }

# ruff first: lint (pycodestyle, pyflakes, import order, pyupgrade) and the format check,
# configured in pyproject.toml; `ruff format .` fixes the format.
test: setup-test browser
	ruff check .
	ruff format --check .
	env -u PYTHONDONTWRITEBYTECODE pytest -q

bench: setup-test
	pip install --quiet --no-deps torch-lucent==0.1.8
	pip install --quiet kornia==0.4.1 decorator ipython
	python -m bench.peers.train_throughput
	python -m bench.peers.synthesis

clean-venv:
	rm -rf $(VENV)
