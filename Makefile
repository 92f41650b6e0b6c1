# Two entry points, each bootstrapping what it needs: `make bench` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
SCENARIO ?= scenarios/rec.yaml

.PHONY: setup setup-browser bench test test-fast lint clean

setup: $(STAMP)

# torch==2.13.0 first: an open torch requirement on a bare machine pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0 -c constraints.txt
	$(BIN)/python -m pip install -q -e '.[torch,onnxruntime,openvino,text,images,gpu,ray,dev]' -c constraints.txt
	touch $(STAMP)

bench: setup
	$(BIN)/bench run $(SCENARIO)

# Debian's chromium for the report's browser tests, with apt-get when missing; never fails (says why).
setup-browser:
	@.ci/setup-browser

test: setup setup-browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# The tests that neither run the CLI in a subprocess (e2e) nor take over ~3 s (slow): ~40 s on a
# 2-CPU machine, for the edit-test loop. `make test` runs them all.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not e2e and not slow"

lint: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info
