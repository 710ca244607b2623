"""The run machinery: what ``mux run`` and ``mux replay`` do between a transport and a sink.

Nothing here is public: plugins see the contracts at the top of
:mod:`mux_core`. The map of this package is in ``docs/architecture.md``.
"""
