"""ReadPlan: which streams a consumer names in each read, under explicit times (no Redis)."""

from __future__ import annotations

import pytest

from mux_redis._reads import ReadPlan


def keys(count: int, prefix: str = "s") -> list[bytes]:
    return [f"{prefix}{n}".encode() for n in range(count)]


def named(plan: ReadPlan, now: float, block: float = 1.0) -> list[bytes]:
    return [key for command in plan.next_round(now, block).commands for key in command]


def test_a_few_streams_are_one_blocking_read_every_round() -> None:
    plan = ReadPlan()
    plan.add(keys(16), now=0.0)
    for now in (0.0, 0.5, 100.0):  # buckets stay hot as long as they give entries
        plan.saw(keys(16), now)
        round = plan.next_round(now, block=1.0)
        assert round.commands == [keys(16)]
        assert round.block == 1.0
        assert round.start_at == pytest.approx(now)


def test_one_command_names_at_most_per_command_streams_and_many_commands_never_block() -> None:
    plan = ReadPlan(per_command=100, check_rate=1e9)
    plan.add(keys(250), now=0.0)
    round = plan.next_round(0.0, block=1.0)
    assert [len(command) for command in round.commands] == [100, 100, 50]
    assert round.block is None
    assert sorted(key for command in round.commands for key in command) == sorted(keys(250))


def test_commands_never_mix_what_may_not_go_together() -> None:
    # A cluster: keys of one slot per command (here: by first letter).
    def by_letter(found: list[bytes]) -> list[list[bytes]]:
        groups: dict[int, list[bytes]] = {}
        for key in found:
            groups.setdefault(key[0], []).append(key)
        return list(groups.values())

    plan = ReadPlan(together=by_letter, per_command=3)
    plan.add(keys(4, "a") + keys(2, "b"), now=0.0)
    commands = plan.next_round(0.0, block=1.0).commands
    assert all(len({key[0] for key in command}) == 1 for command in commands)
    assert all(len(command) <= 3 for command in commands)
    assert len(commands) == 3


def test_rounds_are_paced_by_the_streams_they_name() -> None:
    plan = ReadPlan(check_rate=1000.0)
    plan.add(keys(500), now=0.0)
    first = plan.next_round(0.0, block=1.0)
    assert first.start_at == 0.0
    second = plan.next_round(0.1, block=1.0)  # 500 checks at 1000/s: not before 0.5
    assert second.start_at == pytest.approx(0.5)
    third = plan.next_round(2.0, block=1.0)  # late already: at once
    assert third.start_at == pytest.approx(2.0)


def test_quiet_streams_go_cold_and_are_checked_a_slice_at_a_time_in_rotation() -> None:
    plan = ReadPlan(hot_for=10.0, cold_slice=100, cold_period=0.5, check_rate=1e9)
    plan.add(keys(1000), now=0.0)
    live = keys(3, "live")
    plan.add(live, now=0.0)
    now = 20.0
    plan.saw(live, now)
    first = named(plan, now)
    assert plan.cold == 1000
    assert first[:3] == live and len(first) == 103  # the hot ones and one slice
    checked = set(first[3:])
    # Until the next slice is due, only the hot streams; a single read blocks
    # no longer than until then.
    round = plan.next_round(now + 0.1, block=1.0)
    assert round.commands == [live]
    assert round.block == pytest.approx(0.4)
    # Every cold stream is checked once within cold / slice periods, none twice.
    for step in range(1, 10):
        at = now + step * 0.5
        plan.saw(live, at)
        cold = named(plan, at)[3:]
        assert len(cold) == 100 and not checked & set(cold)
        checked.update(cold)
    assert checked == set(keys(1000))


def test_a_cold_stream_that_gives_entries_is_hot_again_and_leaves_the_rotation() -> None:
    plan = ReadPlan(hot_for=10.0, cold_slice=2, cold_period=1.0, check_rate=1e9)
    plan.add(keys(4), now=0.0)
    assert named(plan, 11.0) == keys(2)  # all cold now: the first slice
    plan.saw([b"s1"], 11.0)  # it had entries
    assert named(plan, 11.5) == [b"s1"]  # hot; no slice due
    assert named(plan, 12.0) == [b"s1", b"s2", b"s3"]  # the rotation skips s1
    assert named(plan, 13.0) == [b"s1", b"s0", b"s2"]
    assert plan.cold == 3 and len(plan) == 4 and b"s1" in plan


def test_fewer_cold_streams_than_a_slice_are_each_checked_once_per_slice() -> None:
    plan = ReadPlan(hot_for=1.0, cold_slice=100, cold_period=0.5)
    plan.add(keys(3), now=0.0)
    assert named(plan, 5.0) == keys(3)
    assert named(plan, 5.5) == keys(3)


def test_only_cold_streams_and_no_slice_due_waits_for_the_slice() -> None:
    plan = ReadPlan(hot_for=1.0, cold_slice=10, cold_period=2.0)
    plan.add(keys(3), now=0.0)
    named(plan, 5.0)
    round = plan.next_round(5.5, block=1.0)
    assert round.commands == [] and round.start_at == pytest.approx(7.0)


def test_new_streams_are_read_at_once() -> None:
    plan = ReadPlan(hot_for=1.0, cold_slice=1, cold_period=100.0)
    plan.add(keys(5), now=0.0)
    named(plan, 10.0)
    plan.add([b"new"], now=10.1)
    assert b"new" in named(plan, 10.2)


def test_entries_appended_one_at_a_time_are_read_a_few_dozen_at_a_time() -> None:
    # A blocking read that returns at once (an entry was waiting) is followed by the
    # next no sooner than min_round after it: what trickles in meanwhile comes in one go.
    plan = ReadPlan(min_round=0.01)
    plan.add(keys(16), now=0.0)
    assert plan.next_round(0.0, block=1.0).start_at == 0.0
    assert plan.next_round(0.001, block=1.0).start_at == pytest.approx(0.01)
    # A read that waited longer than that (nothing was new) is followed at once.
    assert plan.next_round(0.5, block=1.0).start_at == pytest.approx(0.5)
