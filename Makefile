# `make demo` and `make test` each set up their own virtual environment first, from the tested
# set of versions in constraints.txt (setup.py holds the ranges drn-tf accepts).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST := TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q tests

.PHONY: demo test test-fast lint constraints clean

$(STAMP): setup.py constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (TensorFlow 2.21 + Keras 3.15 wheels)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[cpu,test,export]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/drn-tf demo --output demo_output

# Everything, as CI runs it.
test: lint
	$(PYTEST)

# The inner loop: all but the tests marked slow (exporters' int8 and Set5 checks, notebooks,
# multi-replica runs, long training runs).
test-fast: lint
	$(PYTEST) -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Rewrites constraints.txt from the current environment (after a deliberate upgrade there).
constraints: $(STAMP)
	sed -n '/^#/p' constraints.txt > constraints.txt.tmp
	$(PY) -m pip freeze --exclude-editable --exclude drn-tf >> constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean:
	rm -rf $(VENV) demo_output *.egg-info
