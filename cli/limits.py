"""`tam limits` and `tam limits apply`: the per-account global concurrency limits on the
Prefect server, shown against settings, and created or updated from them."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

from orchestration.leases import create_limit, read_limit
from tam.limiters.lease_policy import limit_specs
from tam.settings import Settings

_SHOWN = ("limit", "slot_decay_per_second", "active", "active_slots")


def _row(provider: str, kind: str, name: str, **values: Any) -> dict[str, Any]:
    return {"provider": provider, "kind": kind, "name": name, **values}


async def apply_limits(settings: Settings) -> list[dict[str, Any]]:
    """Create or update every provider's GCLs from settings (idempotent: a second run
    reports "unchanged"); delete a rate GCL whose provider no longer has a rate."""
    rows: list[dict[str, Any]] = []
    async with get_client() as client:
        for provider, config in sorted(settings.limits.items()):
            specs = limit_specs(provider, config)
            if config.requests_per_interval is None:
                specs.append(("rate", f"tam-rate-{provider}", 0, 0.0))  # must not exist
            for kind, name, limit, decay in specs:
                gcl, action = await read_limit(client, name), "unchanged"
                if kind == "rate" and limit == 0:
                    if gcl is None:
                        continue
                    await client.delete_global_concurrency_limit_by_name(name)
                    action = "deleted"
                elif gcl is None:
                    await create_limit(client, name, limit, decay)
                    action = "created"
                elif (gcl.limit, gcl.slot_decay_per_second, gcl.active) != (limit, decay, True):
                    update = GlobalConcurrencyLimitUpdate(
                        limit=limit, slot_decay_per_second=decay, active=True
                    )
                    await client.update_global_concurrency_limit(name, update)
                    action = "updated"
                rows.append(
                    _row(provider, kind, name, limit=limit or None, slot_decay_per_second=decay)
                    | {"action": action}
                )
    return rows


async def show_limits(settings: Settings) -> list[dict[str, Any]]:
    """Each provider's GCLs: configured values, server values, and slots in use now."""
    rows: list[dict[str, Any]] = []
    async with get_client() as client:
        for provider, config in sorted(settings.limits.items()):
            for kind, name, limit, decay in limit_specs(provider, config):
                gcl = await read_limit(client, name)
                server = {attr: getattr(gcl, attr, None) for attr in _SHOWN}
                in_sync = (server["limit"], server["slot_decay_per_second"]) == (limit, decay)
                rows.append(
                    _row(provider, kind, name, configured_limit=limit, configured_decay=decay)
                    | {"exists": gcl is not None, **server, "in_sync": in_sync and server["active"]}
                )
    return rows
