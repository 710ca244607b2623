"""The resolved config as TOML with secrets masked (``mux check``), and the masking itself."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from .convert import describe_value
from .positions import KeyPath
from .records import QUALITY_INTERVAL, QUALITY_WINDOW, Config
from .reference import field_comments

__all__ = ["render_config"]

_SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "credential")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def render_config(config: Config) -> str:
    """The resolved config as TOML, secrets shown as ``***`` (``mux check``)."""
    secrets = config.secrets
    lines = [f'# {config.path}: the resolved config; secrets are shown as "***"', ""]
    if config.shard is not None:
        lines += [f'shard = "{config.shard}"', ""]
    if config.state_dir is not None:
        lines += [f"state_dir = {_toml_string(config.state_dir)}", ""]
    if (config.quality_interval, config.quality_window) != (QUALITY_INTERVAL, QUALITY_WINDOW):
        lines.append(f"quality_interval = {config.quality_interval!r}")
        lines += [f"quality_window = {config.quality_window!r}", ""]
    lines.append("[retry]")
    lines += _render_fields(config.retry, secrets)
    for source in config.sources:
        lines += ["", "[[sources]]", f"name = {_toml_string(source.name)}"]
        lines.append(f"transport = {_toml_string(source.transport)}")
        if source.lag_field is not None:
            lines.append(f"lag_field = {_toml_string(source.lag_field)}")
        lines += _render_fields(source.options, secrets)
        lines += ["", "[sources.retry]", *_render_fields(source.retry, secrets)]
    for sink in config.sinks:
        lines += ["", "[[sinks]]", f"type = {_toml_string(sink.type)}"]
        lines.append(f"name = {_toml_string(sink.name)}")
        lines.append(f"overflow = {_toml_string(sink.overflow.value)}")
        lines.append(f"buffer = {sink.buffer}")
        lines.append(f"on_error = {_toml_string(sink.on_error)}")
        lines += _render_fields(sink.options, secrets)
    for processor in config.processors:
        lines += ["", "[[processors]]", f"type = {_toml_string(processor.type)}"]
        if processor.sources is not None:
            lines.append(f"sources = {_render_value(list(processor.sources), secrets)}")
        lines += _render_fields(processor.options, secrets)
    for discovery in config.discovery:
        lines += ["", "[[discovery]]", f"type = {_toml_string(discovery.type)}"]
        lines.append(f"name = {_toml_string(discovery.name)}")
        lines += _render_fields(discovery.options, secrets)
    return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "an array with a non-string or empty item"
    return describe_value(value)


def _render_fields(instance: Any, secrets: frozenset[str]) -> list[str]:
    if instance is None or not attrs.has(type(instance)):
        return []
    lines = []
    comments = field_comments(type(instance))  # the ``#:`` descriptions in the code
    for field in attrs.fields(type(instance)):
        description = comments.get(field.name, ("", ""))[1].replace("``", "`")
        lines += [f"# {line}" for line in textwrap.wrap(description, 96)]
        key = _format_key((field.name,))
        value = getattr(instance, field.name)
        if value is None:
            lines.append(f"# {key} is not set")
        else:
            secret = _is_secret_field(field.name)
            lines.append(f"{key} = {_render_value(value, secrets, secret=secret)}")
    return lines


def _render_value(value: Any, secrets: frozenset[str], *, secret: bool = False) -> str:
    if isinstance(value, str):
        return _toml_string("***" if secret and value else _mask(value, secrets))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_render_value(v, secrets, secret=secret) for v in value) + "]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = (
            f"{_format_key((str(k),))} = {_render_value(v, secrets, secret=secret)}"
            for k, v in value.items()
        )
        return "{ " + ", ".join(items) + " }"
    return _toml_string(_mask(str(value), secrets))


def _mask(text: str, secrets: frozenset[str] | set[str]) -> str:
    """``text`` with secrets replaced by ``***``.

    A value that is a secret is masked whole; inside a longer text only
    secrets of 4+ characters are, so a variable holding ``1`` does not turn
    every digit 1 into stars.
    """
    if text in secrets:
        return "***"
    text = _mask_url_password(text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _mask_url_password(text: str) -> str:
    if "://" not in text or "@" not in text:
        return text
    try:
        parts = urlsplit(text)
        if parts.password is None:
            return text
    except ValueError:
        return text
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


def _url_password(text: str) -> str | None:
    if "://" not in text or "@" not in text:
        return None
    try:
        return urlsplit(text).password
    except ValueError:
        return None


def _is_secret_field(name: str) -> bool:
    lowered = name.lower()
    return lowered == "headers" or any(word in lowered for word in _SECRET_WORDS)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _format_key(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = part if _BARE_KEY.fullmatch(part) else json.dumps(part, ensure_ascii=False)
            out += f".{key}" if out else key
    return out


def _toml_string(text: str) -> str:
    """A TOML basic string (JSON's escapes are a subset of TOML's; TOML also bans DEL)."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")
