"""The options: every problem found without connecting, at once; credentials secret."""

import attrs
import pytest
from mux_nats import NatsOptions

from mux_core.options import is_secret


def _problems(**keys: object) -> list[str]:
    options = NatsOptions(**keys)  # type: ignore[arg-type]
    try:
        NatsOptions.check(options)
    except ExceptionGroup as group:
        return [str(e) for e in group.exceptions]
    except ValueError as exc:
        return [str(exc)]
    return []


def test_every_problem_at_once() -> None:
    assert _problems(mode="jetstream", url="nats://u:pw@host", port=4333, password="x") == [
        'stream: mode = "jetstream" needs the stream to read',
        "url: give url, or host and port, not both",
        "url: put credentials in user and password (or token), not in the url",
        "password: needs a user",
    ]
    assert _problems(mode="pubsub", subject="a") == [
        "mode: must be one of core, jetstream, got 'pubsub'"
    ]
    assert _problems(url="http://host:4222", subject="a") == [
        "url: must look like nats://host:4222, got 'http://host:4222'"
    ]
    assert _problems(subject="a", user="u", token="t") == [
        "token: give user and password, or token, not both"
    ]
    assert _problems(subject="metrics.>") == []


def test_addresses_names_and_secrets() -> None:
    assert NatsOptions(url="nats://bus.example:4333", subject="a").address() == (
        "bus.example",
        4333,
    )
    assert NatsOptions(url="nats://bus.example", subject="a").address() == ("bus.example", 4222)
    assert NatsOptions(port=4333, subject="a").address() == ("127.0.0.1", 4333)
    with pytest.raises(ValueError, match=r"durable must not contain spaces, '\.', '\*' or '>'"):
        NatsOptions(mode="jetstream", stream="S", durable="a.b")
    fields = {field.name: is_secret(field) for field in attrs.fields(NatsOptions)}
    assert [name for name, secret in fields.items() if secret] == ["password", "token"]
    assert "hunter2" not in repr(NatsOptions(subject="a", user="u", password="hunter2"))
