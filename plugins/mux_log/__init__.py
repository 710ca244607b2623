"""mux_log plugin (work in progress)."""
