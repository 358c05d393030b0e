VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test quick lint bench docs screenshots clean

# The core install (what `make demo` needs), then the extras each target adds.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,eval]'
	touch $@

$(VENV)/.bench-installed: $(VENV)/.test-installed
	$(PY) -m pip install --quiet -e '.[test,eval,bench]'
	touch $@

$(VENV)/.docs-installed: $(VENV)/.test-installed
	$(PY) -m pip install --quiet -e '.[test,eval,docs]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/trellis run examples/feedback_triage.py:flow \
		--input-file examples/data/feedback.jsonl --output feedback-results.jsonl \
		--config examples/trellis.toml

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check src tests examples bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports  # the layers of docs/architecture.md ([tool.importlinter])

# Every test, slow ones included: on two workers, then alone the tests that measure wall
# time or race real processes (a loaded CPU would make them flaky, not wrong), then the Ray
# tests (their local Ray keeps processes up for the whole session: last, on their own).
test: lint
	$(PY) -m pytest -q -n 2 -m "not serial"
	$(PY) -m pytest -q -m serial --ignore=tests/distributed
	$(PY) -m pytest -q tests/distributed

# Local iteration: the same without the tests marked slow.
quick: lint
	$(PY) -m pytest -q -n 2 -m "not slow and not serial"

bench: $(VENV)/.bench-installed
	$(PY) bench/run.py --out bench/results.json

docs: $(VENV)/.docs-installed
	$(VENV)/bin/mkdocs build --strict --quiet
	@echo "API reference and guides built in site/ (open site/index.html)"

# A PNG of each web UI page for a sample store, taken in Chromium (/usr/bin/chromium).
screenshots: $(VENV)/.test-installed
	$(PY) examples/ui_sample/screenshots.py docs/screenshots

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache feedback-results.jsonl
