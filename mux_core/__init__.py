"""mux: watch live data streams as a pure client."""
