# The README's two commands. Both build (or reuse) the environment first; see tools/bootstrap.sh.
PYTHON := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: env demo test lint bench

env:
	@./tools/bootstrap.sh

demo: env
	$(PYTHON) tools/demo.py

# The tests marked detectron2 run twice: against the environment's detectron2 0.6, then against
# main @ e0ec4e1 (what the CUDA image compiles), built from its vendored source (tests/_detectron2_main.py;
# skipped with the reason where that source is absent). Its own -m comes last, so a -m in PYTEST_ARGS
# narrows only the first pass; a PYTEST_ARGS that selects no detectron2 test (exit 5) skips it.
test: env lint
	$(PYTHON) -m pytest -ra $(PYTEST_ARGS)
	$(PYTHON) -m pytest -ra $(PYTEST_ARGS) -m detectron2 --detectron2=e0ec4e1 \
		|| { rc=$$?; [ $$rc -eq 5 ] && echo "make test: no detectron2 test among those selected"; } \
		|| exit $$rc

# lint-imports: the layer contracts in .importlinter (docs/design.md).
lint: env
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	.venv/bin/lint-imports

bench: env
	$(PYTHON) -m bench
