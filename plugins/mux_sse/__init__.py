"""mux_sse plugin (work in progress)."""
