"""The measuring machine's load: other processes' CPU use, and waiting (bounded) for it to drop.

A latency figure taken while other jobs use the cores is not the model's (DESIGN section 7: CV
20-220% on a loaded machine against 1-2% idle). Before timing, the protocol reads a gauge of
*other* processes' CPU use (in cores: the machine's busy time less this process's own) and,
when it is above the profile's ``max_other_cpu``, polls until it drops or ``load_wait_s`` is
spent; the wait and the load it timed under are recorded with the figure.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoprune.config import HardwareProfile

#: reads other processes' CPU use, in cores
LoadGauge = Callable[[], float]
#: how long one psutil reading averages over (s)
SAMPLE_S = 0.1
#: pause between readings while waiting (s)
POLL_S = 0.5


def other_cpu(interval: float = SAMPLE_S) -> float:
    """Other processes' CPU use over ``interval`` seconds, in cores (this process's own use excluded)."""
    import psutil

    me = psutil.Process()
    me.cpu_percent(None)
    psutil.cpu_percent(None)
    time.sleep(interval)
    total = psutil.cpu_percent(None) / 100.0 * (psutil.cpu_count() or 1)
    return max(0.0, total - me.cpu_percent(None) / 100.0)


def tolerated_cpu(profile: HardwareProfile) -> float:
    """The other processes' CPU use a measurement on ``profile`` tolerates (``max_other_cpu`` or its default)."""
    if profile.max_other_cpu is not None:
        return profile.max_other_cpu
    return max(0.25, (os.cpu_count() or 1) - profile.threads - 0.5)


def wait_for_quiet(gauge: LoadGauge, *, bound_s: float, tolerated: float, poll_s: float | None = None,
                   sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic) -> tuple[float, float]:
    """Read ``gauge`` until it is at most ``tolerated`` or ``bound_s`` has passed.

    Returns:
        (seconds waited, the last reading): the caller records both; a last reading above
        ``tolerated`` means the bound ran out and the measurement goes ahead on a busy machine.
    """
    poll = POLL_S if poll_s is None else poll_s
    load = gauge()
    if load <= tolerated or bound_s <= 0:
        return 0.0, load
    start = clock()
    while load > tolerated and clock() - start < bound_s:
        sleep(max(0.0, min(poll, bound_s - (clock() - start))))
        load = gauge()
    return clock() - start, load
