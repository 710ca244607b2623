"""One TLS policy for every TLS client (mux_core.http's tls_context and its kin).

The transports' own tests connect through it (tests/plugins/*/test_tls.py, the
wss tests, the rediss test); these pin the policy itself: the default trust
store and its fallback, ca_file replacing it, verify = false, the checks a
config gets at mux check, and a failed handshake told in words.
"""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
import trustme

from mux_core.errors import describe_connection_error
from mux_core.http import tls_context, tls_problem, unverified_warning
from tests.helpers.e2e import MUX
from tests.helpers.redis import env_without_mux
from tests.helpers.tls import write_ca


def _cas(context: ssl.SSLContext) -> int:
    return context.cert_store_stats()["x509_ca"]


def test_verification_is_on_by_default() -> None:
    context = tls_context()
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname


def test_the_default_store_is_the_systems_as_ssl_cert_file_names_it(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", write_ca(ca, tmp_path))
    context = tls_context()
    assert _cas(context) == 1  # that store alone: certifi is not added to it
    assert context.get_ca_certs(binary_form=True) == [_der(ca)]


def _der(ca: trustme.CA) -> bytes:
    return ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode())


def test_certifi_only_where_python_sees_no_system_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import certifi

    empty_dir = tmp_path / "certs"
    empty_dir.mkdir()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))
    monkeypatch.setenv("SSL_CERT_DIR", str(empty_dir))
    context = tls_context()
    bundle = ssl.create_default_context(cafile=certifi.where())
    assert _cas(context) == _cas(bundle) > 50


def test_ca_file_replaces_the_default_store(ca: trustme.CA, tmp_path: Path) -> None:
    context = tls_context(ca_file=write_ca(ca, tmp_path))
    assert _cas(context) == 1
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_a_ca_file_in_the_home_directory_may_start_with_a_tilde(
    ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    write_ca(ca, tmp_path)
    assert tls_problem(verify=True, ca_file="~/ca.pem") == ""
    assert _cas(tls_context(ca_file="~/ca.pem")) == 1


def test_verify_false_checks_nothing() -> None:
    context = tls_context(verify=False)
    assert context.verify_mode is ssl.CERT_NONE
    assert not context.check_hostname


def test_a_ca_file_without_a_certificate_is_a_value_error_in_words(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(ValueError) as raised:
        tls_context(ca_file=str(bad))
    assert str(raised.value) == f"ca_file: {str(bad)!r} holds no PEM certificate"


def test_tls_problem_reads_only_the_file_system(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("anything")  # its content is judged when a run loads it
    assert tls_problem(verify=True, ca_file=None) == ""
    assert tls_problem(verify=False, ca_file=None) == ""
    assert tls_problem(verify=True, ca_file=str(pem)) == ""
    assert tls_problem(verify=True, ca_file=str(tmp_path / "x.pem")).startswith(
        "ca_file: no such file"
    )
    assert tls_problem(verify=False, ca_file=str(pem)).startswith(
        "ca_file: has no effect with verify = false"
    )


# -- a failed handshake in words ---------------------------------------------------


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_code = code
    error.verify_message = message
    return error


@pytest.mark.parametrize(
    ("code", "message", "words"),
    [
        (20, "unable to get local issuer certificate", "unknown issuer (self-signed or an"),
        (18, "self-signed certificate", "unknown issuer (self-signed or an untrusted CA;"),
        (19, "self-signed certificate in certificate chain", "unknown issuer"),
        (10, "certificate has expired", "the certificate has expired"),
        (9, "certificate is not yet valid", "the certificate is not valid yet"),
        (
            62,
            "Hostname mismatch, certificate is not valid for 'trainer.example'.",
            "hostname mismatch: the certificate is not valid for trainer.example",
        ),
        (
            64,
            "IP address mismatch, certificate is not valid for '10.0.0.5'.",
            "hostname mismatch: the certificate is not valid for 10.0.0.5",
        ),
        (7, "certificate signature failure", "certificate signature failure"),
    ],
)
def test_a_certificate_failure_is_told_in_words(code: int, message: str, words: str) -> None:
    wrapped = ConnectionError("could not connect")
    wrapped.__cause__ = _verify_error(code, message)
    detail = describe_connection_error(wrapped)
    assert detail is not None
    assert detail.startswith("TLS certificate verify failed: " + words)
    assert "[SSL" not in detail and "_ssl.c" not in detail


def test_a_mismatch_names_what_the_certificate_is_for_when_that_is_known() -> None:
    error = _verify_error(62, "Hostname mismatch, certificate is not valid for '10.0.0.5'.")
    error.certificate_names = ("trainer.example", "10.0.0.6")  # type: ignore[attr-defined]
    assert describe_connection_error(error) == (
        "TLS certificate verify failed: hostname mismatch: the certificate is for"
        " trainer.example, 10.0.0.6, not 10.0.0.5"
    )


async def test_certificate_names_reads_the_names_over_a_second_connection(
    ca: trustme.CA, tmp_path: Path
) -> None:
    from mux_core.http import certificate_names
    from mux_core.testing import Hangup, serve_hostile
    from tests.helpers.tls import server_context

    trusting = tls_context(ca_file=write_ca(ca, tmp_path))
    context = server_context(ca, "trainer.example", "10.1.2.3")
    async with serve_hostile([Hangup()], tls=context) as server:  # it reads: it shakes hands
        names = await certificate_names("127.0.0.1", server.port, trusting)
        untrusted = await certificate_names("127.0.0.1", server.port, tls_context(verify=False))
    assert names == ("trainer.example", "10.1.2.3")
    assert untrusted == ()  # no CA to check the chain with: nothing is read unverified


def test_plain_http_where_tls_was_expected_is_told_so() -> None:
    error = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    error.reason = "WRONG_VERSION_NUMBER"
    assert describe_connection_error(error) == (
        "the server does not speak TLS on this port (http:// instead of https://?)"
    )


# -- verify = false is said at mux check ------------------------------------------


def test_mux_check_warns_about_each_table_with_verify_false(tmp_path: Path) -> None:
    config = tmp_path / "mon.toml"
    config.write_text(
        '[[sources]]\nname = "train"\ntransport = "sse"\nurl = "https://trainer.example/e"\n'
        "verify = false\n"
        '\n[[sources]]\nname = "checked"\ntransport = "ws"\nurl = "wss://trainer.example/ws"\n'
        '\n[[sinks]]\ntype = "redis-stream"\nname = "relay"\n'
        'url = "rediss://redis.example:6380/0"\nverify = false\n'
    )
    result = subprocess.run(
        [*MUX, "check", "-q", str(config)],
        capture_output=True,
        text=True,
        env=env_without_mux(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("mux: warning")]
    assert warnings == [
        "mux: warning: " + unverified_warning("source 'train'"),
        "mux: warning: " + unverified_warning("sink 'relay'"),
    ]


def test_mux_check_rejects_a_missing_ca_file_at_its_line(tmp_path: Path) -> None:
    config = tmp_path / "mon.toml"
    config.write_text(
        '[[sources]]\nname = "train"\ntransport = "rest"\nurl = "https://trainer.example/m"\n'
        'ca_file = "/nonexistent/ca.pem"\n\n[[sinks]]\ntype = "log"\n'
    )
    result = subprocess.run(
        [*MUX, "check", "-q", str(config)],
        capture_output=True,
        text=True,
        env=env_without_mux(),
        timeout=60,
    )
    assert result.returncode == 2
    assert f"{config}:5:" in result.stderr
    assert "ca_file: no such file '/nonexistent/ca.pem'" in result.stderr
    assert "Traceback" not in result.stderr
