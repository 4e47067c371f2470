# noisecraft: `make demo` runs the main job, `make test` runs the tests.
# Works on a fresh machine with Python 3.11 and pip. GPU users: make TORCH_SPEC="torch==2.5.1" ...
PYTHON ?= python3.11
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,serve,bento,signals,scans,tabular,bayes]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup tests

demo: $(STAMP)
	$(VENV)/bin/noisecraft demo

bench: $(STAMP)
	$(PY) benchmarks/solvers.py

lint: $(STAMP)
	$(VENV)/bin/ruff check noisecraft tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
