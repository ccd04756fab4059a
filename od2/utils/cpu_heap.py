"""glibc's malloc for benchmarks and long CPU runs: keep freed memory for reuse, not hand it back to the kernel.

glibc maps every allocation above its mmap threshold (32 MiB at most) fresh from the kernel and unmaps it when it
is freed. A CPU training step of RetinaNet-R50 at 576x768 allocates dozens of such tensors (one 2 x 256 x 144 x 192
float32 activation is 57 MiB), so every step faults them in again page by page: 60k-860k minor page faults and
0.1-1.9 s of system time per step on a 2-core CPU, varying with the heap's history. Timings then depend on what
ran before, which is what a benchmark cannot have.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # the largest value mallopt takes: keep up to 2 GiB free at the top of the heap


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve every allocation from its heap and keep freed memory there for the next one.

    The same as starting Python with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``, for the whole
    process from now on. After a few steps the page faults described above stop, at the cost of a higher resident
    size: freed chunks are only reused once the heap holds gaps that fit (glibc's aligned allocations are a few
    bytes larger than the chunk a tensor of the same size freed), which took RetinaNet-R50 training from 3.5 to
    4.1 GiB. So ``od2 bench`` uses it and training leaves it to the user (README: the environment variables).
    Returns False, changing nothing, where the C library is not glibc.
    """
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
