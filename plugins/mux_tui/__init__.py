"""mux_tui plugin (work in progress)."""
