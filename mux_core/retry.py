"""The one retry policy every source shares.

:class:`RetryPolicy` is pure arithmetic -- it never sleeps. The supervisor
asks it how long to wait before attempt ``n`` and whether to give up; trio
does the waiting. Keeping it pure makes the schedule a property one can test
exhaustively (tests/core/test_retry.py) instead of watching a clock.
"""

from __future__ import annotations

import random

import attrs

from .options import at_least_one, fraction, non_negative, positive

__all__ = ["RetryPolicy"]

# The config loader names the key (``retry.jitter: must be in [0, 1), got 2.0``).
_NON_NEGATIVE = non_negative(named=False)
_POSITIVE = positive(named=False)
_AT_LEAST_ONE = at_least_one(named=False)
_FRACTION = fraction(named=False)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter and a cap, shared by every source.

    The delay before retry number ``n`` (n = 1 after the first failure) is
    ``initial_delay * multiplier ** (n - 1)``, capped at ``max_delay``, then
    moved by a random fraction within ``+/- jitter`` (and capped again).

    A server's hint (an SSE ``retry:`` field, a ``Retry-After`` header) is
    honoured only within ``[min_delay, max_delay]``, and it never stops the
    backoff from growing: ``retry: 0`` or ``Retry-After: 0`` from a server
    that fails every attempt still gives min_delay, 2 x min_delay, ... up to
    max_delay, never a connection storm. The user's own ``initial_delay`` is
    taken as given (a config may ask for 0; a server may not).
    """

    #: Seconds before the first retry.
    initial_delay: float = attrs.field(default=0.5, validator=_NON_NEGATIVE)
    #: The longest wait between two attempts, also the cap on server hints.
    max_delay: float = attrs.field(default=30.0, validator=_NON_NEGATIVE)
    #: The shortest wait a server's hint (SSE ``retry:``, ``Retry-After``) may ask for.
    min_delay: float = attrs.field(default=0.5, validator=_NON_NEGATIVE)
    #: Growth factor of the delay from one failure to the next.
    multiplier: float = attrs.field(default=2.0, validator=_AT_LEAST_ONE)
    #: +/- fraction of each delay chosen at random, so monitors do not retry in lockstep.
    jitter: float = attrs.field(default=0.2, validator=_FRACTION)
    #: Consecutive failed attempts before ``max_retries_exceeded``; 0 = never give up.
    max_attempts: int = attrs.field(default=0, validator=_NON_NEGATIVE)
    #: Seconds a connection must stay up (or one event) before the attempt counter resets.
    reset_after: float = attrs.field(default=5.0, validator=_NON_NEGATIVE)
    #: Seconds an attempt may take to reach ``connected``.
    connect_timeout: float = attrs.field(default=10.0, validator=_POSITIVE)

    def base_delay(self, failures: int, *, initial: float | None = None) -> float:
        """The un-jittered delay after ``failures`` consecutive failures (>= 1).

        ``initial`` replaces ``initial_delay`` (an SSE ``retry:`` field does);
        being a server's, it counts as at least :meth:`floor`.
        """
        start = self.initial_delay if initial is None else max(initial, self.floor())
        exponent = max(failures, 1) - 1
        # Stop multiplying once past the cap: avoids float overflow for long outages.
        delay = start
        for _ in range(exponent):
            if delay >= self.max_delay:
                break
            delay *= self.multiplier
        return min(delay, self.max_delay)

    def delay(
        self,
        failures: int,
        *,
        initial: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """The jittered delay after ``failures`` consecutive failures, within ``max_delay``
        (and, when ``initial`` is a server's hint, never below :meth:`floor`)."""
        base = self.base_delay(failures, initial=initial)
        if self.jitter:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            base *= 1 + spread
        delay = min(base, self.max_delay)
        return delay if initial is None else max(delay, self.floor())

    def server_delay(self, retry_after: float) -> float:
        """A server's own Retry-After, honoured within ``[floor(), max_delay]``."""
        return min(max(retry_after, self.floor()), self.max_delay)

    def floor(self) -> float:
        """The least a server can make mux wait: ``min_delay`` (never beyond ``max_delay``)."""
        return min(self.min_delay, self.max_delay)

    def gives_up(self, failures: int) -> bool:
        """True once ``failures`` consecutive failures reach ``max_attempts``."""
        return self.max_attempts > 0 and failures >= self.max_attempts
