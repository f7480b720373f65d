# Two commands on a fresh machine (Python 3.11, network to the package registry):
#   make demo   installs everything, then runs the whole default pipeline offline
#   make test   installs everything, then runs the test suite
# `habla` and `dvc` live in .venv/bin: `. .venv/bin/activate` or `make shell` puts them on PATH.
# Everything is installed into .venv from the hash-locked requirements.lock.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
# torch/OpenMP threads busy-wait on small shared CPUs (see docs/field notes)
export OMP_WAIT_POLICY ?= PASSIVE
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_DISABLE_TELEMETRY ?= 1

.PHONY: setup shell browser screenshot demo test lint lock bench clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.lock requirements-nodeps.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
	$(BIN)/uv pip sync --python $(BIN)/python requirements.lock
	# packages whose own pins cannot resolve with habla's (their real dependencies are in
	# the lock): hash-pinned, without dependencies
	$(BIN)/uv pip install --python $(BIN)/python --no-deps --require-hashes \
	  -r requirements-nodeps.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

# A shell with the venv active, so `habla` and `dvc` are on PATH (exit to leave it).
shell: setup
	@echo "habla's venv is active in this shell (exit to leave it)"
	@VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(BIN)):$$PATH $${SHELL:-bash}

demo: setup
	dvc repro
	habla report --summary

# The report test opens reports/index.html in headless Chromium (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends chromium) >/dev/null || echo "chromium install failed: report browser test will be skipped"; \
	  else echo "chromium not found and not root: report browser test will be skipped"; fi; }

# A PNG of the evaluation report for notes and pull requests: build/report.png, 1280 x 12000
# px (the window is that tall so the whole page fits; a shorter page leaves blank space).
screenshot:
	@command -v chromium >/dev/null 2>&1 || { echo "chromium not found: make browser"; exit 1; }
	mkdir -p build
	chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=5000 \
	  --window-size=1280,12000 --screenshot=$(abspath build/report.png) \
	  file://$(abspath reports/index.html) 2>/dev/null

test: setup browser
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks stages

# Re-resolve the lockfile after changing dependencies in pyproject.toml.
lock:
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_28 --generate-hashes -o requirements.lock

bench: setup
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean-venv:
	rm -rf $(VENV)
