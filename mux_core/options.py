"""A plugin's options: validators for numbers, secret options, several problems at once.

Every built-in plugin checks its numeric keys with these, so a bad value
reads the same whichever plugin it belongs to::

    import attrs
    from mux_core.options import non_negative, positive

    @attrs.frozen(kw_only=True)
    class PollOptions:
        #: Seconds between two polls.
        interval: float = attrs.field(default=1.0, validator=positive("seconds"))
        #: Responses to keep; 0 = keep all.
        keep: int = attrs.field(default=0, validator=non_negative(note="0 = keep all"))

``PollOptions(interval=0)`` raises ``ValueError("interval must be > 0 seconds,
got 0")``; in a config file the loader shows the same text after the file,
line and key (``mon.toml:7: sources[0].interval: interval must be > 0
seconds, got 0``). NaN passes none of the checks.

An option holding a credential is marked with :func:`secret` (``metadata=
secret()``): its value never reaches any output. An ``Options.check`` that
finds several problems reports them together with :func:`raise_problems`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

__all__ = [
    "Bound",
    "at_least_one",
    "fraction",
    "is_secret",
    "non_negative",
    "positive",
    "positive_seconds",
    "raise_problems",
    "secret",
]

#: The key of attrs field metadata that :func:`secret` sets.
SECRET_KEY = "mux.secret"
#: Words in an option's name that make it secret when it is not marked either way.
_SECRET_WORDS = ("password", "passwd", "secret", "token", "api_key", "apikey", "credential")


class Bound:
    """An attrs validator: the value must meet ``condition`` (e.g. "> 0").

    It raises ``ValueError("<key> must be <condition>[ <unit>][ (<note>)],
    got <value>")``; with ``named=False`` the message leaves out the key's
    name (for a class the config loader builds: it shows the key's path
    itself, as in ``retry.jitter: must be in [0, 1), got 2.0``). Make one
    with :func:`positive`, :func:`non_negative`, :func:`at_least_one` or
    :func:`fraction`.
    """

    __slots__ = ("condition", "named", "note", "test", "unit")

    def __init__(
        self,
        condition: str,
        test: Callable[[float], bool],
        *,
        unit: str = "",
        note: str = "",
        named: bool = True,
    ) -> None:
        self.condition = condition
        self.test = test
        self.unit = unit
        self.note = note
        self.named = named

    def problem(self, value: float) -> str | None:
        """What is wrong with ``value`` ("must be > 0 seconds, got 0"), or None."""
        if self.test(value):
            return None
        text = f"must be {self.condition}"
        if self.unit:
            text += f" {self.unit}"
        if self.note:
            text += f" ({self.note})"
        return f"{text}, got {value!r}"

    def __call__(self, instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
        problem = self.problem(value)
        if problem is not None:
            raise ValueError(f"{attribute.name} {problem}" if self.named else problem)

    def __repr__(self) -> str:
        return f"<must be {self.condition}>"


def positive(unit: str = "", *, note: str = "", named: bool = True) -> Bound:
    """Greater than 0: ``positive("seconds")`` for an interval or a timeout."""
    return Bound("> 0", lambda value: value > 0, unit=unit, note=note, named=named)


def non_negative(unit: str = "", *, note: str = "", named: bool = True) -> Bound:
    """0 or more: ``non_negative(note="0 = no limit")`` for a limit that 0 turns off."""
    return Bound(">= 0", lambda value: value >= 0, unit=unit, note=note, named=named)


def at_least_one(unit: str = "", *, note: str = "", named: bool = True) -> Bound:
    """1 or more: a count (``every``, a buffer in records) or a growth factor."""
    return Bound(">= 1", lambda value: value >= 1, unit=unit, note=note, named=named)


def fraction(*, zero: bool = True, note: str = "", named: bool = True) -> Bound:
    """A fraction below 1: from 0 (``zero=True``: "in [0, 1)", e.g. a jitter) or
    above 0 (``zero=False``: "in (0, 1)", e.g. "below half its median")."""
    if zero:
        return Bound("in [0, 1)", lambda value: 0 <= value < 1, note=note, named=named)
    return Bound("in (0, 1)", lambda value: 0 < value < 1, note=note, named=named)


def positive_seconds(text: str) -> float:
    """An argparse ``type=`` for a duration in seconds, e.g. ``--for 2.5``: 0, a
    negative number, NaN and text that is not a number are usage errors."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds as a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def secret(secret: bool = True) -> Mapping[str, bool]:
    """attrs field metadata marking an option secret: ``metadata=secret()``.

    ::

        @attrs.frozen(kw_only=True)
        class FeedOptions:
            #: The API token, e.g. "${FEED_TOKEN}".
            token: str = attrs.field(default="", metadata=secret())

    The value of a secret option -- each item of an array, each value of a
    table -- never reaches output: ``mux check`` shows it as ``"***"``, and
    wherever it occurs in a config error (a validator's or ``check()``'s
    message included), a status detail or the log of a run it is replaced by
    ``***``. Without the mark, options whose name says secret (``password``,
    ``token``, ``secret``, ``api_key``, ``credential``; ``headers``) are
    masked anyway, and the password of any URL is; ``secret(False)`` says an
    option is not secret although its name does (``max_tokens``).
    """
    return {SECRET_KEY: secret}


def is_secret(field: attrs.Attribute[Any]) -> bool:
    """Whether an option's value is a secret: as :func:`secret` marked it, else by
    its name (``password``, ``token``, ``secret``, ``api_key``, ``credential``
    in it, or ``headers``)."""
    marked = field.metadata.get(SECRET_KEY)
    if marked is not None:
        return bool(marked)
    lowered = field.name.lower()
    return lowered == "headers" or any(word in lowered for word in _SECRET_WORDS)


def raise_problems(problems: Iterable[str | None]) -> None:
    """Raise what an ``Options.check`` found, all at once; nothing when every item is empty.

    ::

        @classmethod
        def check(cls, options: FeedOptions) -> None:
            raise_problems([url_problem(options.url), headers_problem(options.headers)])

    One problem is raised as a ``ValueError``, several as an
    ``ExceptionGroup`` of them, which ``mux check`` shows one per line, each
    at its key's line when the message starts with the key (``url: ...``).
    Empty strings and None (no problem) are left out.
    """
    found = [ValueError(problem) for problem in problems if problem]
    if len(found) == 1:
        raise found[0]
    if found:
        raise ExceptionGroup(f"{len(found)} problems", found)
