"""Domain errors of the store and the transport, and the one table that maps them to errno.

Every error the protocol defines is an exception whose ``.name`` is the seed's exact error
string (``FILE_PART_SIZE_CHANGED``, ``FILE_PART_3_MISSING``, ...).  Errors of the namespace
and of the transport follow the same shape so that the HTTP server can send any of them as
JSON and the client can raise the same class again (see :func:`from_name`).

Only :data:`ERRNO` decides which errno a filesystem caller sees; nothing else in the
package hard-codes errno values for domain errors.
"""

from __future__ import annotations

import errno
import re

__all__ = [
    "FsmountError",
    "ProtocolError",
    "FilePartsInvalid",
    "FilePartInvalid",
    "FilePartTooBig",
    "FilePartEmpty",
    "FilePartSizeInvalid",
    "FilePartSizeChanged",
    "FilePartMissing",
    "Md5ChecksumInvalid",
    "FileIdInvalid",
    "FileReferenceExpired",
    "OffsetInvalid",
    "LimitInvalid",
    "NotFound",
    "AlreadyExists",
    "NotEmpty",
    "NotADirectory",
    "IsADirectory",
    "InvalidName",
    "InvalidArgument",
    "NodeIdInvalid",
    "QuotaExceeded",
    "FileTooBig",
    "AccessDenied",
    "Unauthorized",
    "RateLimited",
    "StoreLocked",
    "TransportError",
    "Unreachable",
    "ConnectionRefused",
    "HostNotFound",
    "ConnectTimeout",
    "ConnectionClosed",
    "NotTlsServer",
    "TlsCertificateRejected",
    "TlsFailed",
    "ServerURLNotFound",
    "ChecksumMismatch",
    "NotPermitted",
    "NameTooLong",
    "NoSuchAttribute",
    "AttributeTooBig",
    "AttributesFull",
    "ERRNO",
    "errno_for",
    "from_name",
]


class FsmountError(Exception):
    """Base of every domain error.  ``name`` is the stable, machine-readable error string."""

    name: str = "INTERNAL"
    #: HTTP status the network server answers with for this error.
    http_status: int = 500

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.name)
        self.message = message or self.name

    def __str__(self) -> str:
        if self.message == self.name:
            return self.name
        return f"{self.name}: {self.message}"


class ProtocolError(FsmountError):
    """An input error defined by the chunked transfer protocol (the seeds' 400 errors)."""

    http_status = 400


# --- upload errors (telegram-files-api-current.md, "Uploading files") ---------------------


class FilePartsInvalid(ProtocolError):
    """The number of parts is not between 1 and the user's upload_max_fileparts."""

    name = "FILE_PARTS_INVALID"


class FilePartInvalid(ProtocolError):
    """The part number is not between 0 and upload_max_fileparts - 1."""

    name = "FILE_PART_INVALID"


class FilePartTooBig(ProtocolError):
    """A part is larger than 512 KiB."""

    name = "FILE_PART_TOO_BIG"


class FilePartEmpty(ProtocolError):
    """A part has no bytes."""

    name = "FILE_PART_EMPTY"


class FilePartSizeInvalid(ProtocolError):
    """A part that is not the last one has a size that does not divide 512 KiB."""

    name = "FILE_PART_SIZE_INVALID"


class FilePartSizeChanged(ProtocolError):
    """A part's size differs from the size of the other parts of the same file."""

    name = "FILE_PART_SIZE_CHANGED"


class FilePartMissing(ProtocolError):
    """Part ``part`` is missing from storage at finalize time; the name carries the number."""

    name = "FILE_PART_X_MISSING"

    def __init__(self, part: int, message: str | None = None) -> None:
        self.part = part
        self.name = f"FILE_PART_{part}_MISSING"
        super().__init__(message)


class Md5ChecksumInvalid(ProtocolError):
    """The MD5 given at finalize does not match the uploaded bytes."""

    name = "MD5_CHECKSUM_INVALID"


# --- download errors ----------------------------------------------------------------------


