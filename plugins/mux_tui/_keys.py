"""What the view's keys do: ``r`` restarts the sources that gave up.

Pure logic over the model's rows and a ``restart`` callable (the sink
passes ``SinkContext.restart_source``), so tests drive it with plain calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mux_core.records import State, Status

from ._model import TuiModel

__all__ = ["RESTARTABLE", "RESTART_HINT", "RESTART_KEY", "RestartKey"]

#: States a source can be restarted from (the engine's ``restart_source``).
RESTARTABLE = frozenset({State.MAX_RETRIES_EXCEEDED, State.FAILED, State.ENDED})
RESTART_KEY = "r"
RESTART_HINT = "r: restart the sources that gave up"


class RestartKey:
    """``r``: ask the engine to restart every source whose last state is restartable.

    A source asked for is not asked again (nor counted in the hint) until a
    new status of it arrives: the Qt panel's disabled button, in text. The
    confirmation shows for :attr:`NOTE_SECONDS`.
    """

    #: How long the line confirming a key press stays in the caption.
    NOTE_SECONDS = 5.0

    def __init__(
        self,
        model: TuiModel,
        restart: Callable[[str], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model = model
        self.restart = restart
        self.clock = clock
        #: Source -> the status it was restarted from.
        self._asked: dict[str, Status] = {}
        self._note = ""
        self._note_until = 0.0

    def waiting(self) -> list[str]:
        """The sources ``r`` would restart now, in view order."""
        names = []
        for name, row in self.model.rows.items():
            status = row.status
            if status is None or status.state not in RESTARTABLE:
                continue
            if self._asked.get(name) is not status:
                names.append(name)
        return names

    def press(self, keys: str) -> None:
        """Handle what was typed; anything but ``r`` is ignored (an escape
        sequence too: an arrow key or F5 is not a press of ``r``)."""
        if RESTART_KEY not in keys or keys.startswith("\x1b"):
            return
        names = self.waiting()
        for name in names:
            status = self.model.rows[name].status
            assert status is not None
            self._asked[name] = status
            self.restart(name)
        self._note = "restarting " + ", ".join(names) if names else "r: no source to restart"
        self._note_until = self.clock() + self.NOTE_SECONDS

    def caption_lines(self) -> list[str]:
        """The hint while a source could be restarted, then the last press's note."""
        lines = [RESTART_HINT] if self.waiting() else []
        if self._note and self.clock() < self._note_until:
            lines.append(self._note)
        return lines
