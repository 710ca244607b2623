"""The one masking function (``mux_core._config.render.mask``): what any output
of mux -- logs, ``mux check``, status details, errors -- shows of a secret."""

from __future__ import annotations

import pytest

from mux_core._config.render import mask


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # A URL's password and query values, alone or inside a sentence.
        ("http://bob:pw1@host/ev?token=T0K&k=v", "http://bob:***@host/ev?token=***&k=***"),
        (
            "discovery 'http': http://u:p@127.0.0.1:9/sd?token=abc: connection refused",
            "discovery 'http': http://u:***@127.0.0.1:9/sd?token=***: connection refused",
        ),
        ("redis://:hunter2@10.0.0.1:6379/0 refused", "redis://:***@10.0.0.1:6379/0 refused"),
        ("see (https://h/x?a=1).", "see (https://h/x?a=***)."),
        # A query key without a value says which was set, nothing more.
        ("https://h/x?flag&n=2", "https://h/x?flag&n=***"),
        # No URL, nothing to do.
        ("connection refused", "connection refused"),
    ],
)
def test_urls_in_any_text_lose_their_password_and_query_values(text: str, shown: str) -> None:
    assert mask(text, ()) == shown


def test_a_secret_is_masked_whole_inside_a_text_and_a_short_one_only_quoted() -> None:
    assert mask("Bearer abcdef0123 refused", {"abcdef0123"}) == "Bearer *** refused"
    assert mask("abcdef0123", {"abcdef0123"}) == "***"
    # A one-character secret does not turn every digit into stars.
    assert mask("port 1 is '1'", {"1"}) == "port 1 is '***'"
