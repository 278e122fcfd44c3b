"""What every httpx-based provider client shares: HTTP plumbing, usage, close, from_settings,
and the one status → error hook every request goes through."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self

import httpx

from tam.clients._http import ProviderHTTP, check_status
from tam.errors import ProviderError
from tam.models import Usage
from tam.providers import PROVIDERS

if TYPE_CHECKING:
    from tam.providers import ProviderSettings
    from tam.settings import Settings


class ProviderClient:
    """One provider's client. A subclass names its `provider` (a row of `tam.providers`),
    says how its key travels (`auth`), overrides `map_status` for its real quirks, and
    `settings_arguments` for its prices and extras.

    One call per method; retries live in `tam.clients._retry`. `usage` accumulates
    credits and cost across calls; `calls` counts requests made.
    """

    provider: ClassVar[str]

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        headers, params = self.auth(api_key)
        self._http = ProviderHTTP(
            secret=api_key,
            provider=self.provider,
            base_url=base_url or PROVIDERS[self.provider].default_base_url,
            headers=headers,
            params=params,
            timeout=timeout,
            http_client=http_client,
        )
        self.usage = Usage.zero(self.provider)
        self.calls = 0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Self:
        """This provider's client from its settings block; a missing key raises AuthFailed
        naming the variable to set. `overrides` (say an `http_client`) win."""
        block = settings.provider(cls.provider)
        arguments: dict[str, Any] = {
            "api_key": block.require_key(),
            "base_url": block.base_url,
            "timeout": settings.http_timeout_s,
            **cls.settings_arguments(block),
        }
        arguments.update(overrides)
        return cls(**arguments)

    @classmethod
    def settings_arguments(cls, block: ProviderSettings) -> dict[str, Any]:  # noqa: ARG003
        """Constructor arguments from the block besides key, base URL and timeout."""
        return {}

    def auth(self, api_key: str) -> tuple[Mapping[str, str], Mapping[str, str]]:
        """(headers, query parameters) that carry the key on every request."""
        raise NotImplementedError

    def map_status(self, response: httpx.Response) -> ProviderError | None:
        """The status → error hook of every request: None for an answer to read."""
        return check_status(self.provider, response)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json_body: Any = None,
    ) -> httpx.Response:
        self.calls += 1
        return await self._http.request(
            method, path, params=params, json_body=json_body, check=self.map_status
        )

    def _charge(self, credits: float, cost_usd: float) -> None:
        self.usage.credits += credits
        self.usage.cost_usd += cost_usd

    async def close(self) -> None:
        await self._http.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
