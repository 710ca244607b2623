"""The rest transport under mux's one TLS policy (see tests/plugins/sse/test_tls.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trustme

from mux_core.records import State
from mux_core.testing import serve_hostile
from mux_rest import RestOptions, RestTransport
from tests.helpers.hostile import (
    GOOD_REST,
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
AFTER = {"id": 9, "v": "after"}


def rest(url: str, **options: Any) -> RestTransport:
    return RestTransport(RestOptions(url=url, interval=0.01, **options))


async def test_ca_file_trusts_a_private_ca(ca: trustme.CA, tmp_path: Path) -> None:
    async with serve_hostile(GOOD_REST, tls=server_context(ca)) as server:
        records = await watch(
            rest(server.url("/m"), ca_file=write_ca(ca, tmp_path)), event_data(AFTER)
        )
    assert events(records)[0].data == AFTER
    assert_still_retrying(records)


async def test_an_unknown_issuer_is_refused_in_words_and_retried(ca: trustme.CA) -> None:
    async with serve_hostile(GOOD_REST, tls=server_context(ca)) as server:
        records = await watch(
            rest(server.url("/m")),
            lambda r: sum(s.state is State.SERVER_UNAVAILABLE for s in statuses(r)) >= 2,
        )
    refused = [s for s in statuses(records) if s.state is State.SERVER_UNAVAILABLE]
    assert {s.detail for s in refused} == {UNKNOWN_ISSUER}
    assert not events(records)
    assert_still_retrying(records)


async def test_an_expired_certificate_is_told_so(ca: trustme.CA, tmp_path: Path) -> None:
    async with serve_hostile(GOOD_REST, tls=expired_context(ca)) as server:
        records = await watch(
            rest(server.url("/m"), ca_file=write_ca(ca, tmp_path)),
            retried_with("TLS certificate verify failed: the certificate has expired"),
        )
    assert_still_retrying(records)


async def test_a_certificate_for_another_host_is_a_hostname_mismatch_naming_both(
    ca: trustme.CA, tmp_path: Path
) -> None:
    async with serve_hostile(GOOD_REST, tls=server_context(ca, "trainer.example")) as server:
        records = await watch(
            rest(server.url("/m"), ca_file=write_ca(ca, tmp_path)),
            retried_with(
                "TLS certificate verify failed: hostname mismatch:"
                " the certificate is for trainer.example, not 127.0.0.1"
            ),
        )
    assert_still_retrying(records)


async def test_verify_false_connects_with_one_warning_naming_the_source(
    ca: trustme.CA, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mux.tls")
    async with serve_hostile(GOOD_REST, tls=server_context(ca, "trainer.example")) as server:
        records = await watch(rest(server.url("/m"), verify=False), event_data(AFTER))
    assert events(records)[0].data == AFTER
    warnings = [r.getMessage() for r in caplog.records if r.name == "mux.tls"]
    assert len(warnings) == 1
    assert warnings[0].startswith("source 'hostile': verify = false: TLS certificates are not")


def test_check_rejects_a_missing_ca_file() -> None:
    options = RestOptions(url="https://trainer.example/m", ca_file="/nonexistent/ca.pem")
    with pytest.raises(ValueError) as raised:
        RestOptions.check(options)
    assert str(raised.value) == "ca_file: no such file '/nonexistent/ca.pem'"
