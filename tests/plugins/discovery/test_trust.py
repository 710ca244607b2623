"""What a discovery answer or an endpoint file may do: no more than its [[discovery]] allows.

Real servers on 127.0.0.1 throughout: a recording SSE server stands for the
trainers (and for an attacker's host), a list server or a hostile server
for the discovery endpoint. The config is trusted, what is discovered is
not (docs/security.md): it never reads the environment, never retries
faster than the config, never adds more than ``max_sources``, and nothing
a discovery server does ends the ``http`` discoverer.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import ssl
import subprocess
from functools import partial
from pathlib import Path

import pytest
import trio
import trustme

from mux_core import State
from mux_core.testing import Hangup, Plan, Reset, Send, http_head, serve_hostile, serve_sse
from tests.helpers.e2e import (
    FAST_RETRY,
    MUX,
    closed_port,
    file_sink_toml,
    file_states,
    read_jsonl,
    running_engine,
    source_toml,
    stderr_of,
    terminate,
    wait_for_file,
    write_config,
)
from tests.plugins.discovery.lister import SCRIPTED_ALLOWED, ListServer

CANARY_VARIABLE = "MUX_CANARY_SECRET"
REFERENCE = "${" + CANARY_VARIABLE + "}"


def _scripted(name: str, events: int = 1) -> dict[str, object]:
    return {"name": name, "transport": "scripted", "script": [f"events:{events}"], "then": "hang"}


def _json_answer(body: bytes) -> Send:
    head = http_head(200, {"Content-Type": "application/json", "Content-Length": str(len(body))})
    return Send(head + body)


async def _wait_for_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 10) -> None:
    with trio.fail_after(timeout):
        while text not in caplog.text:  # noqa: ASYNC110 -- the engine logs from its own tasks
            await trio.sleep(0.01)


async def _start_mux(nursery: trio.Nursery, config: Path, env: dict[str, str]) -> trio.Process:
    """``mux run`` with ``env`` added to a clean environment; stderr to CONFIG.stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MUX_")}
    with open(config.with_suffix(".stderr"), "wb") as stderr:  # noqa: ASYNC230 -- tiny, once
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [*MUX, "run", str(config), "--for", "60"],
                check=False,
                stdin=None,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env={**clean, **env},
            )
        )
    return process


async def test_no_discovered_table_reads_the_environment(tmp_path: Path) -> None:
    """${VAR} in a discovery answer and in an endpoint file -- in a URL, in a header --
    is sent as those characters: the canary value never reaches any server, log or file."""
    canary = f"canary-{secrets.token_hex(8)}"
    out = tmp_path / "events.jsonl"
    runs = tmp_path / "runs"
    runs.mkdir()
    lister = ListServer()
    async with serve_sse() as trainer, trio.open_nursery() as servers:
        await lister.start(servers)
        lister.body = json.dumps(
            [
                {"name": "http-url", "transport": "sse", "url": f"{trainer.url}?k={REFERENCE}"},
                {
                    "name": "http-header",
                    "transport": "sse",
                    "url": trainer.url,
                    "headers": {"X-Token": REFERENCE},
                },
            ]
        ).encode()
        (runs / "mux.toml").write_text(
            "[[sources]]\n"
            f'name = "file-url"\ntransport = "sse"\nurl = "{trainer.url}?k={REFERENCE}"\n'
            "[[sources]]\n"
            f'name = "file-header"\ntransport = "sse"\nurl = "{trainer.url}"\n'
            f'headers = {{ X-Token = "{REFERENCE}" }}\n'
        )
        allowed = 'allow_options = ["url", "headers"]\n'  # so that they connect at all
        config = write_config(
            tmp_path / "m.toml",
            FAST_RETRY
            + file_sink_toml(out)
            + f'\n[[discovery]]\ntype = "http"\nurl = "{lister.url}"\ninterval = 0.05\n{allowed}'
            + f'\n[[discovery]]\ntype = "files"\npaths = ["{runs}/*.toml"]\ninterval = 0.05\n'
            + allowed,
        )
        names = {"http-url", "http-header", "file-url", "file-header"}
        async with trio.open_nursery() as nursery:
            process = await _start_mux(nursery, config, {CANARY_VARIABLE: canary})
            await wait_for_file(
                out,
                lambda r: all("connected" in file_states(r, name) for name in names),
                process=process,
            )
            assert await terminate(process, config) == 0, stderr_of(config)
        servers.cancel_scope.cancel()
    sent = [request.target for request in trainer.requests]
    sent += [f"{k}: {v}" for request in trainer.requests for k, v in request.headers.items()]
    assert len(trainer.requests) == 4
    assert not [line for line in sent if canary in line]
    # What was discovered arrived as written: the reference itself, not its value.
    assert sorted(r.query.get("k", "") for r in trainer.requests) == ["", "", REFERENCE, REFERENCE]
    assert sorted(r.headers.get("x-token", "") for r in trainer.requests) == [
        "",
        "",
        REFERENCE,
        REFERENCE,
    ]
    assert not [head for head in lister.heads if canary.encode() in head]
    assert canary not in stderr_of(config)
    assert canary not in out.read_text()


