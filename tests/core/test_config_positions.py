"""toml_error_position: where a tomllib error says it is, for the config loader and
the discovered documents alike."""

from __future__ import annotations

import tomllib

import pytest

from mux_core._config import parse_config
from mux_core._config.positions import toml_error_position
from mux_core._plugins import PluginManager
from mux_core.discovery import read_source_document
from mux_core.errors import ConfigError


def _message(text: str) -> str:
    with pytest.raises(tomllib.TOMLDecodeError) as caught:
        tomllib.loads(text)
    return str(caught.value)


def test_a_line_and_column_become_the_line_and_words() -> None:
    message = _message('a = 1\nb = "open\nc = 2\n')
    assert message.endswith("(at line 2, column 10)")  # what tomllib writes, as parsed
    assert toml_error_position(message) == ("Illegal character '\\n' at column 10", 2)


def test_the_end_of_the_document_is_said_in_words_without_a_line() -> None:
    message = _message("a = 1\nb = [1,")
    assert message.endswith("(at end of document)")
    assert toml_error_position(message) == ("Invalid value at the end of the file", None)


def test_a_message_without_a_position_is_kept_as_it_is() -> None:
    assert toml_error_position("Invalid value") == ("Invalid value", None)
    # Only the position tomllib appends counts, not a look-alike inside the text.
    assert toml_error_position("(at line two)") == ("(at line two)", None)


def test_the_loader_puts_an_error_at_the_end_on_the_last_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("a = 1\nb = [1,\n\n", path="mon.toml", plugins=PluginManager())
    assert str(caught.value) == "mon.toml:4: invalid TOML: Invalid value at the end of the file"


def test_a_discovered_document_reads_its_position_the_same_way() -> None:
    with pytest.raises(ConfigError) as caught:
        read_source_document(b'[[sources]]\nname = "a\n', "http://h/s.toml")
    assert (caught.value.line, caught.value.message) == (
        2,
        "invalid TOML: Illegal character '\\n' at column 10",
    )
    with pytest.raises(ConfigError) as caught:
        read_source_document(b"[[sources]]\nname = [1,", "http://h/s.toml")
    assert caught.value.line is None
    assert caught.value.message == "invalid TOML: Invalid value at the end of the file"
