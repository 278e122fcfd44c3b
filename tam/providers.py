"""Every provider in one table; its settings block, key variable and emulator derive from it.

A row names what the rest of the product needs to know about a provider: the environment
variables of its key and base URL, its default base URL, its list prices, its accounts'
default limits and the block's extra settings. `settings.provider(name)` reads the row's
variables, `failures` names the key variable, the emulators point the base URL variable at
themselves, and the README and prefect.yaml tests check they agree with the table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar, Self

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, create_model
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tam.errors import AuthFailed


class LimitConfig(BaseModel):
    """One provider account's budget, shared by every run and every worker."""

    max_in_flight: int = Field(default=10, ge=1, le=1000)
    # Requests allowed per `interval_s`; None = only the in-flight cap applies.
    requests_per_interval: int | None = Field(default=None, ge=1)
    interval_s: float = Field(default=60.0, gt=0)


class ModelPrice(BaseModel):
    """USD per million tokens."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


def _default_model_prices() -> dict[str, ModelPrice]:
    return {
        "claude-haiku-4-5": ModelPrice(input_per_mtok=1.0, output_per_mtok=5.0),
        "claude-sonnet-4-5": ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0),
        "claude-sonnet-4-6": ModelPrice(input_per_mtok=3.0, output_per_mtok=15.0),
        "claude-opus-4-5": ModelPrice(input_per_mtok=5.0, output_per_mtok=25.0),
    }


class EnvSettings(BaseSettings):
    """Settings read from the environment (and `.env`) by their documented names only.

    A field is set by its field name in code (`Settings(chunk_size=5)`), but the environment
    is read by the field's alias alone: an unrelated `BASE_URL` or `MODEL` must not leak in.
    """

    model_config = SettingsConfigDict(
        # TAM_ENV_FILE="" disables the file (tests must not read a developer's .env).
        env_file=os.environ.get("TAM_ENV_FILE", ".env") or None,
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],  # noqa: ARG003 (pydantic-settings calls it so)
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # NOTE: pydantic-settings reads a field's name from the environment whenever names
        # are accepted for init; only the init source keeps accepting them.
        for source in (env_settings, dotenv_settings):
            source.config = {**source.config, "populate_by_name": False, "validate_by_name": False}
        return init_settings, env_settings, dotenv_settings, file_secret_settings


class ProviderSettings(EnvSettings):
    """One provider's block: its key, base URL, prices and limits (plus its row's extras).

    Each row gets its own subclass whose fields read the row's environment variables.
    """

    # The row this block belongs to (set on each row's subclass, never read from the env).
    provider_name: ClassVar[str] = ""
    # NOTE: placeholders; each row's subclass names the real variables (the base is never
    # read from the environment, and a bare `API_KEY` must never be).
    api_key: SecretStr | None = Field(default=None, validation_alias="TAM_UNUSED_API_KEY")
    base_url: str = Field(default="", validation_alias="TAM_UNUSED_BASE_URL")

    @property
    def name(self) -> str:
        return self.provider_name

    # Filled by `Settings.provider`: TAM_PROVIDER_PRICES and TAM_LIMITS are read once, there.
    _prices: dict[str, float] = PrivateAttr(default_factory=dict)
    _limits: dict[str, LimitConfig] = PrivateAttr(default_factory=dict)

    @property
    def prices(self) -> dict[str, float]:
        """Price field (as TAM_PROVIDER_PRICES names it) → USD per unit."""
        return dict(self._prices)

    @property
    def limits(self) -> dict[str, LimitConfig]:
        """Account → budget (usually one account, named like the provider)."""
        return dict(self._limits)

    def extra(self, name: str) -> Any:
        """One of the row's extra settings (say Bright Data's ``posts_dataset_id``)."""
        if name not in type(self).model_fields:
            raise KeyError(f"{self.name} has no setting {name!r}")
        return getattr(self, name)

    def bound(self, *, prices: dict[str, float], limits: dict[str, LimitConfig]) -> Self:
        block = self.model_copy()
        block._prices, block._limits = dict(prices), dict(limits)
        return block

    def require_key(self) -> str:
        """The key, or AuthFailed naming the variable to set (a clear job error)."""
        value = self.api_key
        if value is None or not value.get_secret_value().strip():
            raise AuthFailed(f"{PROVIDERS[self.name].key_env} is not set", provider=self.name)
        return value.get_secret_value()


@dataclass(frozen=True)
class Provider:
    """One row of the table."""

    name: str
    key_env: str
    default_base_url: str
    # Price field (as TAM_PROVIDER_PRICES names it) → list price in USD.
    prices: Mapping[str, float] = field(default_factory=dict)
    # Account → default budget (Prospeo has two accounts: search and enrichment).
    limits: Mapping[str, LimitConfig] = field(default_factory=dict)
    # Block field → (type, pydantic Field with the variable it is read from).
    extras: Mapping[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def base_url_env(self) -> str:
        return f"{self.name.upper()}_BASE_URL"

    @property
    def emulator_path(self) -> str:
        """Where the emulator server mounts this provider (`<root>/<name>`)."""
        return f"/{self.name}"

    @cached_property
    def settings_class(self) -> type[ProviderSettings]:
        fields: dict[str, Any] = {
            "api_key": (SecretStr | None, Field(default=None, validation_alias=self.key_env)),
            "base_url": (
                str,
                Field(default=self.default_base_url, validation_alias=self.base_url_env),
            ),
            **self.extras,
        }
        title = "".join(part.title() for part in self.name.split("_")) + "Settings"
        model: type[ProviderSettings] = create_model(title, __base__=ProviderSettings, **fields)
        model.provider_name = self.name
        return model

    def settings(self, **values: Any) -> ProviderSettings:
        """This provider's block from the environment (`values` outrank it)."""
        return self.settings_class(**values)


