"""Build provider clients from settings (a missing key is a clear job error, not a crash)."""

from __future__ import annotations

from pydantic import SecretStr

from tam.clients.anthropic import ClaudeQualifier
from tam.errors import AuthFailed
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
