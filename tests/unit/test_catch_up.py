"""The coordinator's deadlines wait until its consumer has read what arrived while it was down: a result already on
its topic must win over a step timeout that passed meanwhile."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from releasegate_runtime.catch_up import CatchUpBarrier, behind

RESULTS = TopicPartition("release.results.gatekeeper", 0)
CONTROL = TopicPartition("release.control", 1)


class FakeOffsets:
    """End offsets fixed when read; the group's commits move as `progress` says, one step per poll."""

    def __init__(
        self, ends: dict[TopicPartition, int], progress: list[dict[TopicPartition, int | None]], failures: int = 0
    ) -> None:
        self.ends, self.progress, self.failures = ends, progress, failures
        self.end_reads = self.polls = 0
        self.closed = False

    async def end_offsets(self, topics):
        self.end_reads += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker not reachable yet")
        return {tp: end for tp, end in self.ends.items() if tp.topic in topics}

    async def committed(self, group, partitions):
        self.polls += 1
        step = self.progress[min(self.polls, len(self.progress)) - 1]
        return {tp: step.get(tp) for tp in partitions}

    async def close(self) -> None:
        self.closed = True


class Clock:
    """A fake clock that the barrier's `sleep` advances: no test waits for real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def barrier(port: FakeOffsets, clock: Clock, timeout: float = 120.0) -> CatchUpBarrier:
    return CatchUpBarrier(
        port,
        "releasegate-coordinator",
        ["release.results.gatekeeper", "release.control"],
        timeout=timeout,
        poll=0.5,
        clock=clock,
        sleep=clock.sleep,
    )


class TestCatchUpBarrier:
    async def test_waits_until_the_group_committed_up_to_the_end_offsets_seen_at_start(self):
        port = FakeOffsets(
            {RESULTS: 40, CONTROL: 3},
            [{RESULTS: 10, CONTROL: None}, {RESULTS: 39, CONTROL: 3}, {RESULTS: 40, CONTROL: 3}],
        )
        clock = Clock()
        assert await barrier(port, clock).wait() is True
        assert port.polls == 3 and clock.now == 1.0
        assert port.end_reads == 1 and port.closed

    async def test_records_written_after_the_start_are_not_waited_for(self):
        """Heartbeats keep arriving: a barrier chasing the moving end of a busy topic might never open."""

        class Growing(FakeOffsets):
            async def end_offsets(self, topics):
                ends = await super().end_offsets(topics)
                self.ends = {tp: end + 100 for tp, end in self.ends.items()}
                return ends

        port = Growing({RESULTS: 5}, [{RESULTS: 3}, {RESULTS: 5}])
        assert await barrier(port, Clock()).wait() is True
        assert port.end_reads == 1 and port.polls == 2

    async def test_an_empty_topic_or_a_group_already_at_the_end_does_not_wait(self):
        port = FakeOffsets({}, [{}])
        clock = Clock()
        assert await barrier(port, clock).wait() is True and clock.now == 0

    async def test_gives_up_after_the_bound_and_lets_deadlines_run(self):
        port = FakeOffsets({RESULTS: 40}, [{RESULTS: 12}])
        clock = Clock()
        b = barrier(port, clock, timeout=30.0)
        assert await b.wait() is False
        assert clock.now == 30.0
        assert await b.wait() is True and port.polls == 61  # once passed, a restarted loop does not wait again

    async def test_a_broker_unreachable_at_start_is_retried_within_the_bound(self):
        port = FakeOffsets({RESULTS: 2}, [{RESULTS: 2}], failures=3)
        clock = Clock()
        assert await barrier(port, clock).wait() is True
        assert port.end_reads == 4 and clock.now == 1.5

    @pytest.mark.parametrize(
        "committed,lag",
        [
            ({RESULTS: None}, {"release.results.gatekeeper/0": 40}),
            ({RESULTS: 30}, {"release.results.gatekeeper/0": 10}),
            ({RESULTS: 40}, {}),
            ({RESULTS: 41}, {}),
        ],
    )
    def test_lag_is_what_is_left_to_commit(self, committed, lag):
        assert behind({RESULTS: 40}, committed) == lag
