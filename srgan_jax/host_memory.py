"""Host memory available now, for the up-front checks of `upscale` and `benchmark`."""

from __future__ import annotations

import os


def available_bytes() -> int | None:
    """Memory the process can take without swapping: Linux's MemAvailable (free plus
    reclaimable caches), else free physical pages; None where neither is known."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