def _extra(kind: Any, default: Any, env: str, **constraints: Any) -> tuple[Any, Any]:
    return kind, Field(default=default, validation_alias=env, **constraints)


def _extra_factory(kind: Any, factory: Callable[[], Any], env: str) -> tuple[Any, Any]:
    return kind, Field(default_factory=factory, validation_alias=env)


# NOTE: limits are near each provider's entry-tier limits; prices are list prices (set the
# account's real ones through TAM_PROVIDER_PRICES / TAM_MODEL_PRICES).
_TABLE = (
    Provider(
        name="anthropic",
        key_env="ANTHROPIC_API_KEY",
        default_base_url="https://api.anthropic.com",
        # The per-minute budget depends on the account tier, so only the in-flight cap is
        # fixed; the limiter learns the rate from 429s (or pin it with TAM_LIMITS__ANTHROPIC__
        # REQUESTS_PER_INTERVAL).
        limits={"anthropic": LimitConfig(max_in_flight=10)},
        extras={
            "model": _extra(str, "claude-haiku-4-5", "TAM_ANTHROPIC_MODEL"),
            "max_tokens": _extra(int, 400, "TAM_ANTHROPIC_MAX_TOKENS", ge=64, le=8192),
            "model_prices": _extra_factory(
                dict[str, ModelPrice], _default_model_prices, "TAM_MODEL_PRICES"
            ),
        },
    ),
    Provider(
        name="prospeo",
        key_env="PROSPEO_API_KEY",
        default_base_url="https://api.prospeo.io",
        prices={"prospeo_credit_usd": 0.039},  # Starter: $39 / 1,000 credits
        # Search and enrichment are limited separately (30/min vs 300/min on Starter).
        limits={
            "prospeo": LimitConfig(max_in_flight=5, requests_per_interval=30),
            "prospeo_enrich": LimitConfig(max_in_flight=5, requests_per_interval=300),
        },
    ),
    Provider(
        name="hunter",
        key_env="HUNTER_API_KEY",
        default_base_url="https://api.hunter.io",
        prices={"hunter_credit_usd": 0.0245},  # Starter: $49 / 2,000 credits
        limits={"hunter": LimitConfig(max_in_flight=5, requests_per_interval=15, interval_s=1.0)},
    ),
    Provider(
        name="neverbounce",
        key_env="NEVERBOUNCE_API_KEY",
        default_base_url="https://api.neverbounce.com",
        prices={"neverbounce_check_usd": 0.008},  # pay as you go: $8 / 1,000
        limits={"neverbounce": LimitConfig(max_in_flight=10)},
    ),
    Provider(
        name="brightdata",
        key_env="BRIGHTDATA_API_TOKEN",
        default_base_url="https://api.brightdata.com",
        prices={"brightdata_record_usd": 0.0015},  # posts dataset, per record
        limits={"brightdata": LimitConfig(max_in_flight=5)},
        extras={
            "posts_dataset_id": _extra(str, "gd_lyy3tktm25m4avu764", "BRIGHTDATA_POSTS_DATASET_ID"),
            "poll_interval_s": _extra(float, 10.0, "TAM_BRIGHTDATA_POLL_INTERVAL_S", gt=0),
            "snapshot_timeout_s": _extra(float, 1800.0, "TAM_BRIGHTDATA_SNAPSHOT_TIMEOUT_S", gt=0),
        },
    ),
    Provider(
        name="discolike",
        key_env="DISCOLIKE_API_KEY",
        default_base_url="https://api.discolike.com",
        prices={"discolike_query_usd": 0.18, "discolike_record_usd": 0.0035},
        limits={"discolike": LimitConfig(max_in_flight=3)},
    ),
    Provider(
        name="google_places",
        key_env="GOOGLE_PLACES_API_KEY",
        default_base_url="https://places.googleapis.com",
        prices={"google_places_request_usd": 0.035},  # Text Search Enterprise
        limits={"google_places": LimitConfig(max_in_flight=5, requests_per_interval=600)},
    ),
)

PROVIDERS: dict[str, Provider] = {row.name: row for row in _TABLE}
PROVIDER_NAMES: tuple[str, ...] = tuple(PROVIDERS)


def key_env(provider: str) -> str | None:
    """The variable that holds `provider`'s key (None for a name not in the table)."""
    row = PROVIDERS.get(provider)
    return row.key_env if row else None


def default_limits() -> dict[str, LimitConfig]:
    return {account: limit.model_copy() for row in _TABLE for account, limit in row.limits.items()}


def default_prices() -> dict[str, float]:
    return {name: price for row in _TABLE for name, price in row.prices.items()}
