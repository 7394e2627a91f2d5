"""The named errors and the one errno table."""

from __future__ import annotations

import errno

import pytest

from fsmount import errors

SEED_NAMES = [
    "FILE_PARTS_INVALID",
    "FILE_PART_INVALID",
    "FILE_PART_TOO_BIG",
    "FILE_PART_EMPTY",
    "FILE_PART_SIZE_INVALID",
    "FILE_PART_SIZE_CHANGED",
    "MD5_CHECKSUM_INVALID",
    "FILE_ID_INVALID",
    "FILE_REFERENCE_EXPIRED",
    "OFFSET_INVALID",
    "LIMIT_INVALID",
]


@pytest.mark.parametrize("name", SEED_NAMES)
def test_every_seed_error_name_round_trips(name: str) -> None:
    exc = errors.from_name(name, "why")
    assert exc.name == name
    assert isinstance(exc, errors.ProtocolError)
    assert type(exc) is not errors.FsmountError
    assert str(exc) == f"{name}: why"


def test_part_missing_carries_its_number() -> None:
    exc = errors.FilePartMissing(3)
    assert exc.name == "FILE_PART_3_MISSING"
    again = errors.from_name("FILE_PART_17_MISSING")
    assert isinstance(again, errors.FilePartMissing)
    assert again.part == 17
    assert again.name == "FILE_PART_17_MISSING"


def test_rate_limited_keeps_retry_after() -> None:
    exc = errors.from_name("RATE_LIMITED", retry_after="2.5")
    assert isinstance(exc, errors.RateLimited)
    assert exc.retry_after == 2.5


def test_unknown_name_is_a_plain_error_not_a_crash() -> None:
    exc = errors.from_name("SOMETHING_NEW", "from a newer server")
    assert type(exc) is errors.FsmountError
    assert exc.name == "SOMETHING_NEW"
    assert errors.errno_for(exc) == errno.EIO


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (errors.QuotaExceeded(), errno.ENOSPC),
        (errors.FileTooBig(), errno.EFBIG),
        (errors.NotFound(), errno.ENOENT),
        (errors.AccessDenied(), errno.EACCES),
        (errors.TransportError(), errno.EIO),
        (errors.ChecksumMismatch(), errno.EIO),
        (errors.NotEmpty(), errno.ENOTEMPTY),
        (errors.AlreadyExists(), errno.EEXIST),
        (errors.IsADirectory(), errno.EISDIR),
        (errors.NotADirectory(), errno.ENOTDIR),
        (errors.FilePartSizeChanged(), errno.EIO),
        (errors.FilePartMissing(2), errno.EIO),
        (errors.FileReferenceExpired(), errno.ESTALE),
        (OSError(errno.EROFS, "ro"), errno.EROFS),
        (RuntimeError("bug"), errno.EIO),
    ],
)
def test_errno_table(exc: BaseException, expected: int) -> None:
    assert errors.errno_for(exc) == expected


def test_every_error_class_has_a_distinct_name() -> None:
    names = [cls.__dict__["name"] for cls in errors._all_error_classes() if "name" in cls.__dict__]
    assert len(names) == len(set(names))
