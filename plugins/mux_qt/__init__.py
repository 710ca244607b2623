"""mux_qt plugin (work in progress)."""
