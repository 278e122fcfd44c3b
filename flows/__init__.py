"""Prefect flows: one module per pipeline step, plus the reaper.

`FLOWS` maps a job type (as the app names it) to its flow.
"""

from __future__ import annotations

from typing import Any

from flows.qualify import qualify_companies

FLOWS: dict[str, Any] = {
    "qualify": qualify_companies,
}
