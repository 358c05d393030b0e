VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/trellis run examples/feedback_triage.py:flow \
		--input-file examples/data/feedback.jsonl --output feedback-results.jsonl \
		--config examples/trellis.toml

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests examples bench
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q

bench: $(VENV)/.bench-installed
	$(PY) bench/run.py --out bench/results.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache feedback-results.jsonl
