# The README's two commands. Both build (or reuse) the environment first; see tools/bootstrap.sh.
PYTHON := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: env demo test bench

env:
	@./tools/bootstrap.sh

demo: env
	$(PYTHON) tools/demo.py

test: env
	$(PYTHON) -m pytest -ra $(PYTEST_ARGS)

bench: env
	$(PYTHON) -m bench
