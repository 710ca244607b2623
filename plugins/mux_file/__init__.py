"""mux_file plugin (work in progress)."""
