"""Property tests of the protocol's pure rules against direct models of the seed's text.

Seed: telegram-files-api-current.md, "Uploading files" (part sizes) and "Downloading files"
(getFile windows).
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
from collections.abc import Iterator

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsmount import errors, protocol
from fsmount.protocol import KIB, MIB
from fsmount.remote import InputFileBig
from fsmount.store import Store

# --- part sizes ------------------------------------------------------------------------------

VALID_PART_SIZES = [s for s in range(KIB, 512 * KIB + 1, KIB) if (512 * KIB) % s == 0]


def consistent(sizes: dict[int, int]) -> bool:
    """The seed's rule as a model: some part_size P (a 1 KiB multiple dividing 512 KiB)
    such that every part except the highest-numbered is exactly P and the highest is at
    most P (it may be the last part).  Parts are 1..512 KiB."""
    if not sizes:
        return True
    if any(not 0 < s <= 512 * KIB for s in sizes.values()):
        return False
    last = max(sizes)
    return any(
        all(s == p for n, s in sizes.items() if n != last) and sizes[last] <= p
        for p in VALID_PART_SIZES
    )


def outcome(sizes: dict[int, int], new_part: int | None) -> type[Exception] | None:
    try:
        protocol.check_part_sizes(sizes, new_part=new_part)
    except errors.ProtocolError as exc:
        return type(exc)
    return None


sizes_st = st.sampled_from([100, 1000, KIB, 2 * KIB, 3 * KIB, 4 * KIB, 5 * KIB, 64 * KIB,
                            128 * KIB, 384 * KIB, 512 * KIB])
state_st = st.dictionaries(st.integers(0, 12), sizes_st, max_size=8)


@given(state_st, st.integers(0, 12))
def test_check_part_sizes_rejects_exactly_the_inconsistent_states(
    sizes: dict[int, int], pick: int
) -> None:
    new_part = pick if pick in sizes else None
    assert (outcome(sizes, new_part) is None) == consistent(sizes)


@given(st.lists(st.tuples(st.integers(0, 10), sizes_st), max_size=12))
def test_a_sequence_of_saves_keeps_a_consistent_layout(saves: list[tuple[int, int]]) -> None:
    """Applying saves the way the store does (a rejected save changes nothing) accepts a
    save exactly when the layout stays consistent, and names the broken rule."""
    state: dict[int, int] = {}
    for part, size in saves:
        trial = dict(state)
        trial[part] = size
        err = outcome(trial, part)
        assert (err is None) == consistent(trial), (state, part, size)
        if err is None:
            state = trial
        else:
            assert err in (errors.FilePartSizeInvalid, errors.FilePartSizeChanged)
            inner = part != max(trial)
            if inner and size not in VALID_PART_SIZES:
                # A part that is provably not the last with an impossible size.
                assert err is errors.FilePartSizeInvalid
        assert consistent(state)


@given(state_st.filter(consistent), st.integers(0, 12), sizes_st)
def test_the_stores_two_highest_parts_summary_decides_like_the_full_upload(
    prior: dict[int, int], part: int, size: int
) -> None:
    """The store checks a new part against only the two highest other parts (one SQL row
    pair instead of every part); on any consistent upload that decides the same."""
    others = {p: s for p, s in prior.items() if p != part}
    full = dict(others)
    full[part] = size
    top2 = dict(sorted(others.items(), reverse=True)[:2])
    reduced = dict(top2)
    reduced[part] = size
    assert outcome(full, part) == outcome(reduced, part)


# --- the same rules through a real store ------------------------------------------------------


@contextlib.contextmanager
def temp_store() -> Iterator[Store]:
    with tempfile.TemporaryDirectory() as d:
        store = Store(d, limits=protocol.Limits(upload_max_fileparts_default=16))
        try:
            yield store
        finally:
            store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 6), st.sampled_from([100, KIB, 2 * KIB, 3 * KIB,
                                                               4 * KIB])), min_size=1, max_size=8))
def test_store_accepts_saves_iff_consistent_and_finalizes_the_layout(
    saves: list[tuple[int, int]],
) -> None:
    with temp_store() as store:
        uid = store.default_user_id
        state: dict[int, bytes] = {}
        for i, (part, size) in enumerate(saves):
            data = bytes([i % 251 + 1]) * size
            trial = {p: len(d) for p, d in state.items()}
            trial[part] = size
            try:
                store.save_big_file_part(uid, 7, part, protocol.TOTAL_PARTS_UNKNOWN, data)
                accepted = True
            except (errors.FilePartSizeInvalid, errors.FilePartSizeChanged):
                accepted = False
            assert accepted == consistent(trial)
            if accepted:
                state[part] = data
        n = max(state) + 1 if state else 1
        missing = [p for p in range(n) if p not in state]
        try:
            doc = store.upload_media(uid, InputFileBig(7, n, "x"))
        except errors.FilePartMissing as exc:
            assert missing and exc.part == missing[0]
        else:
            assert not missing
            data = b"".join(state[p] for p in range(n))
            assert doc.sha256 == hashlib.sha256(data).hexdigest()
            got = store.get_file(uid, doc.location, 0, MIB).bytes
            assert got == data[:MIB]


# --- getFile windows --------------------------------------------------------------------------


def window_ok(offset: int, limit: int, precise: bool) -> bool:
    """The seed's text, one bullet per line."""
    if precise:
        ok = offset % 1024 == 0 and limit % 1024 == 0 and limit <= 1048576
    else:
        ok = offset % 4096 == 0 and limit % 4096 == 0 and 1048576 % max(limit, 1) == 0
    # "In any case the requested part should be within one 1 MB chunk."
    ok = ok and offset // (1024 * 1024) == (offset + limit - 1) // (1024 * 1024)
    # Our additions: nothing negative, nothing empty.
    return ok and offset >= 0 and limit > 0


offset_st = st.one_of(
    st.integers(-4 * KIB, 8 * MIB),
    st.integers(-2, 8 * 1024).map(lambda k: k * KIB),
    st.integers(0, 2048).map(lambda k: k * 4 * KIB),
)
limit_st = st.one_of(
    st.integers(-KIB, 2 * MIB),
    st.integers(0, 2048).map(lambda k: k * KIB),
    st.sampled_from([4 * KIB, 8 * KIB, 16 * KIB, 32 * KIB, 64 * KIB, 128 * KIB, 256 * KIB,
                     512 * KIB, MIB, 12 * KIB, 2 * MIB]),
)


@settings(max_examples=2000)
@given(offset_st, limit_st, st.booleans())
def test_check_get_file_matches_the_seed(offset: int, limit: int, precise: bool) -> None:
    try:
        protocol.check_get_file(offset, limit, precise)
        accepted = True
    except (errors.OffsetInvalid, errors.LimitInvalid) as exc:
        accepted = False
        align = 1024 if precise else 4096
        if offset < 0 or offset % align:
            assert isinstance(exc, errors.OffsetInvalid)
        else:
            assert isinstance(exc, errors.LimitInvalid)
    assert accepted == window_ok(offset, limit, precise)
