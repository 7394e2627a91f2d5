"""How bytes written to fsmount reach the store: the write path's upload package.

One module per concept, lowest first:

* :mod:`~fsmount.upload.policy`: how a stream is cut into parts and segments (pure rules);
* :mod:`~fsmount.upload.spill` and :mod:`~fsmount.upload.retain`: keeping sent parts until
  their segment is finalized (a shared memory budget, spill files beyond it);
* :mod:`~fsmount.upload.sender`: saving parts with bounded concurrency, finalizing segments;
* :mod:`~fsmount.upload.readback`: reading uploaded documents back, verified;
* :mod:`~fsmount.upload.streaming`: :class:`StreamingUpload`, a file written sequentially
  from 0 and uploaded while it grows;
* :mod:`~fsmount.upload.files`: :func:`upload_file` of a local file or file object;
* :mod:`~fsmount.upload.staging`: :class:`StagingFile`, a file written at any offset.

The per-file write state of the mount (which of these a file open for writing uses) is
:mod:`fsmount.writestate`.  This module re-exports the public names so that callers import
them from ``fsmount.upload``.
"""

from __future__ import annotations

from .files import upload_file
from .policy import MAX_FINALIZE_ATTEMPTS, PART_SIZE, STREAM_SEGMENT_PARTS, SegmentRules
from .readback import read_document, read_segments
from .retain import (
    DEFAULT_WRITE_MEMORY,
    RETAIN_IN_MEMORY,
    SPILL_BATCH,
    SPILL_QUEUE,
    RetainBudget,
)
from .sender import CONFIG_TTL, DEFAULT_PARALLEL, PARALLEL_MAX, cached_config, new_file_id
from .spill import DIRECT_ALIGN, SpillFile
from .staging import WINDOW, FetchFn, StagingFile
from .streaming import (
    READ_CHUNK,
    PartSavedFn,
    ProgressFn,
    ReadAt,
    SavedParts,
    StreamingUpload,
)

__all__ = [
    "CONFIG_TTL",
    "DEFAULT_PARALLEL",
    "PARALLEL_MAX",
    "DEFAULT_WRITE_MEMORY",
    "DIRECT_ALIGN",
    "MAX_FINALIZE_ATTEMPTS",
    "PART_SIZE",
    "READ_CHUNK",
    "RETAIN_IN_MEMORY",
    "SPILL_BATCH",
    "SPILL_QUEUE",
    "STREAM_SEGMENT_PARTS",
    "WINDOW",
    "FetchFn",
    "PartSavedFn",
    "ProgressFn",
    "ReadAt",
    "RetainBudget",
    "SavedParts",
    "SegmentRules",
    "SpillFile",
    "StagingFile",
    "StreamingUpload",
    "cached_config",
    "new_file_id",
    "read_document",
    "read_segments",
    "upload_file",
]
