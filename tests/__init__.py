"""mux's tests: one package, so every test imports its helpers one way (``tests.helpers``).

The tree mirrors the code: ``core/`` (mux_core), ``plugins/<name>/`` (one
folder per built-in plugin), ``e2e/`` (``mux`` run as a process across several
parts) and ``docs/`` (what the docs claim). ``conftest.py`` holds the fixtures
shared by all.
"""
