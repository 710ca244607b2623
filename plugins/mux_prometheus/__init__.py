"""mux_prometheus: the ``prometheus`` sink -- mux's health as a Prometheus textfile.

Every few seconds the sink writes mux's and every source's metrics
(``mux_source_up``, ``mux_source_reconnects_total``, ``mux_events_total``,
``mux_sink_dropped_total``, ...), and the payload fields named in its
``metrics`` option (``mux_payload_loss``, ...), in the Prometheus text format
to a ``.prom`` file, atomically, for node_exporter's textfile collector: mux stays a pure
client and never opens a port. See docs/prometheus.md for the metrics and a
ready Grafana panel.

prometheus_client comes with the ``mux[prometheus]`` extra. Without it this
module raises ImportError with the install hint, so ``mux plugins`` lists the
plugin as unavailable with that hint and a config using ``type =
"prometheus"`` fails ``mux check`` with it -- never a traceback.
"""

from __future__ import annotations

import importlib.util

from mux_core.hookspecs import Register, hookimpl

__all__ = ["INSTALL_HINT", "PrometheusOptions", "PrometheusSink", "mux_register_sinks"]

INSTALL_HINT = (
    "prometheus_client is not installed; install the Prometheus sink with: "
    "pip install 'mux[prometheus]'"
)

if importlib.util.find_spec("prometheus_client") is None:
    raise ImportError(INSTALL_HINT)

from .sink import PrometheusOptions, PrometheusSink  # noqa: E402


@hookimpl
def mux_register_sinks(register: Register) -> None:
    """Provide ``type = "prometheus"``."""
    register("prometheus", PrometheusSink)