class FileIdInvalid(ProtocolError):
    """The file location does not name a file this user may read."""

    name = "FILE_ID_INVALID"
    http_status = 404


class FileReferenceExpired(ProtocolError):
    """The location named content that existed once and has since been replaced or deleted."""

    name = "FILE_REFERENCE_EXPIRED"
    http_status = 410


class OffsetInvalid(ProtocolError):
    """getFile's offset breaks the alignment rules."""

    name = "OFFSET_INVALID"


class LimitInvalid(ProtocolError):
    """getFile's limit breaks the alignment rules or leaves the 1 MiB window."""

    name = "LIMIT_INVALID"


# --- namespace errors ---------------------------------------------------------------------


class NotFound(FsmountError):
    name = "NOT_FOUND"
    http_status = 404


class AlreadyExists(FsmountError):
    name = "ALREADY_EXISTS"
    http_status = 409


class NotEmpty(FsmountError):
    name = "NOT_EMPTY"
    http_status = 409


class NotADirectory(FsmountError):
    name = "NOT_A_DIRECTORY"
    http_status = 409


class IsADirectory(FsmountError):
    name = "IS_A_DIRECTORY"
    http_status = 409


class InvalidName(FsmountError):
    name = "INVALID_NAME"
    http_status = 400


class NameTooLong(InvalidName):
    """A name of more than 255 bytes (ENAMETOOLONG, as POSIX asks)."""

    name = "NAME_TOO_LONG"
    http_status = 400


class InvalidArgument(FsmountError):
    name = "INVALID_ARGUMENT"
    http_status = 400


class NodeIdInvalid(FsmountError):
    """A node id given to create a node with was never reserved (reserveNodeIds), or a node
    has it already."""

    name = "NODE_ID_INVALID"
    http_status = 400


class NotPermitted(FsmountError):
    """The operation is not allowed on this node at all (a hard link to a folder, setting a
    read-only attribute): EPERM, whoever asks."""

    name = "NOT_PERMITTED"
    http_status = 403


class NoSuchAttribute(FsmountError):
    """The node has no extended attribute of that name."""

    name = "NO_SUCH_ATTRIBUTE"
    http_status = 404


class AttributeTooBig(FsmountError):
    """An extended attribute's value above 64 KiB."""

    name = "ATTRIBUTE_TOO_BIG"
    http_status = 413


class AttributesFull(FsmountError):
    """A node's extended attributes would exceed their bound (names and values together)."""

    name = "ATTRIBUTES_FULL"
    http_status = 507


class QuotaExceeded(FsmountError):
    name = "QUOTA_EXCEEDED"
    http_status = 507


class FileTooBig(FsmountError):
    name = "FILE_TOO_BIG"
    http_status = 413


class AccessDenied(FsmountError):
    name = "ACCESS_DENIED"
    http_status = 403


class Unauthorized(FsmountError):
    """No, a wrong, or a revoked bearer token (easemob's ``auth_bad_access_token``)."""

    name = "auth_bad_access_token"
    http_status = 401


class RateLimited(FsmountError):
    name = "RATE_LIMITED"
    http_status = 429

    def __init__(self, retry_after: float = 1.0, message: str | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class StoreLocked(FsmountError):
    """The store directory is already in exclusive use by another mount or server."""

    name = "STORE_LOCKED"
    http_status = 503


class TransportError(FsmountError):
    """The remote could not be reached, or kept failing after every retry."""

    name = "TRANSPORT_ERROR"
    http_status = 502


class Unreachable(TransportError):
    """The server at ``url`` could not be reached after every retry; the subclasses say why.

    Raised by the HTTP client only, never sent by a server: the subclasses have no ``name``
    of their own, so :func:`from_name` never builds one and a server that sent one would be
    read back as a plain TransportError.  ``detail`` is the low-level reason, for humans.
    """

    #: What happened, in plain words (the subclasses say it more precisely).
    what = "cannot reach the server"

    def __init__(self, url: str, detail: str = "") -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"{url}: {self.what}" + (f" ({detail})" if detail else ""))


class ConnectionRefused(Unreachable):
    """Nothing listens at the URL's host and port."""

    what = "connection refused"


