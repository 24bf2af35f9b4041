# Two entry points: `make demo` (the main job end to end on the synthetic AG) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_OUT ?= demo_output
export HF_HUB_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: install browser test test-fast lint format demo wheel-smoke notebook clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	$(PYTHON) -m venv $(VENV)
	@echo "Installing torch 2.14.1 + torchvision 0.29.1 (PyPI's CUDA build: about 6.2 GB of disk with its libraries)"
	$(PIP) install --progress-bar on -c constraints-cpu.txt torch torchvision
	@echo "Installing arn-lightning (editable) with its test extras"
	$(PIP) install -q -c constraints-cpu.txt -e '.[test]'
	touch $@

# The web-app tests (tests/test_app.py) drive Debian's headless Chromium; nothing is downloaded at test time.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's chromium and chromium-driver for the web-app tests (apt, about 1 minute)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
			|| echo "apt-get could not install chromium: tests/test_app.py will be skipped"; \
	else echo "No /usr/bin/chromium (and no apt-get as root): install chromium and chromedriver to run tests/test_app.py (it is skipped otherwise)"; fi

test: install browser
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# Ruff (settings in pyproject.toml): lint and the formatting check; `make format` applies both.
lint: install
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: install
	$(VENV)/bin/ruff check --fix src tests
	$(VENV)/bin/ruff format src tests

demo: install
	$(PY) -m arn_lightning.experiments.demo --out $(DEMO_OUT)

# The built wheel in a fresh venv, used from an empty folder: configs, synth, a tiny fit, test, evaluate, infer, the
# demo job and one ablation table at tiny sizes (scripts/wheel_smoke.sh; about 3 to 5 minutes on 2 CPU cores).
wheel-smoke: install
	PYTHON=$(PY) scripts/wheel_smoke.sh

# An executed copy of the notebook on the newest `make demo` run: notebooks/explore_checkpoint_executed.ipynb (no dot
# in the --output name: nbclient replaces the last suffix, and "x.executed" would overwrite the notebook itself).
notebook: install
	$(VENV)/bin/jupyter execute notebooks/explore_checkpoint.ipynb --output=explore_checkpoint_executed

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
