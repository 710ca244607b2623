"""Fake stream servers and helpers behind :mod:`mux_core.testing` (private modules)."""
