"""Per-account limits: max in flight and requests per interval, shared by every task.

`AccountLimiter` schedules calls locally in a sliding window (the next call starts the moment
a slot frees). Where its capacity comes from is pluggable: a fixed local budget, or leases of
Prefect global-concurrency slots taken in coarse blocks (see `orchestration.limits`), so the
budget holds across processes without a server round trip per call.
"""

from tam.limiters.window import AccountLimiter, CapacitySource, LimiterStats, limiter_for

__all__ = ["AccountLimiter", "CapacitySource", "LimiterStats", "limiter_for"]
