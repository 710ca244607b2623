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

.PHONY: test lint typecheck pytest browser demo bench docs clean

$(STAMP): pyproject.toml $(EXTRA_PACKAGES) $(addsuffix /pyproject.toml,$(TYPED_EXAMPLES))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,qt,docs,redis,prometheus,tensorboard,zstd,web]' $(if $(EXTRA_PACKAGES),-e examples/mux-jsonl-tail) $(addprefix -e ,$(TYPED_EXAMPLES))
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

pytest: $(STAMP) browser
	cd examples/mux-jsonl-tail && ../../$(BIN)/pytest -q
	for dir in $(TYPED_EXAMPLES); do (cd $$dir && $(CURDIR)/$(BIN)/pytest -q) || exit 1; done
	QT_QPA_PLATFORM=offscreen $(BIN)/pytest -q

# The web sink's browser tests drive Debian's Chromium and its driver (never a
# browser downloaded by a test tool). Installed once, when missing, where we are
# root with apt (CI); elsewhere the tests say how and are skipped.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "browser tests: install Debian's chromium and chromium-driver (sudo apt-get install chromium chromium-driver)"; \
	  fi; \
	fi

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
