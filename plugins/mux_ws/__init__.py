"""mux_ws plugin (work in progress)."""
