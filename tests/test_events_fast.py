"""``Session.emit`` builds Events through a twin class; they must be real Events.

The fast path (``mux_core.session._EVENT_TWIN``) switches ``__class__`` of a
plain slotted twin to :class:`Event`. Sinks compare ``type(r) is Event``,
hash and compare events, and rely on them being frozen, so the objects it
builds must be indistinguishable from ``Event(...)``; and the constructor
fallback must give the same batches.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from typing import Any

import attrs
import pytest

from mux_core import session as session_module
from mux_core.events import Event, Record, record_to_dict
from mux_core.session import RawEvent, ResumeState, Session, SharedResources


def _built(*fields: Any) -> Event:
    """One Event built the way ``emit`` builds it, through the twin."""
    twin = session_module._EVENT_TWIN
    assert twin is not None, "the fast path is off on this interpreter"
    source, transport, event, id_, data, at, seq = fields
    build = session_module._build_events
    (built,) = build(twin, [(event, id_, data)], source, transport, at, seq - 1)
    return built


def test_the_fast_path_is_on_and_event_has_only_its_fields_as_slots() -> None:
    assert session_module._EVENT_TWIN is not None
    assert Event.__slots__ == tuple(f.name for f in attrs.fields(Event))


@pytest.mark.parametrize(
    "fields",
    [
        ("s", "rest", "message", "42", {"step": 42, "loss": 0.31}, 1764250000.123, 17),
        ("s", "sse", "metric", None, "not json", 0.0, 1),
        ("s", "ws", "message", "", [1, 2, 3], 1.5, 2**40),
    ],
)
def test_a_built_event_is_an_event_equal_to_the_constructed_one(fields: tuple[Any, ...]) -> None:
    built, reference = _built(*fields), Event(*fields)
    assert type(built) is Event
    assert isinstance(built, Event)
    assert built == reference
    assert not built != reference  # noqa: SIM202 -- __ne__ is its own method
    assert repr(built) == repr(reference)
    assert attrs.astuple(built, recurse=False) == fields
    assert record_to_dict(built) == record_to_dict(reference)
    assert pickle.loads(pickle.dumps(built)) == reference
    assert copy.copy(built) == reference
    assert attrs.evolve(built, seq=99) == attrs.evolve(reference, seq=99)


def test_a_built_event_is_frozen_and_hashes_like_the_constructed_one() -> None:
    fields = ("s", "rest", "message", "7", ("payload", 1), 2.5, 7)
    built, reference = _built(*fields), Event(*fields)
    assert hash(built) == hash(reference)
    assert {built: 1}[reference] == 1
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.seq = 8  # type: ignore[misc]
    with pytest.raises(AttributeError):
        built.extra = 1  # type: ignore[attr-defined]
    assert built.seq == 7


@attrs.frozen(slots=True)
class _EventWithWeakref:
    """Event's fields, but attrs' default weakref slot: a layout the twin cannot take."""

    source: str
    transport: str
    event: str
    id: str | None
    data: Any
    received_at: float
    seq: int


@attrs.frozen(slots=True, weakref_slot=False)
class _EventWithValidator:
    source: str
    transport: str
    event: str
    id: str | None
    data: Any
    received_at: float
    seq: int = attrs.field(validator=attrs.validators.instance_of(int))


@pytest.mark.parametrize("cls", [_EventWithWeakref, _EventWithValidator])
def test_the_self_check_falls_back_to_the_constructor(
    cls: type[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_module, "Event", cls)
    assert session_module._event_twin() is None


class _Sent:
    """A Session's ``send``: keeps each batch, which must hold only Events."""

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []

    async def send(self, batch: Sequence[Record]) -> None:
        events = [r for r in batch if type(r) is Event]
        assert len(events) == len(batch)
        self.batches.append(events)


def _session(sent: _Sent, resume: ResumeState) -> Session:
    return Session(
        source="src",
        transport="rest",
        resume=resume,
        connect_timeout=5,
        shared=SharedResources(),
        send=sent.send,
        attempt=1,
    )


def _items() -> Iterator[RawEvent]:
    """Mixed ids (the last one None) from a generator: any iterable is accepted."""
    yield ("message", "1", {"n": 1})
    yield ("tick", None, "text")
    yield ("message", "3", {"n": 3})
    yield ("message", None, None)


async def _emit_all(twin_on: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[_Sent, ResumeState]:
    if not twin_on:
        monkeypatch.setattr(session_module, "_EVENT_TWIN", None)
    sent, resume = _Sent(), ResumeState(last_id="0", seq=10)
    session = _session(sent, resume)
    await session.emit(_items())
    await session.emit([])
    await session.emit(iter(()))
    columns: Iterable[RawEvent] = zip(repeat("message"), ["5", "6"], [{"n": 5}, {"n": 6}])
    await session.emit(columns)
    await session.emit([("message", None, 7)])
    assert session.events == 7
    return sent, resume


@pytest.mark.parametrize("twin_on", [True, False], ids=["twin", "constructor"])
async def test_emit_numbers_stamps_and_remembers_the_last_id(
    twin_on: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent, resume = await _emit_all(twin_on, monkeypatch)
    assert [len(b) for b in sent.batches] == [4, 2, 1]  # empty reads send nothing
    events = [r for b in sent.batches for r in b]
    assert all(type(e) is Event for e in events)
    assert [(e.source, e.transport) for e in events] == [("src", "rest")] * 7
    assert [(e.event, e.id, e.data, e.seq) for e in events] == [
        ("message", "1", {"n": 1}, 11),
        ("tick", None, "text", 12),
        ("message", "3", {"n": 3}, 13),
        ("message", None, None, 14),
        ("message", "5", {"n": 5}, 15),
        ("message", "6", {"n": 6}, 16),
        ("message", None, 7, 17),
    ]
    # One received_at per batch (one read), taken when the batch was emitted.
    stamps = [{e.received_at for e in b} for b in sent.batches]
    assert all(len(s) == 1 for s in stamps)
    assert stamps[0].pop() <= stamps[1].pop() <= stamps[2].pop()
    # The newest id seen, skipping events without one; the last batch has none.
    assert resume.last_id == "6"
    assert resume.seq == 17


async def test_both_paths_emit_equal_events(monkeypatch: pytest.MonkeyPatch) -> None:
    fast, _ = await _emit_all(True, monkeypatch)
    slow, _ = await _emit_all(False, monkeypatch)

    def without_time(sent: _Sent) -> list[list[Any]]:
        return [[attrs.evolve(r, received_at=0.0) for r in b] for b in sent.batches]

    assert without_time(fast) == without_time(slow)
