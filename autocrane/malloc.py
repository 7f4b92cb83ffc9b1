"""glibc's malloc, told to give large blocks back to the system as soon as they are freed.

glibc serves a block of 128 KiB or more with its own ``mmap`` and returns it with ``munmap``, but
after the first such block is freed it raises that threshold to the block's size (up to 32 MiB),
and later blocks of that size come from the heap. A server that once read a few 1 MB requests
then keeps their memory: freed blocks between live small ones are never given back. The webhook
stayed at 88 MiB after admitting pods with 1 MB values where it started at 62 MiB (and at
665 MiB with the caches of the time). A fixed threshold keeps large blocks in their own mappings,
at the cost of one ``mmap``/``munmap`` per large block, which only large requests make.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter (malloc.h); setting it also turns off its dynamic adjustment."""
LARGE_BLOCK = 128 * 1024
"""glibc's default threshold, kept fixed."""


def return_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Serve blocks of ``threshold`` bytes and more with their own mappings from now on.

    Returns False where that cannot be set (a C library other than glibc, such as musl's, whose
    ``mallopt`` does nothing).
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process' own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))
