"""An option a plugin marks ``secret()`` never reaches output.

A third party's transport, installed from its own module, with one secret
option whose name says nothing (``signing_key``: no name-based luck), a
validator and a ``check()`` that quote it, and a session that logs it, puts
it in its status detail and crashes with it in the exception: the canary
value appears in none of ``mux check``'s output, a config error, ``mux
check --probe``'s verdicts, the log of ``mux run`` or the file it writes.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest

import mux_core.testing
from mux_core import ConfigError, PluginManager, parse_config
from mux_core.options import is_secret, secret

CANARY = "sk-canary-5f1e2d9b"

PLUGIN = """
from __future__ import annotations

import logging

import attrs

from mux_core import Failed, Session, hookimpl
from mux_core.hookspecs import Register
from mux_core.options import secret

_log = logging.getLogger("vault")


def _signing_key(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not value.startswith("sk-"):
        raise ValueError(f"{attribute.name} must start with sk-, got {value!r}")


@attrs.frozen(kw_only=True)
class VaultOptions:
    #: The key that signs each request.
    signing_key: str = attrs.field(validator=_signing_key, metadata=secret())
    #: A name for the logs.
    label: str = "vault"
    #: Not secret, although the name says token.
    max_tokens: int = attrs.field(default=8, metadata=secret(False))
    #: Crash instead of failing (a bug, as a plugin may have one).
    crash: bool = False

    @classmethod
    def check(cls, options: VaultOptions) -> None:
        if options.label == "bad":
            raise ValueError(f"label 'bad' cannot sign with {options.signing_key}")


class VaultTransport:
    Options = VaultOptions

    def __init__(self, options: VaultOptions) -> None:
        self.options = options

    async def run_session(self, session: Session) -> None:
        key = self.options.signing_key
        _log.warning("signing with %s", key)
        if self.options.crash:
            raise RuntimeError(f"bug: {key} was rejected")
        raise Failed(f"the server refused key {key}")


@hookimpl
def mux_register_transports(register: Register) -> None:
    register("vault", VaultTransport)
"""


def _install(tmp_path: Path) -> dict[str, str]:
    """The plugin as a module of its own; the environment that loads it."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "vault_mux_plugin.py").write_text(PLUGIN)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "MUX_PLUGIN_MODULES": "vault_mux_plugin",
    }


def _mux(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mux_core", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def _config(tmp_path: Path, sources: str) -> Path:
    path = tmp_path / "vault.toml"
    path.write_text(
        textwrap.dedent(sources)
        + textwrap.dedent(
            """
            [[sinks]]
            type = "log"

            [[sinks]]
            type = "file"
            path = "out.jsonl"
            """
        )
    )
    return path


_TWO_SOURCES = f"""
    [[sources]]
    name = "refused"
    transport = "vault"
    signing_key = "{CANARY}"
    max_tokens = 12345

    [[sources]]
    name = "crashing"
    transport = "vault"
    signing_key = "{CANARY}"
    crash = true
"""


def test_mux_check_shows_a_secret_option_as_stars(tmp_path: Path) -> None:
    env = _install(tmp_path)
    config = _config(tmp_path, _TWO_SOURCES)
    result = _mux("check", str(config), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert CANARY not in result.stdout + result.stderr
    assert result.stdout.count('signing_key = "***"') == 2
    # Only the marked option: the others are shown as they are.
    assert 'label = "vault"' in result.stdout
    assert "max_tokens = 12345" in result.stdout  # secret(False) beats the name


def test_the_probe_masks_what_a_source_says(tmp_path: Path) -> None:
    env = _install(tmp_path)
    config = _config(tmp_path, _TWO_SOURCES)
    result = _mux("check", "--probe", "--quiet", str(config), env=env, cwd=tmp_path)
    assert CANARY not in result.stdout + result.stderr
    assert "the server refused key ***" in result.stdout
    assert "bug: *** was rejected" in result.stdout


def test_the_log_and_the_records_of_a_run_never_hold_the_secret(tmp_path: Path) -> None:
    env = _install(tmp_path)
    config = _config(tmp_path, _TWO_SOURCES)
    result = _mux("run", str(config), env=env, cwd=tmp_path)
    assert result.returncode == 3, result.stderr  # a source ended in failed
    written = (tmp_path / "out.jsonl").read_text()
    assert CANARY not in result.stderr + result.stdout + written
    # What carried the secret got through, masked: the plugin's own log line,
    # the status detail (log sink and file), the crash's detail and traceback.
    assert result.stderr.count("vault: signing with ***") == 2
    assert "refused: failed (attempt 1): the server refused key ***" in result.stderr
    assert '"detail":"the server refused key ***"' in written
    assert "RuntimeError: bug: *** was rejected" in result.stderr  # the traceback
    assert "internal error in transport 'vault': RuntimeError('bug: *** was rejected')" in written


# -- config errors (in-process: the loader itself) ------------------------------------


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PluginManager:
    _install(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    vault_mux_plugin = importlib.import_module("vault_mux_plugin")
    manager = PluginManager()
    manager.register(vault_mux_plugin, name="vault")
    manager.register(mux_core.testing, name="testing")  # the "collect" sink
    return manager


def _error(text: str, plugins: PluginManager) -> str:
    config = text + '\n[[sinks]]\ntype = "collect"\n'
    with pytest.raises(ConfigError) as caught:
        parse_config(textwrap.dedent(config), path="vault.toml", plugins=plugins)
    return str(caught.value)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        # A validator quoting the value, long and short.
        ('"canary-5f1e2d9b"', "sources[0].signing_key: signing_key must start with sk-, got '***'"),
        ('"cn"', "sources[0].signing_key: signing_key must start with sk-, got '***'"),
        # The wrong type: the value is not shown either.
        ("529147", "sources[0].signing_key: expected a string, got an integer ***"),
    ],
)
def test_a_validator_error_never_echoes_the_secret(
    plugins: PluginManager, key: str, message: str
) -> None:
    text = _error(f'[[sources]]\nname = "v"\ntransport = "vault"\nsigning_key = {key}\n', plugins)
    assert text == f"vault.toml:4: {message}"
    assert key.strip('"') not in text.replace("***", "")
    assert "***" in text


def test_a_check_error_never_echoes_the_secret(plugins: PluginManager) -> None:
    text = _error(
        f'[[sources]]\nname = "v"\ntransport = "vault"\nsigning_key = "{CANARY}"\nlabel = "bad"\n',
        plugins,
    )
    assert text == "vault.toml:1: sources[0]: label 'bad' cannot sign with ***"


def test_secret_marks_the_field_and_the_name_is_the_fallback() -> None:
    @attrs.frozen
    class Options:
        dsn: str = attrs.field(default="", metadata=secret())
        api_token: str = ""
        max_tokens: int = attrs.field(default=0, metadata=secret(False))
        url: str = ""

    fields = attrs.fields_dict(Options)
    assert [name for name, field in fields.items() if is_secret(field)] == ["dsn", "api_token"]
