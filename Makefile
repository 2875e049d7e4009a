# The README's two commands. Both build (or reuse) the environment first; see tools/bootstrap.sh.
PYTHON := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: env demo test lint bench

env:
	@./tools/bootstrap.sh

demo: env
	$(PYTHON) tools/demo.py

test: env lint
	$(PYTHON) -m pytest -ra $(PYTEST_ARGS)

lint: env
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

bench: env
	$(PYTHON) -m bench
