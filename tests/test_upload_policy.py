"""Unit tests of the segment policy (fsmount/upload/policy.py): pure rules, no store.

The cut a streaming upload makes is simulated here from the policy's functions alone and
checked against the protocol's own rules (fsmount/protocol.py), so that every cut the
uploader can make is one the store accepts.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fsmount import protocol
from fsmount.protocol import KIB, MIB
from fsmount.upload import policy
from fsmount.upload.policy import PART_SIZE, SegmentRules


def simulate_cut(writes: list[int], rules: SegmentRules) -> list[list[int]]:
    """Cut a stream written in pieces of ``writes`` bytes the way StreamingUpload does:
    full parts only once a byte follows them, the rest at finish; a segment closes when
    full.  Returns the part sizes of each segment."""
    segments: list[list[int]] = []
    current: list[int] | None = None
    pending = 0

    def emit(size: int, last: bool) -> None:
        nonlocal current
        if current is None:
            current = []
            segments.append(current)
        current.append(size)
        if last or rules.segment_full(len(current)):
            current = None

    for w in writes:
        pending += w
        for _ in range(policy.full_parts_ready(pending)):
            emit(PART_SIZE, last=False)
            pending -= PART_SIZE
    if pending:
        emit(pending, last=True)
    return segments


rules_st = st.builds(
    SegmentRules,
    max_parts=st.integers(1, 40),
    big_file_threshold=st.sampled_from([1 * MIB, 3 * MIB + 5, 10 * MIB]),
    cap=st.none() | st.integers(1, 40),
)
writes_st = st.lists(st.integers(1, 3 * PART_SIZE), min_size=0, max_size=40)


@settings(max_examples=200, deadline=None)
@given(writes=writes_st, rules=rules_st)
def test_every_cut_passes_the_protocol_rules(writes: list[int], rules: SegmentRules) -> None:
    segments = simulate_cut(writes, rules)
    total = sum(writes)
    assert sum(sum(s) for s in segments) == total
    for seg in segments:
        assert 1 <= len(seg) <= rules.segment_parts
        protocol.check_part_sizes(dict(enumerate(seg)))  # raises if the store would refuse
        assert all(size == PART_SIZE for size in seg[:-1])
        assert 0 < seg[-1] <= PART_SIZE
    # Every segment but the last is full: as few segments as the cap allows.
    assert all(len(s) == rules.segment_parts for s in segments[:-1])
    assert len(segments) == math.ceil(math.ceil(total / PART_SIZE) / rules.segment_parts)


@settings(max_examples=200, deadline=None)
@given(writes=writes_st, rules=rules_st)
def test_part_size_and_calls_follow_the_cut(writes: list[int], rules: SegmentRules) -> None:
    for seg in simulate_cut(writes, rules):
        size = sum(seg)
        for number, got in enumerate(seg):
            assert policy.part_size(number, len(seg), size, closed=True) == got
            small = rules.small_part(number, got)
            # saveFilePart only for parts ending within the threshold (the store's rule).
            assert small == (policy.part_offset(number) + got <= rules.big_file_threshold)
            if not rules.big_segment(size):
                assert small  # a small segment is saved with saveFilePart throughout
        # An open segment's last part so far is taken as full (more may follow).
        assert policy.part_size(len(seg) - 1, len(seg), size, closed=False) == PART_SIZE


def test_full_parts_wait_for_a_byte_after_them() -> None:
    assert policy.full_parts_ready(0) == 0
    assert policy.full_parts_ready(PART_SIZE) == 0
    assert policy.full_parts_ready(PART_SIZE + 1) == 1
    assert policy.full_parts_ready(3 * PART_SIZE) == 2
    assert policy.full_parts_ready(3 * PART_SIZE + 1) == 3


def test_segment_length_and_hashing() -> None:
    limits = protocol.Limits()
    rules = SegmentRules(limits.max_parts(False), limits.big_file_threshold,
                         policy.STREAM_SEGMENT_PARTS)
    assert rules.segment_parts == 64 and rules.segment_bytes == 32 * MIB
    assert SegmentRules(8, MIB, 64).segment_parts == 8  # the store's limit wins
    assert SegmentRules(4000, MIB).segment_parts == 4000
    with pytest.raises(ValueError):
        SegmentRules(4000, MIB, 0)
    assert policy.hashed_while_streaming(0)
    assert not any(policy.hashed_while_streaming(i) for i in range(1, 10))
    # Hashing stops with the first part that ends past the threshold.
    assert rules.keeps_hashing(19, PART_SIZE)  # ends at exactly 10 MiB
    assert not rules.keeps_hashing(20, 1)
    assert not rules.big_segment(10 * MIB) and rules.big_segment(10 * MIB + 1)


def test_total_parts_and_resends() -> None:
    assert policy.total_parts(7, last=True) == 7
    assert policy.total_parts(7, last=False) == protocol.TOTAL_PARTS_UNKNOWN
    assert policy.resend_numbers(3, 1, 8) == [3]
    assert policy.resend_numbers(3, 2, 8) == [3, 4, 5, 6, 7]
    assert policy.may_resend(0, 1, 8) and policy.may_resend(7, 4, 8)
    assert not policy.may_resend(8, 1, 8) and not policy.may_resend(-1, 1, 8)
    assert not policy.may_resend(2, policy.MAX_FINALIZE_ATTEMPTS, 8)
    assert policy.refresh_after(3600.0) == 1800.0


@settings(max_examples=300, deadline=None)
@given(size=st.integers(0, 200 * PART_SIZE), max_parts=st.integers(1, 50),
       threshold=st.sampled_from([MIB, 10 * MIB]))
def test_plans_are_balanced_and_cover_the_file(size: int, max_parts: int, threshold: int
                                               ) -> None:
    plan = policy.plan_segments(size, max_parts, threshold)
    if size == 0:
        assert plan == ()
        return
    pieces = math.ceil(size / PART_SIZE)
    assert len(plan) == math.ceil(pieces / max_parts)
    assert [s.index for s in plan] == list(range(len(plan)))
    assert sum(s.size for s in plan) == size
    first = 0
    for seg in plan:
        assert seg.first_part == first and 1 <= seg.parts <= max_parts
        assert seg.big == (seg.size > threshold)
        assert seg.holds(first) and seg.holds(first + seg.parts - 1)
        assert not seg.holds(first - 1) and not seg.holds(first + seg.parts)
        first += seg.parts
    assert first == pieces
    counts = [s.parts for s in plan]
    # Balanced: all segments but the last have the same count, the last at most that and
    # fewer than one part per segment short of it.
    assert all(c == counts[0] for c in counts[:-1])
    assert counts[0] - len(plan) < counts[-1] <= counts[0]
    # The plan is the streaming cut with segments of balanced_segment_parts parts, so a
    # whole-file upload of a known size cuts the file the same way.
    per = policy.balanced_segment_parts(size, max_parts)
    cut = simulate_cut([size], SegmentRules(max_parts, threshold, per))
    assert [len(s) for s in cut] == counts
    assert [sum(s) for s in cut] == [s.size for s in plan]


def test_plan_of_the_rest_tests_example() -> None:
    # 19 parts, at most 8 per upload: 3 segments of 7, 7 and 5 parts (not 8, 8, 3).
    plan = policy.plan_segments(9 * MIB + 4321, 8, MIB)
    assert [s.parts for s in plan] == [7, 7, 5]
    assert [s.big for s in plan] == [True, True, True]
    assert policy.plan_segments(700 * KIB, 8, MIB)[0].big is False
