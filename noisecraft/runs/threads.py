"""How many intra-op threads a job uses: the CPUs that other processes leave free, measured when it starts.

PyTorch's CPU kernels run OpenMP parallel regions that end in a barrier: every thread must finish before the
next operation starts. With one thread per core and another process busy on one of the cores, the thread
sharing that core waits for its time slices, and every small operation waits with it. On the project's 2-core
machine, training the digits UNet with 2 threads beside one busy process ran at 82 images/s against 145 with
1 thread (issue 13; benchmarks/contention.py measures both policies). So a job counts the CPU time other
processes took over a short window (Linux /proc/stat, minus this process's own) and uses one thread per CPU
left free. The count is fixed for the job: the UNet's gradients differ between thread counts at the 1e-7
level, and a job whose arithmetic changed with the load of its neighbours would not be reproducible.
"""

from __future__ import annotations

import math
import os
import time

#: CPUs' worth of other work tolerated before a thread is given up (background noise of an idle machine)
NOISE_CPUS = 0.25


def _proc_stat_busy() -> float | None:
    """Seconds of non-idle CPU time of the whole machine since boot (Linux), or None elsewhere."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def busy_elsewhere(window: float = 0.3) -> float | None:
    """CPUs' worth of work done by other processes over `window` seconds, or None where it cannot be read."""
    busy0, own0, wall0 = _proc_stat_busy(), _own_cpu(), time.monotonic()
    if busy0 is None:
        return None
    time.sleep(window)
    busy1, own1, wall1 = _proc_stat_busy(), _own_cpu(), time.monotonic()
    return max(0.0, ((busy1 or busy0) - busy0 - (own1 - own0)) / (wall1 - wall0))


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def choose_threads(requested: int | None = None, window: float = 0.3) -> tuple[int, str]:
    """(threads, why): `requested` if given, else OMP_NUM_THREADS if set, else one per CPU not busy elsewhere."""
    if requested:
        return int(requested), "as configured"
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"])), "from OMP_NUM_THREADS"
    cpus = available_cpus()
    busy = busy_elsewhere(window)
    if busy is None:
        return cpus, f"one per CPU ({cpus})"
    threads = max(1, min(cpus, cpus - math.ceil(busy - NOISE_CPUS)))
    return threads, f"{cpus} CPUs, {busy:.1f} busy with other processes"


def use_threads(requested: int | None = None) -> str:
    """Set torch's intra-op threads by `choose_threads`; returns a line saying what was chosen and why."""
    import torch

    threads, why = choose_threads(requested)
    torch.set_num_threads(threads)
    return f"threads: {threads} ({why})"


__all__ = ["available_cpus", "busy_elsewhere", "choose_threads", "use_threads"]