class HostNotFound(Unreachable):
    """The URL's host name does not resolve to an address."""

    what = "the host name does not resolve"


class ConnectTimeout(Unreachable):
    """The server took longer than the timeout to accept or to answer."""

    what = "no answer in time"


class ConnectionClosed(Unreachable):
    """The server closed the connection without an answer (an https server asked in plain
    http does this)."""

    what = "the server closed the connection without answering"


class NotTlsServer(Unreachable):
    """An ``https://`` URL names a server that does not speak TLS."""

    what = "the server does not speak TLS (https)"


class TlsCertificateRejected(Unreachable):
    """The server's TLS certificate failed verification (untrusted, wrong host name)."""

    what = "the server's TLS certificate was rejected"


class TlsFailed(Unreachable):
    """The TLS handshake failed for another reason."""

    what = "the TLS handshake failed"


class ServerURLNotFound(NotFound):
    """The server answered 404 at ``url`` for a call that always exists: the base URL is
    wrong (e.g. a path after HOST:PORT).  Raised by the client's start-up check."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(f"the server answered 404 Not Found at {url}")


class ChecksumMismatch(FsmountError):
    """Downloaded bytes do not match the store's block checksums (CRC32C or SHA-256)."""

    name = "CHECKSUM_MISMATCH"
    http_status = 502


#: The one table from domain error to errno.  Lookup walks the class's MRO, so a subclass
#: inherits its parent's errno unless listed itself.
ERRNO: dict[type[FsmountError], int] = {
    FileIdInvalid: errno.ESTALE,
    FileReferenceExpired: errno.ESTALE,
    ProtocolError: errno.EIO,
    NotFound: errno.ENOENT,
    AlreadyExists: errno.EEXIST,
    NotEmpty: errno.ENOTEMPTY,
    NotADirectory: errno.ENOTDIR,
    IsADirectory: errno.EISDIR,
    InvalidName: errno.EINVAL,
    NameTooLong: errno.ENAMETOOLONG,
    InvalidArgument: errno.EINVAL,
    NodeIdInvalid: errno.EINVAL,
    QuotaExceeded: errno.ENOSPC,
    NotPermitted: errno.EPERM,
    NoSuchAttribute: errno.ENODATA,
    AttributeTooBig: errno.E2BIG,
    AttributesFull: errno.ENOSPC,
    FileTooBig: errno.EFBIG,
    AccessDenied: errno.EACCES,
    Unauthorized: errno.EACCES,
    RateLimited: errno.EAGAIN,
    StoreLocked: errno.EBUSY,
    TransportError: errno.EIO,
    ChecksumMismatch: errno.EIO,
    FsmountError: errno.EIO,
}


def errno_for(exc: BaseException) -> int:
    """Return the errno a filesystem caller should see for ``exc`` (EIO for anything unknown)."""
    if isinstance(exc, FsmountError):
        for cls in type(exc).__mro__:
            if cls in ERRNO:
                return ERRNO[cls]
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return errno.EIO


def _all_error_classes() -> list[type[FsmountError]]:
    out: list[type[FsmountError]] = []
    todo: list[type[FsmountError]] = [FsmountError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


_PART_MISSING = re.compile(r"^FILE_PART_(\d+)_MISSING$")


def from_name(name: str, message: str | None = None, **extra: object) -> FsmountError:
    """Rebuild the error whose ``.name`` is ``name`` (used by the HTTP client).

    Unknown names become a plain :class:`FsmountError` carrying that name, never a crash.
    """
    m = _PART_MISSING.match(name)
    if m:
        return FilePartMissing(int(m.group(1)), message)
    if name == RateLimited.name:
        retry_after = extra.get("retry_after", 1.0)
        return RateLimited(float(retry_after) if isinstance(retry_after, int | float | str) else 1.0, message)
    for cls in _all_error_classes():
        if cls.__dict__.get("name") == name and cls not in (FilePartMissing, RateLimited):
            return cls(message)
    err = FsmountError(message or name)
    err.name = name
    return err