async def test_headers_come_only_from_the_discovery_tables_defaults(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default a discovered table may not set headers (left out, one warning); the
    [[discovery]] table's defaults give every discovered source the config's headers."""
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("TRAIN_TOKEN", "token-from-the-config")
    lister = ListServer()
    async with serve_sse() as trainer, trio.open_nursery() as servers:
        await lister.start(servers)
        lister.body = json.dumps(
            [
                {"name": "plain", "transport": "sse", "url": trainer.url},
                {"name": "own", "transport": "sse", "url": trainer.url, "headers": {"A": "b"}},
            ]
        ).encode()
        toml = FAST_RETRY + (
            f'\n[[discovery]]\ntype = "http"\nurl = "{lister.url}"\ninterval = 0.05\n'
            'defaults = { headers = { Authorization = "Bearer ${TRAIN_TOKEN}" } }\n'
        )
        async with running_engine(toml) as (_engine, sink):
            await sink.wait_for(lambda s: State.CONNECTED in [x.state for x in s.statuses])
            await lister.wait_for_polls(lister.polls + 3)
        servers.cancel_scope.cancel()
    assert {s.source for s in sink.statuses} == {"plain"}
    assert [r.headers.get("authorization") for r in trainer.requests] == [
        "Bearer token-from-the-config"
    ]
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(left_out) == 1, left_out
    assert (
        "1 of 2 discovered tables left out: 1 setting an option outside allow_options"
        in (left_out[0])
    )
    assert "sources[1].headers: a discovered source may not set 'headers'" in left_out[0]


async def test_a_discovered_source_retries_no_faster_than_the_config(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A discovered table asking for zero delays at a 503 server connects no more often
    than a configured source does under the config's policy (counted, not timed)."""
    caplog.set_level(logging.INFO)
    unavailable: Plan = [
        Send(http_head(503, {"Content-Length": "0", "Connection": "close"})),
        Hangup(),
    ]
    lister = ListServer()
    async with (
        serve_hostile(unavailable) as configured,
        serve_hostile(unavailable) as eager,
        trio.open_nursery() as servers,
    ):
        await lister.start(servers)
        zero = {"initial_delay": 0, "max_delay": 0, "min_delay": 0, "jitter": 0, "multiplier": 1}
        lister.body = json.dumps(
            [{"name": "eager", "transport": "sse", "url": eager.url("/events"), "retry": zero}]
        ).encode()
        toml = (
            "[retry]\ninitial_delay = 0.1\nmax_delay = 0.1\nmultiplier = 1.0\njitter = 0.0\n"
            + source_toml("configured", "sse", configured.url("/events"))
            + f'\n[[discovery]]\ntype = "http"\nurl = "{lister.url}"\ninterval = 0.05\n'
        )
        async with running_engine(toml):
            await eager.wait_for_connections(1)
            start_configured, start_eager = configured.connections, eager.connections
            # The window: ten more attempts of the configured source (about a second).
            await configured.wait_for_connections(start_configured + 10, timeout=30)
            attempts = eager.connections - start_eager
        servers.cancel_scope.cancel()
    # Zero delays would be hundreds; the config's floor allows about as many as its own.
    assert attempts <= 10 + 3, attempts


async def test_the_http_discoverer_survives_a_reset_first_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The first poll is reset: reported once in words, and the next poll's sources run."""
    caplog.set_level(logging.INFO)
    body = json.dumps([_scripted("after-reset", 3)]).encode()
    async with serve_hostile([Reset()], [_json_answer(body), Hangup()]) as sd:
        toml = FAST_RETRY + (
            f'\n[[discovery]]\ntype = "http"\nurl = "{sd.url("/sd")}"\ninterval = 30\n'
            + SCRIPTED_ALLOWED
        )
        async with running_engine(toml) as (_engine, sink):
            await sink.wait_for(lambda s: len(s.events) == 3)
    assert [e.source for e in sink.events] == ["after-reset"] * 3
    failures = [r for r in caplog.records if "the last good list is kept" in r.getMessage()]
    assert len(failures) == 1
    assert "connection reset" in failures[0].getMessage()
    assert failures[0].exc_info is None
    assert "stopped on an error" not in caplog.text and "Traceback" not in caplog.text


async def test_the_http_discoverer_survives_garbage_and_oversize_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Answers too deep, with a 5,000-digit number, over max_answer_bytes or not HTTP:
    each a failed poll told once, then the good answer's sources run."""
    caplog.set_level(logging.INFO)
    good = json.dumps([_scripted("survivor", 2)]).encode()
    too_large = http_head(200, {"Content-Type": "application/json", "Content-Length": "5000000"})
    async with serve_hostile(
        [_json_answer(b"[" * 100_000), Hangup()],
        [_json_answer(b"[" + b"1" * 5000 + b"]"), Hangup()],
        [Send(too_large), Hangup()],
        [Send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n"), Hangup()],
        [_json_answer(good), Hangup()],
    ) as sd:
        toml = FAST_RETRY + (
            f'\n[[discovery]]\ntype = "http"\nurl = "{sd.url("/sd")}"\ninterval = 30\n'
            + SCRIPTED_ALLOWED
        )
        async with running_engine(toml) as (_engine, sink):
            await sink.wait_for(lambda s: len(s.events) == 2)
    failures = [r.getMessage() for r in caplog.records if "last good list" in r.getMessage()]
    assert len(failures) == 4, failures
    assert "nested too deeply" in failures[0]
    assert "a number too long" in failures[1]
    assert "larger than 1048576 bytes (max_answer_bytes)" in failures[2]
    assert "not HTTP" in failures[3]
    assert "stopped on an error" not in caplog.text and "Traceback" not in caplog.text


async def test_the_http_discoverer_survives_tls_failures(
    caplog: pytest.LogCaptureFixture, tls_server_context: ssl.SSLContext
) -> None:
    """A discovery server whose certificate is not trusted (a throwaway CA's): every
    poll fails in words, and the discoverer keeps polling (a TLS failure ended it)."""
    caplog.set_level(logging.INFO)
    async with serve_hostile([Hangup()], tls=tls_server_context) as sd:
        toml = FAST_RETRY + (
            f'\n[[discovery]]\ntype = "http"\nurl = "{sd.url("/sd")}"\ninterval = 30\n'
        )
        async with running_engine(toml):
            await sd.wait_for_connections(4)
    failures = [r.getMessage() for r in caplog.records if "last good list" in r.getMessage()]
    assert len(failures) == 1, failures  # told once, however many polls fail alike
    assert "TLS" in failures[0] or "certificate" in failures[0], failures[0]
    assert "stopped on an error" not in caplog.text and "Traceback" not in caplog.text


async def test_the_http_discoverer_follows_the_one_tls_policy(
    caplog: pytest.LogCaptureFixture,
    ca: trustme.CA,
    tls_server_context: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    """ca_file trusts a private CA; verify = false connects to it too, with one warning."""
    caplog.set_level(logging.INFO)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    answers: Plan = [_json_answer(json.dumps([_scripted("trusted")]).encode()), Hangup()]
    other: Plan = [_json_answer(json.dumps([_scripted("unchecked")]).encode()), Hangup()]
    async with (
        serve_hostile(answers, tls=tls_server_context) as trusted,
        serve_hostile(other, tls=tls_server_context) as unchecked,
    ):
        toml = FAST_RETRY + (
            f'\n[[discovery]]\ntype = "http"\nurl = "{trusted.url("/sd")}"\ninterval = 30\n'
            f'ca_file = "{bundle}"\n{SCRIPTED_ALLOWED}'
            f'\n[[discovery]]\ntype = "http"\nname = "insecure"\nurl = "{unchecked.url("/sd")}"\n'
            f"interval = 30\nverify = false\n{SCRIPTED_ALLOWED}"
        )
        async with running_engine(toml) as (_engine, sink):
            await sink.wait_for(lambda s: {e.source for e in s.events} == {"trusted", "unchecked"})
    assert "last good list" not in caplog.text
    warnings = [
        r.getMessage()
        for r in caplog.records
        if "TLS certificates are not checked" in r.getMessage()
    ]
    assert len(warnings) == 1 and warnings[0].startswith("discovery 'insecure': verify = false")


async def test_max_sources_keeps_exactly_the_cap_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """5,000 discovered tables: the first 1,000 (the default max_sources) run, the
    rest are ignored with one warning, also when the answer changes and stays too long."""
    caplog.set_level(logging.INFO)
    lister = ListServer()
    tables = [_scripted(f"s{n:04}") for n in range(5000)]
    async with trio.open_nursery() as servers:
        await lister.start(servers)
        lister.body = json.dumps(tables).encode()
        toml = FAST_RETRY + (
            f'\n[[discovery]]\ntype = "http"\nurl = "{lister.url}"\ninterval = 0.05\n'
            + SCRIPTED_ALLOWED
        )
        async with running_engine(toml) as (_engine, sink):
            await sink.wait_for(lambda s: len(s.events) == 1000, timeout=60)
            lister.body = json.dumps([*tables, _scripted("s5000")]).encode()  # still too many
            # Polls follow one another: the third one after it, the changed answer was applied.
            await lister.wait_for_polls(lister.polls + 3)
        servers.cancel_scope.cancel()
    assert sorted({e.source for e in sink.events}) == [f"s{n:04}" for n in range(1000)]
    capped = [r for r in caplog.records if "max_sources" in r.getMessage()]
    assert len(capped) == 1
    assert capped[0].levelno == logging.WARNING
    assert "the first 1000 are kept, the other 4000 discovered tables are ignored" in (
        capped[0].getMessage()
    )


async def test_bad_names_are_left_out_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """Names with control characters or over 200 characters: left out, all told in one
    warning line (escaped), not once per table and not again on every poll."""
    caplog.set_level(logging.INFO)
    lister = ListServer()
    bad = ["forged\nERROR mux.engine: FORGED", "\x1b[31mred", "x" * 201, "rtl\u202eevil"]
    tables = [_scripted("good"), *(_scripted(name) for name in bad)]
    async with trio.open_nursery() as servers:
        await lister.start(servers)
        lister.body = json.dumps(tables).encode()
        toml = FAST_RETRY + (
            f'\n[[discovery]]\ntype = "http"\nurl = "{lister.url}"\ninterval = 0.05\n'
            + SCRIPTED_ALLOWED
        )
        async with running_engine(toml) as (_engine, sink):
            await sink.wait_for(lambda s: len(s.events) == 1)
            lister.body = json.dumps([*tables, _scripted("good-2")]).encode()  # same bad ones
            await sink.wait_for(lambda s: len(s.events) == 2)
            await lister.wait_for_polls(lister.polls + 3)
        servers.cancel_scope.cancel()
    assert sorted({e.source for e in sink.events}) == ["good", "good-2"]
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(left_out) == 1, left_out
    line = left_out[0]
    assert (
        "4 of 5 discovered tables left out: 4 with a name that is unprintable or too long" in line
    )
    assert "sources[1].name: the source name 'forged\\nERROR" in line
    assert "\n" not in line and "\x1b" not in caplog.text


async def test_a_discovery_url_is_never_logged_with_its_credentials(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``http://alice:PW@host/sd?token=TOKEN``, the server down: the failure is logged
    with the password and the query values masked -- from ${VAR} or written out."""
    caplog.set_level(logging.DEBUG)
    password, token = f"pw-{secrets.token_hex(6)}", f"tok-{secrets.token_hex(6)}"
    literal = f"lit-{secrets.token_hex(6)}"
    monkeypatch.setenv("SD_PASSWORD", password)
    monkeypatch.setenv("SD_TOKEN", token)
    with closed_port() as port:
        url = f"http://alice:${{SD_PASSWORD}}@127.0.0.1:{port}/sd?token=${{SD_TOKEN}}&k={literal}"
        toml = FAST_RETRY + (f'\n[[discovery]]\ntype = "http"\nurl = "{url}"\ninterval = 30\n')
        async with running_engine(toml):
            await _wait_for_log(caplog, "the last good list is kept")
    for secret in (password, token, literal):
        assert secret not in caplog.text
    assert f"http://alice:***@127.0.0.1:{port}/sd?token=***&k=***: connection refused" in (
        caplog.text
    )


async def test_a_refused_table_stops_its_running_source(tmp_path: Path) -> None:
    """An endpoint file that turns into something its [[discovery]] does not allow (a
    host outside allow_hosts): its source stops -- the policy holds on every update."""
    out = tmp_path / "events.jsonl"
    endpoint = tmp_path / "mux.json"
    async with serve_sse() as trainer:
        endpoint.write_text(json.dumps({"name": "t", "transport": "sse", "url": trainer.url}))
        config = write_config(
            tmp_path / "m.toml",
            FAST_RETRY
            + file_sink_toml(out)
            + f'\n[[discovery]]\ntype = "files"\npaths = ["{endpoint}"]\ninterval = 0.05\n',
        )
        async with trio.open_nursery() as nursery:
            process = await _start_mux(nursery, config, {})
            await wait_for_file(out, lambda r: "connected" in file_states(r, "t"), process=process)
            moved = {"name": "t", "transport": "sse", "url": "http://evil.example:1/x"}
            tmp = endpoint.with_suffix(".tmp")
            tmp.write_text(json.dumps(moved))
            tmp.replace(endpoint)
            await wait_for_file(out, lambda r: "stopped" in file_states(r, "t"), process=process)
            assert await terminate(process, config) == 0, stderr_of(config)
    err = stderr_of(config)
    assert "the host 'evil.example' is not in allow_hosts" in err
    assert err.count("left out") == 1
    assert len(trainer.requests) == 1
    stopped = next(r for r in read_jsonl(out) if r["type"] == "status" and r["state"] == "stopped")
    assert stopped["detail"] == "no longer discovered"
