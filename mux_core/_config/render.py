"""The resolved config as TOML with secrets masked (``mux check``), and the masking itself.

:func:`mask` is the one function that hides secrets in text: the config
errors (:mod:`mux_core._config.loader`), ``mux check``'s resolved config and
probe verdicts, the status details of a run (``_run/fan_out.py``) and its log
lines (:class:`MaskSecrets`) all go through it. Which options are secret:
:func:`mux_core.options.is_secret` (marked with ``secret()``, else the name).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import textwrap
from collections.abc import Callable, Collection, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from ..options import is_secret
from .convert import describe_value
from .positions import KeyPath
from .records import QUALITY_INTERVAL, QUALITY_WINDOW, Config
from .reference import field_comments

__all__ = ["MaskSecrets", "mask", "render_config", "secret_texts"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
#: How much of a long string a config error shows (``describe_value``).
_SHOWN_CHARS = 60


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
        if source.stale_after is not None:
            lines.append(f"stale_after = {source.stale_after!r}")
        lines += _render_fields(source.options, secrets)
        lines += ["", "[sources.retry]", *_render_fields(source.retry, secrets)]
    for sink in config.sinks:
        lines += ["", "[[sinks]]", f"type = {_toml_string(sink.type)}"]
        lines.append(f"name = {_toml_string(sink.name)}")
        lines.append(f"overflow = {_toml_string(sink.overflow.value)}")
        lines.append(f"buffer = {sink.buffer}")
        lines.append(f"on_error = {_toml_string(sink.on_error)}")
        if sink.history:
            lines.append(f"history = {_render_value(list(sink.history), secrets)}")
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
        lines += _render_fields(discovery.policy, secrets)
    return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "an array with a non-string or empty item"
    return describe_value(value)


def _render_fields(instance: Any, secrets: frozenset[str]) -> list[str]:
    if instance is None or not attrs.has(type(instance)):
        return []
    lines: list[str] = []
    for name, key, secret, comment in _commented_fields(type(instance)):
        lines += comment
        value = getattr(instance, name)
        if value is None:
            lines.append(f"# {key} is not set")
        else:
            lines.append(f"{key} = {_render_value(value, secrets, secret=secret)}")
    return lines


#: A field's name, its TOML key, whether it is secret, its comment lines.
_FieldLines = tuple[str, str, bool, tuple[str, ...]]
_FIELD_LINES: dict[type[Any], tuple[_FieldLines, ...]] = {}


def _commented_fields(cls: type[Any]) -> tuple[_FieldLines, ...]:
    """Each field of ``cls`` with its key and comment lines (the ``#:`` description
    in the code, wrapped): worked out once a class, not once a source (a config
    of 20,000 sources spent ~50 s of ``mux check`` parsing and wrapping them)."""
    known = _FIELD_LINES.get(cls)
    if known is None:
        comments = field_comments(cls)
        known = _FIELD_LINES[cls] = tuple(
            (
                field.name,
                _format_key((field.name,)),
                is_secret(field),
                tuple(
                    f"# {line}"
                    for line in textwrap.wrap(
                        comments.get(field.name, ("", ""))[1].replace("``", "`"), 96
                    )
                ),
            )
            for field in attrs.fields(cls)
        )
    return known


def _render_value(value: Any, secrets: frozenset[str], *, secret: bool = False) -> str:
    if isinstance(value, str):
        return _toml_string("***" if secret and value else mask(value, secrets))
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
    return _toml_string(mask(str(value), secrets))


def mask(text: str, secrets: Collection[str], *, words: Collection[str] = ()) -> str:
    """``text`` with secrets replaced by ``***``: the one masking function.

    A value that is a secret is masked whole; inside a longer text secrets of
    4+ characters are (and the start of a long one, as an error message cuts
    it: ``"abc..."``), shorter ones only quoted (``'ab'``, ``"ab"``), so a
    variable holding ``1`` does not turn every digit 1 into stars. The
    password and the query values of a URL in the text are masked too. ``words``: more secrets,
    whose short ones are masked as whole words too (the values of the key an
    error message is about: ``got an integer 1``).
    """
    if text in secrets or text in words:
        return "***"
    text = _mask_urls(text)
    for secret in sorted(words, key=len, reverse=True):
        if 0 < len(secret) < 4:
            text = re.sub(rf"(?<!\w){re.escape(secret)}(?!\w)", "***", text)
    for secret in sorted({*secrets, *words}, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
            if len(secret) > _SHOWN_CHARS:
                text = text.replace(secret[: _SHOWN_CHARS - 3] + "...", "***")
        elif secret and secret in text:
            for quoted in (repr(secret), json.dumps(secret, ensure_ascii=False)):
                text = text.replace(quoted, quoted[0] + "***" + quoted[-1])
    return text


class MaskSecrets(logging.Filter):
    """A handler's filter that masks a run's secrets in every line it writes.

    ``secrets`` is asked at each record (a reload may bring new ones). The
    message is formatted and masked once (``args`` cleared), and so is the
    traceback of a record with ``exc_info``: an exception's text may quote
    an option. :meth:`installed` puts it on the root logger's handlers --
    where every ``mux.*`` line, a plugin's own logger's too, ends up.
    """

    def __init__(self, secrets: Callable[[], Collection[str]]) -> None:
        super().__init__("mux.secrets")
        self._secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets()
        if not secrets:
            return True
        record.msg = mask(record.getMessage(), secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = mask(record.stack_info, secrets)
        return True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """On every handler of the root logger while the block runs (without
        any, on the one Python prints warnings with then)."""
        handlers: list[logging.Handler] = list(logging.getLogger().handlers)
        if not handlers and logging.lastResort is not None:
            handlers.append(logging.lastResort)
        for handler in handlers:
            handler.addFilter(self)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(self)


#: A URL inside a longer text (a log line, an error): a scheme, ``://``, then
#: everything up to white space or a quote.
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def _mask_urls(text: str) -> str:
    """Every URL in ``text`` with its password and its query values masked:
    ``http://bob:***@host/sd?token=***&after=***``. A query is where
    credentials go when there is no header (``?token=``, ``?api_key=``), so
    its values are never shown; the keys are, to say which was set."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(_mask_url_match, text)


def _mask_url_match(match: re.Match[str]) -> str:
    # Punctuation that ends a sentence ends the URL too ("...?k=v: refused").
    url = match.group(0)
    stripped = url.rstrip(".,:;!?)]}")
    return _mask_url(stripped) + url[len(stripped) :]


def _mask_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if password is not None:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        parts = parts._replace(netloc=f"{user}:***@{hostport}")
    if parts.query:
        masked = "&".join(
            f"{key}=***" if sep else key
            for key, sep, _value in (item.partition("=") for item in parts.query.split("&"))
        )
        parts = parts._replace(query=masked)
    return urlunsplit(parts)


def _url_password(text: str) -> str | None:
    if "://" not in text or "@" not in text:
        return None
    try:
        return urlsplit(text).password
    except ValueError:
        return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def secret_texts(value: Any) -> Iterator[str]:
    """The texts of a secret option's value as they may be shown: each string,
    and each other scalar as written (a number in the wrong place is still a
    secret's value); the keys of a table are not secret."""
    if isinstance(value, list | tuple):
        for item in value:
            yield from secret_texts(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from secret_texts(item)
    elif isinstance(value, str):
        if value:
            yield value
    elif isinstance(value, bool):
        return
    elif isinstance(value, int | float):
        yield repr(value)
        yield str(value)


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
