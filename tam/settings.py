"""Settings from the environment and `.env` (one object, built once, overridable in tests)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".tam")

PROVIDERS = (
    "anthropic",
    "prospeo",
    "hunter",
    "neverbounce",
    "brightdata",
    "discolike",
    "google_places",
)


class LimitConfig(BaseModel):
    """One provider account's budget, shared by every run and every worker."""

    max_in_flight: int = Field(default=10, ge=1, le=1000)
    # Requests allowed per `interval_s`; None = only the in-flight cap applies.
    requests_per_interval: int | None = Field(default=None, ge=1)
    interval_s: float = Field(default=60.0, gt=0)


def _default_limits() -> dict[str, LimitConfig]:
    # NOTE: near each provider's entry-tier limits. Anthropic's per-minute budget depends on
    # the account tier, so only its in-flight cap is fixed; the limiter learns the rate from
    # 429s (set TAM_LIMITS__ANTHROPIC__REQUESTS_PER_INTERVAL to pin it).
    return {
        "anthropic": LimitConfig(max_in_flight=10),
        # Prospeo limits search and enrichment separately (30/min vs 300/min on Starter).
        "prospeo": LimitConfig(max_in_flight=5, requests_per_interval=30),
        "prospeo_enrich": LimitConfig(max_in_flight=5, requests_per_interval=300),
        "hunter": LimitConfig(max_in_flight=5, requests_per_interval=15, interval_s=1.0),
        "neverbounce": LimitConfig(max_in_flight=10),
        "brightdata": LimitConfig(max_in_flight=5),
        "discolike": LimitConfig(max_in_flight=3),
        "google_places": LimitConfig(max_in_flight=5, requests_per_interval=600),
    }


class ModelPrice(BaseModel):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


def _default_prices() -> dict[str, ModelPrice]:
    return {
        "claude-haiku-4-5": ModelPrice(input_per_mtok=1.0, output_per_mtok=5.0),
        "claude-sonnet-4-5": ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0),
        "claude-sonnet-4-6": ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0),
        "claude-opus-4-5": ModelPrice(input_per_mtok=5.0, output_per_mtok=25.0),
    }


class ProviderPrices(BaseModel):
    """USD per unit, at list prices; set the account's real prices through TAM_PROVIDER_PRICES."""

    prospeo_credit_usd: float = Field(default=0.039, ge=0)  # Starter: $39 / 1,000 credits
    hunter_credit_usd: float = Field(default=0.0245, ge=0)  # Starter: $49 / 2,000 credits
    neverbounce_check_usd: float = Field(default=0.008, ge=0)  # pay as you go: $8 / 1,000
    brightdata_record_usd: float = Field(default=0.0015, ge=0)  # posts dataset, per record
    discolike_query_usd: float = Field(default=0.18, ge=0)
    discolike_record_usd: float = Field(default=0.0035, ge=0)
    google_places_request_usd: float = Field(default=0.035, ge=0)  # Text Search Enterprise


