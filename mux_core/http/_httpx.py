"""The run's httpx client class: httpx following redirects by mux's rules.

In a module of its own so that importing :mod:`mux_core.http` (every HTTP
plugin does when it loads) does not import httpx: :func:`make_client`
imports this when it makes the first client.
"""

from __future__ import annotations

import httpx

from ._http11 import CROSS_ORIGIN_HEADERS, _is_https_upgrade, origin

__all__ = ["RedirectSafeClient"]


class RedirectSafeClient(httpx.AsyncClient):
    """httpx following redirects by mux's rules (those of :func:`redirected`).

    httpx drops only ``Authorization`` and ``Cookie`` on the way to another
    origin and follows https -> http; mux sends on nothing but
    :data:`CROSS_ORIGIN_HEADERS` and refuses the downgrade. These are
    httpx's own redirect hooks (private, stable since 0.18); the proxied
    redirect tests in tests/core/test_http_hostile.py fail should they change.
    """

    def _redirect_url(self, request: httpx.Request, response: httpx.Response) -> httpx.URL:
        url = super()._redirect_url(request, response)
        if request.url.scheme == "https" and url.scheme == "http":
            raise httpx.UnsupportedProtocol(
                f"refused a redirect from https to plain http ({str(url)[:200]}): "
                "it would send the request unencrypted",
                request=request,
            )
        return url

    def _redirect_headers(
        self, request: httpx.Request, url: httpx.URL, method: str
    ) -> httpx.Headers:
        headers = super()._redirect_headers(request, url, method)
        if origin(url) == origin(request.url) or _is_https_upgrade(request.url, url):
            return headers
        kept = [(k, v) for k, v in headers.raw if k.lower().decode() in CROSS_ORIGIN_HEADERS]
        return httpx.Headers([(b"Host", url.netloc), *kept])
