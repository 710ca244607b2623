"""The sse transport under mux's one TLS policy, against a TLS server on 127.0.0.1.

The server is a hostile-kit server (serve_hostile) speaking through TLS with a
certificate from a throwaway CA (trustme), which no trust store holds:
``ca_file`` trusts it, ``verify = false`` skips the check (with a warning),
and everything else is refused in words and retried -- a certificate can be
renewed while mux waits, as a server can restart.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trustme

from mux_core.records import State
from mux_core.testing import Hangup, Plan, Send, serve_hostile, sse_head
from mux_sse import SseOptions, SseTransport
from tests.helpers.hostile import (
    GOOD_SSE,
    assert_still_retrying,
    event_data,
    events,
    retried_with,
    statuses,
    watch,
)
from tests.helpers.tls import expired_context, server_context, write_ca

UNKNOWN_ISSUER = (
    "TLS certificate verify failed: unknown issuer (self-signed or an untrusted CA;"
    " trust it with ca_file)"
)


def sse(url: str, **options: Any) -> SseTransport:
    return SseTransport(SseOptions(url=url, read_timeout=5.0, **options))


async def test_ca_file_trusts_a_private_ca(ca: trustme.CA, tmp_path: Path) -> None:
    async with serve_hostile(GOOD_SSE, tls=server_context(ca)) as server:
        assert server.url().startswith("https://")
        records = await watch(
            sse(server.url("/events"), ca_file=write_ca(ca, tmp_path)), event_data("after")
        )
    assert events(records)[0].data == "after"
    assert_still_retrying(records)


async def test_an_unknown_issuer_is_refused_in_words_and_retried(ca: trustme.CA) -> None:
    async with serve_hostile(GOOD_SSE, tls=server_context(ca)) as server:
        records = await watch(
            sse(server.url("/events")),
            lambda r: sum(s.state is State.SERVER_UNAVAILABLE for s in statuses(r)) >= 2,
        )
    refused = [s for s in statuses(records) if s.state is State.SERVER_UNAVAILABLE]
    assert {s.detail for s in refused} == {UNKNOWN_ISSUER}
    assert not events(records)
    assert_still_retrying(records)


async def test_another_ca_file_does_not_trust_the_server(ca: trustme.CA, tmp_path: Path) -> None:
    """ca_file replaces the default store: it is not added to it."""
    other = write_ca(trustme.CA(), tmp_path)
    async with serve_hostile(GOOD_SSE, tls=server_context(ca)) as server:
        records = await watch(sse(server.url("/events"), ca_file=other), retried_with("TLS"))
    assert retried_with(UNKNOWN_ISSUER)(records)


async def test_an_expired_certificate_is_told_so(ca: trustme.CA, tmp_path: Path) -> None:
    async with serve_hostile(GOOD_SSE, tls=expired_context(ca)) as server:
        records = await watch(
            sse(server.url("/events"), ca_file=write_ca(ca, tmp_path)),
            retried_with("TLS certificate verify failed: the certificate has expired"),
        )
    assert_still_retrying(records)


async def test_a_certificate_for_another_host_is_a_hostname_mismatch_naming_both(
    ca: trustme.CA, tmp_path: Path
) -> None:
    """The names the certificate is for come from a second look that checks the
    chain but not the name: what a person needs to fix the URL or the certificate."""
    context = server_context(ca, "trainer.example")
    async with serve_hostile(GOOD_SSE, tls=context) as server:
        records = await watch(
            sse(server.url("/events"), ca_file=write_ca(ca, tmp_path)),
            retried_with(
                "TLS certificate verify failed: hostname mismatch:"
                " the certificate is for trainer.example, not 127.0.0.1"
            ),
        )
    assert_still_retrying(records)


async def test_plain_http_on_an_https_url_is_told_so() -> None:
    plain: Plan = [Send(sse_head()), Send(b"data: x\n\n"), Hangup()]
    async with serve_hostile(plain, read_request=False) as server:  # it answers the hello
        url = server.url("/events").replace("http://", "https://")
        records = await watch(sse(url), retried_with("the server does not speak TLS on this port"))
    assert_still_retrying(records)


async def test_verify_false_connects_with_one_warning_naming_the_source(
    ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    reconnects: Plan = [Send(sse_head()), Send(b"data: once\n\n"), Hangup()]
    caplog.set_level(logging.WARNING, logger="mux.tls")
    async with serve_hostile(reconnects, tls=server_context(ca, "trainer.example")) as server:
        records = await watch(
            sse(server.url("/events"), verify=False),
            lambda r: sum(e.data == "once" for e in events(r)) >= 3,  # three sessions
        )
    assert_still_retrying(records)
    warnings = [r.getMessage() for r in caplog.records if r.name == "mux.tls"]
    assert warnings == [
        "source 'hostile': verify = false: TLS certificates are not checked, so anyone on the"
        " network path can pose as the server and read or change what it sends"
    ]


async def test_a_ca_file_without_a_certificate_fails_the_source(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    async with serve_hostile(GOOD_SSE) as server:
        url = server.url("/events").replace("http://", "https://")
        records = await watch(
            sse(url, ca_file=str(empty)),
            lambda r: any(s.state is State.FAILED for s in statuses(r)),
        )
    failed = statuses(records)[-1]
    assert failed.state is State.FAILED
    assert failed.detail == f"ca_file: {str(empty)!r} holds no PEM certificate"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"ca_file": "/nonexistent/ca.pem"}, "ca_file: no such file '/nonexistent/ca.pem'"),
        ({"ca_file": "/"}, "ca_file: '/' is a directory; name a PEM file"),
        ({"ca_file": __file__, "verify": False}, "ca_file: has no effect with verify = false"),
    ],
    ids=["missing", "directory", "with verify false"],
)
def test_check_rejects_a_ca_file_that_cannot_work(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        SseOptions.check(SseOptions(url="https://trainer.example/events", **options))
    assert str(raised.value).startswith(problem)
