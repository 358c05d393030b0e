"""Peak-RSS probe, run in a fresh subprocess by ``bench/run.py``.

``python bench/rss_probe.py trellis N``: import trellis, run the N-wide fan-out once.
``python bench/rss_probe.py asyncio N``: import trellis, ``asyncio.gather`` N 50 ms sleeps.

Prints one JSON line: ``{"mode", "n", "peak_rss_mb", "vm_hwm_mb", "ru_maxrss_mb", "elapsed_s"}``.

Why not just ``ru_maxrss``: on Linux the kernel carries the RSS high-water mark across
``fork`` + ``exec`` (``exec_mmap`` folds the old address space's peak into
``signal->maxrss``), so a probe spawned by a benchmark process that already holds 70 MB
reports at least 70 MB whatever it does. ``VmHWM`` in ``/proc/self/status`` is the peak of
this process image alone; ``peak_rss_mb`` is ``VmHWM`` where it exists, else ``ru_maxrss``.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys

import workloads

import trellis as tl


def ru_maxrss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def vm_hwm_mb() -> float | None:
    """Peak RSS of this process image (Linux ``VmHWM``), or ``None`` where unavailable."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


async def probe(mode: str, n: int) -> float:
    if mode == "trellis":
        async with tl.Engine() as engine:
            return await workloads.trellis_fanout_runner(engine, workloads.fanout_flow(), n)()
    if mode == "asyncio":
        return await workloads.asyncio_gather_runner(n)()
    raise SystemExit(f"unknown mode {mode!r}; use 'trellis' or 'asyncio'")


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: rss_probe.py trellis|asyncio N")
    mode, n = argv[0], int(argv[1])
    elapsed = asyncio.run(probe(mode, n))
    hwm, maxrss = vm_hwm_mb(), ru_maxrss_mb()
    report = {
        "mode": mode,
        "n": n,
        "peak_rss_mb": maxrss if hwm is None else hwm,
        "vm_hwm_mb": hwm,
        "ru_maxrss_mb": maxrss,
        "elapsed_s": elapsed,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
