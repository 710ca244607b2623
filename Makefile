# Every target bootstraps .venv itself: a fresh clone needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# What `make demo` needs and nothing more (the core, the built-in transports,
# the terminal view): a fresh clone reaches a live demo in seconds, not the
# minute the dev, docs, Qt and Redis extras take. `make test` adds the rest.
DEMO_STAMP := $(VENV)/.installed-demo
EXTRA_PACKAGES := $(wildcard examples/mux-jsonl-tail/pyproject.toml)
# Example plugins built like a third party's; type-checked against the *installed*
# mux (from inside their folder, no MYPYPATH): what a plugin author's mypy sees.
TYPED_EXAMPLES := examples/mux-gauge examples/mux-ndjson-tcp examples/mux-nats

.PHONY: test lint typecheck pytest demo bench docs clean

$(STAMP): pyproject.toml $(EXTRA_PACKAGES) $(addsuffix /pyproject.toml,$(TYPED_EXAMPLES))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,qt,docs,redis,prometheus,tensorboard,zstd]' $(if $(EXTRA_PACKAGES),-e examples/mux-jsonl-tail) $(addprefix -e ,$(TYPED_EXAMPLES))
	@touch $@

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict mux_core
	$(BIN)/mypy --strict plugins/mux_* tests
	$(BIN)/mypy --strict examples/mux-jsonl-tail/mux_jsonl_tail
	for dir in $(TYPED_EXAMPLES); do (cd $$dir && env -u MYPYPATH $(CURDIR)/$(BIN)/mypy --strict . ) || exit 1; done

pytest: $(STAMP)
	cd examples/mux-jsonl-tail && ../../$(BIN)/pytest -q
	for dir in $(TYPED_EXAMPLES); do (cd $$dir && $(CURDIR)/$(BIN)/pytest -q) || exit 1; done
	QT_QPA_PLATFORM=offscreen $(BIN)/pytest -q

$(DEMO_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	@touch $@

# The full install satisfies the demo too; otherwise only the light one is made.
demo: $(if $(wildcard $(STAMP)),$(STAMP),$(DEMO_STAMP))
	$(BIN)/mux demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
