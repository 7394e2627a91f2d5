"""The link estimator that sizes read-ahead (fsmount.bdp), on a simulated link: while the
window limits the rate the target grows geometrically up to the ceiling; once the link's
bandwidth does, it stops growing, far below the ceiling."""

from __future__ import annotations

import pytest

from fsmount.bdp import LinkEstimator

MIB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(est: LinkEstimator, clock: Clock, inflight: int, *, rtt: float,
             per_conn: float, bandwidth: float, run: int = 8 * MIB) -> None:
    """One round of ``inflight // run`` runs sent together, each on its own connection:
    a run takes the round trip plus its transfer at the slower of its connection's rate and
    its share of the link's bandwidth."""
    runs = max(1, inflight // run)
    rate = min(per_conn, bandwidth / runs)
    tickets = [est.begin() for _ in range(runs)]
    clock.now += rtt + run / rate
    for t in tickets:
        est.end(t, run)


def converge(est: LinkEstimator, clock: Clock, floor: int, ceiling: int, rounds: int,
             **link: float) -> list[int]:
    targets = []
    inflight = floor
    for _ in range(rounds):
        simulate(est, clock, inflight, **link)
        inflight = est.target(floor, ceiling)
        targets.append(inflight)
    return targets


def test_a_window_limited_link_grows_the_target_to_the_ceiling() -> None:
    clock = Clock()
    est = LinkEstimator(clock)
    # 100 ms, 4 MiB per connection per round trip, a link far faster than that.
    targets = converge(est, clock, 16 * MIB, 128 * MIB, 8, rtt=0.1, per_conn=40e6,
                       bandwidth=10e9)
    assert targets[0] > 16 * MIB  # grows at once
    assert targets == sorted(targets)
    assert targets[-1] == 128 * MIB


def settled(targets: list[int]) -> bool:
    last = targets[-4:]
    return max(last) - min(last) <= max(last) // 10


def test_a_bandwidth_limited_link_stops_the_growth() -> None:
    clock = Clock()
    est = LinkEstimator(clock)
    # 20 ms round trip, 100 MB/s in all: more in flight only queues.
    targets = converge(est, clock, 16 * MIB, 512 * MIB, 12, rtt=0.02, per_conn=1e9,
                       bandwidth=100e6)
    assert settled(targets)
    assert 16 * MIB <= targets[-1] < 48 * MIB  # about gain x what the floor delivered


def test_a_fast_link_stays_near_the_floor_and_no_samples_mean_the_floor() -> None:
    clock = Clock()
    est = LinkEstimator(clock)
    assert est.target(16 * MIB, 128 * MIB) == 16 * MIB
    targets = converge(est, clock, 16 * MIB, 128 * MIB, 8, rtt=0.0001, per_conn=1e9,
                       bandwidth=1e9)
    assert settled(targets)
    assert targets[-1] < 48 * MIB


def test_parallel_runs_count_together_in_a_rate_sample() -> None:
    clock = Clock()
    est = LinkEstimator(clock)
    a, b = est.begin(), est.begin()
    clock.now = 1.0
    est.end(a, 10 * MIB)
    est.end(b, 10 * MIB)
    assert est.rate == 20 * MIB  # b saw a's bytes delivered while it was in flight
    assert est.latency() == 1.0
    short = est.begin()
    clock.now = 1.01
    est.end(short, MIB, full=False)  # not a latency sample
    assert est.latency() == 1.0


def test_the_shortest_latency_counts_for_the_horizon_then_gives_way() -> None:
    from fsmount.bdp import LATENCY_HORIZON

    clock = Clock()
    est = LinkEstimator(clock)
    for duration in (0.3, 0.1, 0.5):
        t = est.begin()
        clock.now += duration
        est.end(t, MIB)
    assert est.latency() == pytest.approx(0.1)
    clock.now += LATENCY_HORIZON  # the 0.1 s sample is older than the horizon now
    assert est.latency() == pytest.approx(0.5)
