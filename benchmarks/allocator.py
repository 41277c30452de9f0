"""glibc malloc settings: keep freed memory in the process instead of giving it back.

By default glibc serves large blocks (from 128 KiB, a threshold it raises as blocks
are freed) with `mmap` and gives freed memory back to the system (`munmap`, heap
trimming). Every training step allocates and frees the same large temporaries
(activations, gradients, optimizer intermediates), so each step pays page faults to
get fresh zeroed pages again. Raising the mmap and trim thresholds keeps that memory
in the process for reuse; the peak memory stays the same, but it is not returned
after the peak.

Linux with glibc only; elsewhere `keep_freed_memory` does nothing and returns False.
"""

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses an mmap threshold above HEAP_MAX_SIZE / 2 = 32 MiB on 64-bit systems.
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 1 * 2**30


def keep_freed_memory(mmap_threshold=MMAP_THRESHOLD_BYTES, trim_threshold=TRIM_THRESHOLD_BYTES):
    """Sets glibc's mmap and trim thresholds (process-wide, from now on).

    Args:
        mmap_threshold: blocks smaller than this come from the heap, not `mmap`.
        trim_threshold: free memory at the top of the heap kept before trimming.

    Returns:
        True if both settings were accepted, False if not (or not on glibc).
    """
    if platform.system() != "Linux":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    accepted_mmap = mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))
    accepted_trim = mallopt(M_TRIM_THRESHOLD, int(trim_threshold))
    return bool(accepted_mmap) and bool(accepted_trim)
