"""Build provider clients from settings: delegations to each client's `from_settings`.

NOTE: kept while call sites move to `<Client>.from_settings(settings)`; new code calls that.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import SecretStr

from tam.clients.anthropic import ClaudeQualifier
from tam.clients.brightdata import BrightDataClient
from tam.clients.discolike import DiscolikeClient
from tam.clients.google_places import GooglePlacesClient
from tam.clients.hunter import HunterClient
from tam.clients.neverbounce import NeverBounceClient
from tam.clients.prospeo import ProspeoClient
from tam.errors import AuthFailed
from tam.models import Usage
from tam.settings import Settings


def require_key(value: SecretStr | None, *, provider: str, env: str) -> str:
    if value is None or not value.get_secret_value().strip():
        raise AuthFailed(f"{env} is not set", provider=provider)
    return value.get_secret_value()


def claude_qualifier(settings: Settings) -> ClaudeQualifier:
    return ClaudeQualifier.from_settings(settings)


def discolike_client(settings: Settings) -> DiscolikeClient:
    return DiscolikeClient.from_settings(settings)


def google_places_client(settings: Settings) -> GooglePlacesClient:
    return GooglePlacesClient.from_settings(settings)


def prospeo_client(settings: Settings) -> ProspeoClient:
    return ProspeoClient.from_settings(settings)


def hunter_client(settings: Settings) -> HunterClient:
    return HunterClient.from_settings(settings)


def neverbounce_client(settings: Settings) -> NeverBounceClient:
    return NeverBounceClient.from_settings(settings)


def brightdata_client(settings: Settings) -> BrightDataClient:
    return BrightDataClient.from_settings(settings)


def usage_summary(usages: Iterable[Usage]) -> dict[str, dict[str, float]]:
    """{provider: {credits, costUsd}} for a job's result_summary (providers summed)."""
    out: dict[str, dict[str, float]] = {}
    for usage in usages:
        entry = out.setdefault(usage.provider, {"credits": 0.0, "costUsd": 0.0})
        entry["credits"] += usage.credits
        entry["costUsd"] = round(entry["costUsd"] + usage.cost_usd, 6)
    return out
