# Two commands do all set-up on a fresh machine (see README):
#   make demo   -- create .venv, install scarmon, run the offline demo
#   make test   -- create .venv with test tools, install the system packages the tests need, run the tests
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
export DO_NOT_TRACK = 1
export PREFECT_SERVER_ANALYTICS_ENABLED = false

.PHONY: demo test lint check-image install install-dev clean

$(VENV)/.base: requirements/base.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the local CPU wheel (a looser pin pulls GBs of CUDA).
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements/base.txt
	# sam2 declares torch>=2.5.1 and torchvision: install it without build isolation and without deps.
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-build-isolation --no-deps sam2==1.1.0
	$(PIP) install -q --no-deps -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base requirements/dev.txt
	# Both files at once, so the resolver keeps the base pins (prefect needs fastapi<0.151).
	$(PIP) install -q -r requirements/base.txt -r requirements/dev.txt
	touch $@

install: $(VENV)/.base
install-dev: $(VENV)/.dev

demo: $(VENV)/.base
	$(VENV)/bin/scarmon demo --out demo-output

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check scarmon tests bench flows deploy
	$(VENV)/bin/ruff format --check scarmon tests bench flows deploy
	$(VENV)/bin/mypy

test: lint
	bash .ci/install-system-packages.sh
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

# The Dockerfile's install steps in a clean venv (no Docker daemon needed); minutes, so apart from `make test`.
check-image: $(VENV)/.dev
	$(VENV)/bin/python -m pytest -q -m image tests/test_deploy.py

clean:
	rm -rf $(VENV) demo-output
