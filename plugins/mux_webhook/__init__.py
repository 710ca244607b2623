"""mux_webhook: the ``webhook`` sink -- POST alerts (optionally events) to a URL.

Registered through the ``mux`` entry point like any third-party plugin.
"""

from __future__ import annotations

from mux_core.hookspecs import Register, hookimpl

from .sink import WebhookOptions, WebhookSink, slack_line

__all__ = ["WebhookOptions", "WebhookSink", "slack_line"]


@hookimpl
def mux_register_sinks(register: Register) -> None:
    register("webhook", WebhookSink)
