"""Prefect tasks of the pipeline's flows.

No task carries tags: Prefect 3.8 acquires, renews and releases a `tag:<name>` concurrency
lease over the API for every tagged task run (a serialized round trip each, measured at up to
2 s of start-up on a busy server). API accounts are limited by `orchestration.limits` instead.
"""

# Installs the run-time Secret-block loader into tam.settings before any flow builds them.
from orchestration import secrets as _secrets  # noqa: F401