class Settings(BaseSettings):
    """Every knob of the product. Provider keys are secrets and never logged."""

    model_config = SettingsConfigDict(
        # TAM_ENV_FILE="" disables the file (tests must not read a developer's .env).
        env_file=os.environ.get("TAM_ENV_FILE", ".env") or None,
        env_ignore_empty=True,
        extra="ignore",
        env_nested_delimiter="__",
        populate_by_name=True,
    )

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{DEFAULT_DATA_DIR}/tam.db",
        validation_alias=AliasChoices("TAM_DATABASE_URL", "database_url"),
    )
    data_dir: Path = Field(
        default=DEFAULT_DATA_DIR, validation_alias=AliasChoices("TAM_DATA_DIR", "data_dir")
    )

    # --- providers -------------------------------------------------------------------------
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    anthropic_base_url: str = Field(
        default="https://api.anthropic.com",
        validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "anthropic_base_url"),
    )
    anthropic_model: str = Field(
        default="claude-haiku-4-5",
        validation_alias=AliasChoices("TAM_ANTHROPIC_MODEL", "anthropic_model"),
    )
    anthropic_max_tokens: int = Field(default=400, ge=64, le=8192)
    model_prices: dict[str, ModelPrice] = Field(
        default_factory=_default_prices,
        validation_alias=AliasChoices("TAM_MODEL_PRICES", "model_prices"),
    )

    prospeo_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("PROSPEO_API_KEY", "prospeo_api_key")
    )
    prospeo_base_url: str = Field(
        default="https://api.prospeo.io",
        validation_alias=AliasChoices("PROSPEO_BASE_URL", "prospeo_base_url"),
    )
    hunter_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("HUNTER_API_KEY", "hunter_api_key")
    )
    hunter_base_url: str = Field(
        default="https://api.hunter.io",
        validation_alias=AliasChoices("HUNTER_BASE_URL", "hunter_base_url"),
    )
    neverbounce_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("NEVERBOUNCE_API_KEY", "neverbounce_api_key"),
    )
    neverbounce_base_url: str = Field(
        default="https://api.neverbounce.com",
        validation_alias=AliasChoices("NEVERBOUNCE_BASE_URL", "neverbounce_base_url"),
    )
    brightdata_api_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("BRIGHTDATA_API_TOKEN", "brightdata_api_token"),
    )
    brightdata_base_url: str = Field(
        default="https://api.brightdata.com",
        validation_alias=AliasChoices("BRIGHTDATA_BASE_URL", "brightdata_base_url"),
    )
    brightdata_posts_dataset_id: str = Field(
        default="gd_lyy3tktm25m4avu764",
        validation_alias=AliasChoices("BRIGHTDATA_POSTS_DATASET_ID", "brightdata_posts_dataset_id"),
    )
    discolike_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DISCOLIKE_API_KEY", "discolike_api_key")
    )
    discolike_base_url: str = Field(
        default="https://api.discolike.com",
        validation_alias=AliasChoices("DISCOLIKE_BASE_URL", "discolike_base_url"),
    )
    google_places_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("GOOGLE_PLACES_API_KEY", "google_places_api_key"),
    )
    google_places_base_url: str = Field(
        default="https://places.googleapis.com",
        validation_alias=AliasChoices("GOOGLE_PLACES_BASE_URL", "google_places_base_url"),
    )

    # --- limits, retries, timeouts --------------------------------------------------------
    limits: dict[str, LimitConfig] = Field(
        default_factory=_default_limits, validation_alias=AliasChoices("TAM_LIMITS", "limits")
    )
    # "local": one process-wide window per account; "prefect": leases on Prefect global
    # concurrency limits, so the budget holds across processes (see tam.limiters).
    limiter_backend: str = Field(
        default="local",
        validation_alias=AliasChoices("TAM_LIMITER_BACKEND", "limiter_backend"),
        pattern="^(local|prefect)$",
    )
    http_timeout_s: float = Field(
        default=60.0, gt=0, validation_alias=AliasChoices("TAM_HTTP_TIMEOUT_S", "http_timeout_s")
    )
    max_attempts: int = Field(
        default=6, ge=1, le=20, validation_alias=AliasChoices("TAM_MAX_ATTEMPTS", "max_attempts")
    )

    # --- flows and job reporting ------------------------------------------------------------
    # Minimum items per chunk task; TAM_MAX_TASK_RUNS bounds the number of chunks.
    chunk_size: int = Field(
        default=100, ge=1, validation_alias=AliasChoices("TAM_CHUNK_SIZE", "chunk_size")
    )
    max_task_runs: int = Field(
        default=40, ge=1, validation_alias=AliasChoices("TAM_MAX_TASK_RUNS", "max_task_runs")
    )
    write_batch_size: int = Field(default=100, ge=1, le=1000)
    # Batches fill by size under load; the timer only bounds how stale a slow run's rows get.
    write_flush_s: float = Field(default=5.0, gt=0)
    # How long results wait in memory for a database that went away before the job fails
    # (they are journaled too, so a re-dispatch still writes them without paying again).
    write_max_outage_s: float = Field(
        default=120.0,
        gt=0,
        validation_alias=AliasChoices("TAM_WRITE_MAX_OUTAGE_S", "write_max_outage_s"),
    )
    read_page_size: int = Field(default=500, ge=1, le=1000)
    # The frontend polls every few seconds; faster writes would only cost round trips.
    progress_interval_s: float = Field(
        default=3.0,
        ge=0,
        validation_alias=AliasChoices("TAM_PROGRESS_INTERVAL_S", "progress_interval_s"),
    )
    heartbeat_interval_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias=AliasChoices("TAM_HEARTBEAT_INTERVAL_S", "heartbeat_interval_s"),
    )
    stale_job_after_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias=AliasChoices("TAM_STALE_JOB_AFTER_S", "stale_job_after_s"),
    )
    linkedin_active_days: int = Field(
        default=30,
        ge=1,
        validation_alias=AliasChoices("TAM_LINKEDIN_ACTIVE_DAYS", "linkedin_active_days"),
    )

    # --- pipeline steps ----------------------------------------------------------------------
    provider_prices: ProviderPrices = Field(
        default_factory=ProviderPrices,
        validation_alias=AliasChoices("TAM_PROVIDER_PRICES", "provider_prices"),
    )
    # Discolike scores digital footprint 0..800; below this a company barely exists online.
    discolike_min_digital_footprint: int | None = Field(
        default=50,
        ge=0,
        le=800,
        validation_alias=AliasChoices(
            "TAM_DISCOLIKE_MIN_DIGITAL_FOOTPRINT", "discolike_min_digital_footprint"
        ),
    )
    # Google Places pages through at most 60 places per text query.
    places_max_results: int = Field(
        default=60,
        ge=1,
        le=60,
        validation_alias=AliasChoices("TAM_PLACES_MAX_RESULTS", "places_max_results"),
    )
    prospeo_websites_per_search: int = Field(
        default=500,
        ge=1,
        le=500,
        validation_alias=AliasChoices(
            "TAM_PROSPEO_WEBSITES_PER_SEARCH", "prospeo_websites_per_search"
        ),
    )
    brightdata_poll_interval_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias=AliasChoices(
            "TAM_BRIGHTDATA_POLL_INTERVAL_S", "brightdata_poll_interval_s"
        ),
    )
    brightdata_snapshot_timeout_s: float = Field(
        default=1800.0,
        gt=0,
        validation_alias=AliasChoices(
            "TAM_BRIGHTDATA_SNAPSHOT_TIMEOUT_S", "brightdata_snapshot_timeout_s"
        ),
    )
    # Profiles per trigger: one snapshot is one unit of retry, so not too many either.
    brightdata_profiles_per_snapshot: int = Field(
        default=200,
        ge=1,
        le=5000,
        validation_alias=AliasChoices(
            "TAM_BRIGHTDATA_PROFILES_PER_SNAPSHOT", "brightdata_profiles_per_snapshot"
        ),
    )
    # How far back posts are collected: enough to date a last post, bounded because each
    # post record is billed.
    linkedin_lookback_days: int = Field(
        default=90,
        ge=1,
        validation_alias=AliasChoices("TAM_LINKEDIN_LOOKBACK_DAYS", "linkedin_lookback_days"),
    )
    # A contact checked more recently than this is skipped by a re-run (unless forced).
    linkedin_recheck_after_h: float = Field(
        default=24.0,
        ge=0,
        validation_alias=AliasChoices("TAM_LINKEDIN_RECHECK_AFTER_H", "linkedin_recheck_after_h"),
    )
    # Projects refined at once by the scheduled refine-all flow.
    refine_all_concurrency: int = Field(
        default=4,
        ge=1,
        le=50,
        validation_alias=AliasChoices("TAM_REFINE_ALL_CONCURRENCY", "refine_all_concurrency"),
    )

    # --- dispatch ---------------------------------------------------------------------------
    service_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SERVICE_API_KEY", "service_api_key")
    )
    supabase_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SUPABASE_URL", "supabase_url")
    )
    supabase_service_role_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("SUPABASE_SERVICE_ROLE_KEY", "supabase_service_role_key"),
    )
    # The Edge Function gives up after 25 s; the webhook answers (502) before that.
    dispatch_budget_s: float = Field(
        default=20.0,
        gt=0,
        validation_alias=AliasChoices("TAM_DISPATCH_BUDGET_S", "dispatch_budget_s"),
    )
    # /docs, /redoc and /openapi.json tell an anonymous caller the whole API: off unless asked.
    webhook_docs: bool = Field(
        default=False, validation_alias=AliasChoices("TAM_WEBHOOK_DOCS", "webhook_docs")
    )

    @model_validator(mode="after")
    def _merge_limit_defaults(self) -> Settings:
        # A partial TAM_LIMITS (say only anthropic) must not drop the other providers.
        merged = _default_limits()
        merged.update(self.limits)
        self.limits = merged
        return self

    def limit_for(self, provider: str) -> LimitConfig:
        return self.limits.get(provider, LimitConfig())

    def secret_values(self) -> list[str]:
        """Every configured secret, for redaction and for tests that grep for leaks: the
        keys, and the database URL's password (as written and percent-decoded)."""
        values = []
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        values += [v for v in url_password_forms(self.database_url) if v not in values]
        return values


