"""Build provider clients from settings (a missing key is a clear job error, not a crash)."""

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
    return ClaudeQualifier(
        api_key=require_key(
            settings.anthropic_api_key, provider="anthropic", env="ANTHROPIC_API_KEY"
        ),
        base_url=settings.anthropic_base_url,
        model=settings.anthropic_model,
        max_tokens=settings.anthropic_max_tokens,
        timeout=settings.http_timeout_s,
        prices=settings.model_prices,
    )


def discolike_client(settings: Settings) -> DiscolikeClient:
    prices = settings.provider_prices
    return DiscolikeClient(
        api_key=require_key(
            settings.discolike_api_key, provider="discolike", env="DISCOLIKE_API_KEY"
        ),
        base_url=settings.discolike_base_url,
        timeout=settings.http_timeout_s,
        price_per_query_usd=prices.discolike_query_usd,
        price_per_record_usd=prices.discolike_record_usd,
    )


def google_places_client(settings: Settings) -> GooglePlacesClient:
    return GooglePlacesClient(
        api_key=require_key(
            settings.google_places_api_key,
            provider="google_places",
            env="GOOGLE_PLACES_API_KEY",
        ),
        base_url=settings.google_places_base_url,
        timeout=settings.http_timeout_s,
        price_per_request_usd=settings.provider_prices.google_places_request_usd,
    )


def prospeo_client(settings: Settings) -> ProspeoClient:
    return ProspeoClient(
        api_key=require_key(settings.prospeo_api_key, provider="prospeo", env="PROSPEO_API_KEY"),
        base_url=settings.prospeo_base_url,
        timeout=settings.http_timeout_s,
        credit_price_usd=settings.provider_prices.prospeo_credit_usd,
    )


def hunter_client(settings: Settings) -> HunterClient:
    return HunterClient(
        api_key=require_key(settings.hunter_api_key, provider="hunter", env="HUNTER_API_KEY"),
        base_url=settings.hunter_base_url,
        timeout=settings.http_timeout_s,
        credit_price_usd=settings.provider_prices.hunter_credit_usd,
    )


def neverbounce_client(settings: Settings) -> NeverBounceClient:
    return NeverBounceClient(
        api_key=require_key(
            settings.neverbounce_api_key, provider="neverbounce", env="NEVERBOUNCE_API_KEY"
        ),
        base_url=settings.neverbounce_base_url,
        timeout=settings.http_timeout_s,
        credit_price_usd=settings.provider_prices.neverbounce_check_usd,
    )


def brightdata_client(settings: Settings) -> BrightDataClient:
    return BrightDataClient(
        api_token=require_key(
            settings.brightdata_api_token, provider="brightdata", env="BRIGHTDATA_API_TOKEN"
        ),
        base_url=settings.brightdata_base_url,
        dataset_id=settings.brightdata_posts_dataset_id,
        timeout=settings.http_timeout_s,
        poll_interval_s=settings.brightdata_poll_interval_s,
        snapshot_timeout_s=settings.brightdata_snapshot_timeout_s,
        price_per_record_usd=settings.provider_prices.brightdata_record_usd,
    )


def usage_summary(usages: Iterable[Usage]) -> dict[str, dict[str, float]]:
    """{provider: {credits, costUsd}} for a job's result_summary (providers summed)."""
    out: dict[str, dict[str, float]] = {}
    for usage in usages:
        entry = out.setdefault(usage.provider, {"credits": 0.0, "costUsd": 0.0})
        entry["credits"] += usage.credits
        entry["costUsd"] = round(entry["costUsd"] + usage.cost_usd, 6)
    return out
