"""Settings from the environment and `.env` (one object, built once, overridable in tests).

Provider settings (key, base URL, prices, limits, extras) come from the table in
`tam.providers`: `settings.provider("hunter")` is Hunter's block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from tam.providers import PROVIDER_NAMES, EnvSettings, LimitConfig, ModelPrice, ProviderSettings
from tam.providers import PROVIDERS as _TABLE
from tam.providers import default_limits as _default_limits
from tam.providers import default_prices as _default_prices
from tam.secrets import url_password_forms

__all__ = [
    "DEFAULT_DATA_DIR",
    "PROVIDERS",
    "LimitConfig",
    "ModelPrice",
    "ProviderSettings",
    "SecretSource",
    "Settings",
    "get_settings",
    "secret_env_names",
    "set_secret_source",
    "url_password_forms",
]

DEFAULT_DATA_DIR = Path(".tam")
# The provider names, in table order (tam.emulators mounts one emulator per name).
PROVIDERS = PROVIDER_NAMES


class Settings(EnvSettings):
    """Every knob of the product. Provider keys are secrets and never logged."""

    model_config = SettingsConfigDict(env_nested_delimiter="__")

    database_url: str = Field(
        default=f"sqlite+aiosqlite:///{DEFAULT_DATA_DIR}/tam.db",
        validation_alias="TAM_DATABASE_URL",
    )
    data_dir: Path = Field(default=DEFAULT_DATA_DIR, validation_alias="TAM_DATA_DIR")

    # --- limits, retries, timeouts --------------------------------------------------------
    limits: dict[str, LimitConfig] = Field(
        default_factory=_default_limits, validation_alias="TAM_LIMITS"
    )
    # "local": one process-wide window per account; "prefect": leases on Prefect global
    # concurrency limits, so the budget holds across processes (see tam.limiters).
    limiter_backend: str = Field(
        default="local",
        validation_alias="TAM_LIMITER_BACKEND",
        pattern="^(local|prefect)$",
    )
    http_timeout_s: float = Field(default=60.0, gt=0, validation_alias="TAM_HTTP_TIMEOUT_S")
    max_attempts: int = Field(default=6, ge=1, le=20, validation_alias="TAM_MAX_ATTEMPTS")

    # --- flows and job reporting ------------------------------------------------------------
    # Minimum items per chunk task; TAM_MAX_TASK_RUNS bounds the number of chunks.
    chunk_size: int = Field(default=100, ge=1, validation_alias="TAM_CHUNK_SIZE")
    max_task_runs: int = Field(default=40, ge=1, validation_alias="TAM_MAX_TASK_RUNS")
    write_batch_size: int = Field(
        default=100, ge=1, le=1000, validation_alias="TAM_WRITE_BATCH_SIZE"
    )
    # Batches fill by size under load; the timer only bounds how stale a slow run's rows get.
    write_flush_s: float = Field(default=5.0, gt=0, validation_alias="TAM_WRITE_FLUSH_S")
    # How long results wait in memory for a database that went away before the job fails
    # (they are journaled too, so a re-dispatch still writes them without paying again).
    write_max_outage_s: float = Field(
        default=120.0,
        gt=0,
        validation_alias="TAM_WRITE_MAX_OUTAGE_S",
    )
    read_page_size: int = Field(default=500, ge=1, le=1000, validation_alias="TAM_READ_PAGE_SIZE")
    # The frontend polls every few seconds; faster writes would only cost round trips.
    progress_interval_s: float = Field(
        default=3.0,
        ge=0,
        validation_alias="TAM_PROGRESS_INTERVAL_S",
    )
    heartbeat_interval_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias="TAM_HEARTBEAT_INTERVAL_S",
    )
    stale_job_after_s: float = Field(
        default=300.0,
        gt=0,
        validation_alias="TAM_STALE_JOB_AFTER_S",
    )
    linkedin_active_days: int = Field(
        default=30,
        ge=1,
        validation_alias="TAM_LINKEDIN_ACTIVE_DAYS",
    )

    # --- pipeline steps ----------------------------------------------------------------------
    # Price field → USD per unit (the fields and list prices are the table's); a partial
    # TAM_PROVIDER_PRICES JSON overrides only the prices it names.
    provider_prices: dict[str, float] = Field(
        default_factory=_default_prices, validation_alias="TAM_PROVIDER_PRICES"
    )
    # Discolike scores digital footprint 0..800; below this a company barely exists online.
    discolike_min_digital_footprint: int | None = Field(
        default=50,
        ge=0,
        le=800,
        validation_alias="TAM_DISCOLIKE_MIN_DIGITAL_FOOTPRINT",
    )
    # Google Places pages through at most 60 places per text query.
    places_max_results: int = Field(
        default=60,
        ge=1,
        le=60,
        validation_alias="TAM_PLACES_MAX_RESULTS",
    )
    prospeo_websites_per_search: int = Field(
        default=500,
        ge=1,
        le=500,
        validation_alias="TAM_PROSPEO_WEBSITES_PER_SEARCH",
    )
    # Profiles per trigger: one snapshot is one unit of retry, so not too many either.
    brightdata_profiles_per_snapshot: int = Field(
        default=200,
        ge=1,
        le=5000,
        validation_alias="TAM_BRIGHTDATA_PROFILES_PER_SNAPSHOT",
    )
    # How far back posts are collected: enough to date a last post, bounded because each
    # post record is billed.
    linkedin_lookback_days: int = Field(
        default=90,
        ge=1,
        validation_alias="TAM_LINKEDIN_LOOKBACK_DAYS",
    )
    # A contact checked more recently than this is skipped by a re-run (unless forced).
    linkedin_recheck_after_h: float = Field(
        default=24.0,
        ge=0,
        validation_alias="TAM_LINKEDIN_RECHECK_AFTER_H",
    )
    # Projects refined at once by the scheduled refine-all flow.
    refine_all_concurrency: int = Field(
        default=4,
        ge=1,
        le=50,
        validation_alias="TAM_REFINE_ALL_CONCURRENCY",
    )

    # --- dispatch ---------------------------------------------------------------------------
    service_api_key: SecretStr | None = Field(default=None, validation_alias="SERVICE_API_KEY")
    supabase_url: str | None = Field(default=None, validation_alias="SUPABASE_URL")
    supabase_service_role_key: SecretStr | None = Field(
        default=None,
        validation_alias="SUPABASE_SERVICE_ROLE_KEY",
    )
    # The Edge Function gives up after 25 s; the webhook answers (502) before that.
    dispatch_budget_s: float = Field(
        default=20.0,
        gt=0,
        validation_alias="TAM_DISPATCH_BUDGET_S",
    )
    # /docs, /redoc and /openapi.json tell an anonymous caller the whole API: off unless asked.
    webhook_docs: bool = Field(default=False, validation_alias="TAM_WEBHOOK_DOCS")

    _providers: dict[str, ProviderSettings] = PrivateAttr(default_factory=dict)

    @field_validator("provider_prices")
    @classmethod
    def _known_prices(cls, value: dict[str, float]) -> dict[str, float]:
        known = _default_prices()
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown price fields {unknown}; known: {sorted(known)}")
        negative = sorted(k for k, v in value.items() if v < 0)
        if negative:
            raise ValueError(f"prices must be >= 0: {negative}")
        return {**known, **value}

    @model_validator(mode="after")
    def _merge_limit_defaults(self) -> Settings:
        # A partial TAM_LIMITS (say only anthropic) must not drop the other providers.
        merged = _default_limits()
        merged.update(self.limits)
        self.limits = merged
        return self

    def model_post_init(self, context: Any, /) -> None:  # noqa: ARG002 (pydantic's signature)
        for row in _TABLE.values():
            self._providers[row.name] = row.settings()

    def provider(self, name: str) -> ProviderSettings:
        """`name`'s block: key, base URL, prices, limits and the row's extras."""
        block = self._providers[name]
        row = _TABLE[name]
        return block.bound(
            prices={field: self.provider_prices[field] for field in row.prices},
            limits={account: self.limit_for(account) for account in row.limits},
        )

    def limit_for(self, provider: str) -> LimitConfig:
        return self.limits.get(provider, LimitConfig())

    def secret_values(self) -> list[str]:
        """Every configured secret, for redaction and for tests that grep for leaks: the
        keys, and the database URL's password (as written and percent-decoded)."""
        values = []
        keys = [getattr(self, name) for name in type(self).model_fields]
        keys += [block.api_key for block in self._providers.values()]
        for value in keys:
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        values += [v for v in url_password_forms(self.database_url) if v not in values]
        return values

    def secret_is_set(self, env: str) -> bool:
        """Whether the environment (or `.env`, or an init argument) set secret `env`."""
        for block in self._providers.values():
            if _TABLE[block.name].key_env == env:
                return "api_key" in block.model_fields_set
        return _env_field(env) in self.model_fields_set

    def with_secrets(self, values: Mapping[str, str]) -> Settings:
        """A copy with these secret variables set (they outrank the environment)."""
        by_key = {row.key_env: row for row in _TABLE.values()}
        top: dict[str, Any] = {k: v for k, v in values.items() if k not in by_key}
        settings = Settings(**top) if top else self.model_copy(deep=True)
        for env, value in values.items():
            if env in by_key:
                row = by_key[env]
                settings._providers[row.name] = row.settings(api_key=value)
        return settings


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
    """The environment variables that hold secrets: the database URL (its password), every
    provider key of the table, and the service's own keys."""
    names = ["TAM_DATABASE_URL", *(row.key_env for row in _TABLE.values())]
    for field in Settings.model_fields.values():
        if field.annotation == SecretStr | None and isinstance(field.validation_alias, str):
            names.append(field.validation_alias)
    return names


def _env_field(name: str) -> str:
    for field_name, field in Settings.model_fields.items():
        if field.validation_alias == name:
            return field_name
    raise KeyError(name)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    settings = Settings()
    if _secret_source is None:
        return settings
    unset = [n for n in secret_env_names() if not settings.secret_is_set(n)]
    filled = {n: v for n, v in _secret_source(unset).items() if n in unset and v}
    # NOTE: init arguments outrank the environment, which is why only unset names are filled.
    return settings.with_secrets(filled) if filled else settings