def url_password_forms(url: str) -> list[str]:
    """The password of a database URL (`scheme://user:password@host/...` or libpq's
    `?password=`), as written and percent-decoded; [] without one.

    NOTE: a driver's error may quote the URL as configured or the password it decoded."""
    try:
        parts = urlsplit(url)
        query = [pair.partition("=") for pair in parts.query.split("&")]
        written = [parts.password or "", *(v for k, _, v in query if k == "password")]
    except ValueError:  # a malformed port, say: no password can be told apart
        return []
    forms: list[str] = []
    for value in written:
        for form in (value, unquote(value)):
            if form and form not in forms:
                forms.append(form)
    return forms


# Asked for the secret variables the environment (and `.env`) left unset; answers with the
# values it can provide. Installed by the Prefect side (tasks/secrets.py), which loads Secret
# blocks at run time, so the core never imports Prefect and no value is stored in Prefect.
SecretSource = Callable[[Sequence[str]], Mapping[str, str]]
_secret_source: SecretSource | None = None


def set_secret_source(source: SecretSource | None) -> None:
    """Where unset secrets come from when settings are built (None: nowhere)."""
    global _secret_source
    _secret_source = source
    get_settings.cache_clear()


def secret_env_names() -> list[str]:
    """The environment variables that hold secrets: every key, and the database URL
    (its password)."""
    names = ["TAM_DATABASE_URL"]
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if field.annotation == SecretStr | None and isinstance(alias, AliasChoices):
            names.append(str(alias.choices[0]))
    return names


def _env_field(name: str) -> str:
    for field_name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices) and alias.choices[0] == name:
            return field_name
    raise KeyError(name)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    if _secret_source is None:
        return settings
    unset = [n for n in secret_env_names() if _env_field(n) not in settings.model_fields_set]
    filled = {n: v for n, v in _secret_source(unset).items() if n in unset and v}
    # NOTE: init arguments outrank the environment, which is why only unset names are filled.
    overlay: dict[str, Any] = dict(filled)
    return Settings(**overlay) if overlay else settings
