"""The malloc policy of fsmount's long transfers (the mount, ``fsmount serve``, get/put).

All three move data as 0.5-1 MiB buffers that are allocated in one place (a store thread,
the HTTP client, the chunk cache) and freed in another a moment later.  glibc's defaults
suit that badly, and on a virtual machine whose host takes back free memory (virtio-balloon
free page reporting), memory handed back to the kernel costs a host page fault per 4 KiB
when it is touched again; see docs/performance.md ("sixth session").
"""

from __future__ import annotations

import ctypes

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8

#: Buffers below this size come from the heap, never from a mapping of their own.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of the heap is handed back to the kernel only beyond this.
TRIM_THRESHOLD = 64 * 1024 * 1024


def tune_malloc() -> bool:
    """Set this process's malloc policy for moving chunk-sized buffers; False if this is
    not glibc (nothing is changed then).  Raises nothing.

    * One arena (``M_ARENA_MAX``): buffers made in worker threads and freed on the trio
      thread would otherwise pile up as free blocks in every thread's own arena (a pass
      over 1 GiB with the 256 MiB chunk cache peaked at 421-436 MiB resident, 322-329 MiB
      with one arena).
    * A fixed mmap threshold of 32 MiB and a trim threshold of 64 MiB: by default glibc
      raises its mmap threshold only as far as the largest block freed so far and trims
      the heap top above twice that, so a stream of 1 MiB buffers kept handing memory back
      to the kernel and faulting it in again.  Reading 1 GiB through the mount over
      ``--server``, the mount process faulted in 94-130 MiB without this and 36 MiB with
      it (0.78-0.96 s of CPU against 0.93-0.99 s); ``fsmount get`` and the server gained
      about as much.  At most 64 MiB of freed memory is kept for reuse.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = bool(libc.mallopt(_M_ARENA_MAX, 1))
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and ok
        return bool(libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and ok
    except (OSError, AttributeError):
        return False
