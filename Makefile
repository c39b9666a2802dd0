# `make demo` and `make test` each set up their own virtual environment first.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): setup.py
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (TensorFlow 2.21 + Keras 3.15 wheels)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,test,export]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/drn-tf demo --output demo_output

test: lint
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) demo_output *.egg-info
