# Every target bootstraps .venv itself: a fresh clone needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRA_PACKAGES := $(wildcard examples/mux-jsonl-tail/pyproject.toml)

.PHONY: test lint typecheck pytest demo bench docs clean

$(STAMP): pyproject.toml $(EXTRA_PACKAGES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,qt,docs,redis]' $(if $(EXTRA_PACKAGES),-e examples/mux-jsonl-tail)
	@touch $@

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict mux_core
	$(BIN)/mypy --strict examples/mux-jsonl-tail/mux_jsonl_tail

pytest: $(STAMP)
	cd examples/mux-jsonl-tail && ../../$(BIN)/pytest -q
	QT_QPA_PLATFORM=offscreen $(BIN)/pytest -q

demo: $(STAMP)
	$(BIN)/mux demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
