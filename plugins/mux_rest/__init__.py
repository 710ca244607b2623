"""mux_rest plugin (work in progress)."""
