"""The documented environment is the one Settings reads, and the provider table is the one
source of every provider's variables (README, prefect.yaml, emulators, job-row hints)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from tam.emulators.server import EMULATOR_KEY, env_for
from tam.errors import AuthFailed
from tam.failures import describe_failure
from tam.providers import PROVIDERS, ProviderSettings
from tam.settings import Settings, secret_env_names

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PREFECT_YAML = ROOT / "prefect.yaml"
# Documented, but read by something other than Settings.
NOT_SETTINGS = {
    "PREFECT_API_URL": "Prefect's own client",
    "TAM_ENV_FILE": "read once at import, to choose the file Settings reads",
}
BLOCK_SUFFIX = "_BLOCK"


def readme_rows() -> list[list[str]]:
    """The configuration table's rows: each row's backticked variable names."""
    text = README.read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            rows.append(re.findall(r"`([^`]+)`", first_cell))
    return rows


def documented() -> set[str]:
    names = {n for row in readme_rows() for n in row}
    # "`TAM_LIMITS__<PROVIDER>__MAX_IN_FLIGHT` etc." documents a pattern, checked below.
    return {n for n in names if re.fullmatch(r"[A-Z][A-Z0-9_]*", n)}


def readers() -> dict[str, tuple[Any, Any]]:
    """Variable → (its field's annotation and default, a getter on Settings)."""
    out: dict[str, tuple[Any, Any]] = {}
    for name, field in Settings.model_fields.items():
        if isinstance(field.validation_alias, str):
            out[field.validation_alias] = (field, lambda s, n=name: getattr(s, n))
    for row in PROVIDERS.values():
        for name, field in row.settings_class.model_fields.items():
            if not isinstance(field.validation_alias, str):
                continue
            out[field.validation_alias] = (
                field,
                lambda s, p=row.name, n=name: getattr(s.provider(p), n),
            )
    return out


SPECIAL = {
    "TAM_DATABASE_URL": "postgresql://user:pw-123456@db.example/tam",
    "TAM_LIMITER_BACKEND": "prefect",
    "TAM_LIMITS": json.dumps({"hunter": {"max_in_flight": 2}}),
    "TAM_MODEL_PRICES": json.dumps({"m": {"input_per_mtok": 1.5, "output_per_mtok": 2.5}}),
    "TAM_PROVIDER_PRICES": json.dumps({"hunter_credit_usd": 0.5}),
    "TAM_WEBHOOK_DOCS": "true",
    "TAM_DATA_DIR": "/tmp/tam-settings-test",
}


def sample(env: str, field: Any) -> str:
    """A valid value for `env` that differs from its default."""
    if env in SPECIAL:
        return SPECIAL[env]
    default = field.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return str(not default).lower()
    if isinstance(default, int | float) and not isinstance(default, bool):
        le = [getattr(m, "le", None) for m in field.metadata]
        bound = next((b for b in le if b is not None), None)
        value = default - 1 if bound is not None and default >= bound else default + 1
        return str(value)
    if "URL" in env:
        return f"https://{env.lower()}.example.test"
    return f"value-of-{env.lower()}-123456"


def plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    return value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for env in readers():
        monkeypatch.delenv(env, raising=False)
    return monkeypatch


def test_every_documented_variable_is_read(clean_env: pytest.MonkeyPatch) -> None:
    known = readers()
    missing = documented() - set(known) - set(NOT_SETTINGS)
    assert not missing, f"README documents variables Settings does not read: {sorted(missing)}"
    defaults = Settings()
    values = {env: sample(env, known[env][0]) for env in documented() if env in known}
    for env, value in values.items():
        clean_env.setenv(env, value)
    settings = Settings()
    for env, value in values.items():
        got, default = known[env][1](settings), known[env][1](defaults)
        assert got != default, f"{env}={value!r} left the default {default!r}"
        if env not in SPECIAL:
            expected: Any = value
            if isinstance(plain(got), bool | int | float):
                expected = type(plain(got))(json.loads(value))
            assert plain(got) == expected, env
    assert settings.provider("hunter").limits["hunter"].max_in_flight == 2
    assert settings.provider("hunter").prices == {"hunter_credit_usd": 0.5}
    assert settings.provider("anthropic").extra("model_prices")["m"].output_per_mtok == 2.5


def test_every_setting_is_read_by_its_alias_alone() -> None:
    for model in (Settings, *(row.settings_class for row in PROVIDERS.values())):
        for name, field in model.model_fields.items():
            assert isinstance(field.validation_alias, str), f"{model.__name__}.{name}"


def test_the_nested_limits_pattern_is_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("TAM_LIMITS__HUNTER__MAX_IN_FLIGHT", "3")
    settings = Settings()
    assert settings.limit_for("hunter").max_in_flight == 3
    # The other providers keep their defaults.
    assert settings.limit_for("prospeo_enrich").requests_per_interval == 300


def test_undocumented_unprefixed_names_are_not_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WRITE_BATCH_SIZE", "7")
    clean_env.setenv("DATABASE_URL", "postgresql://elsewhere/db")
    clean_env.setenv("ANTHROPIC_MODEL", "not-read")
    settings = Settings()
    assert settings.write_batch_size == 100
    assert settings.database_url.startswith("sqlite")
    assert settings.provider("anthropic").extra("model") == "claude-haiku-4-5"
    clean_env.setenv("TAM_WRITE_BATCH_SIZE", "7")
    assert Settings().write_batch_size == 7
    assert Settings(write_batch_size=9).write_batch_size == 9  # init by field name


def test_readme_documents_exactly_the_provider_table() -> None:
    table = set()
    for row in PROVIDERS.values():
        table |= {row.key_env, row.base_url_env}
        for field in row.settings_class.model_fields.values():
            if isinstance(field.validation_alias, str):
                table.add(field.validation_alias)
    for price in Settings.model_fields["provider_prices"].get_default(call_default_factory=True):
        assert price in README.read_text(), f"README does not name the price field {price}"
    provider_vars = {
        n for n in documented() if any(n.startswith(p.upper()) for p in PROVIDERS) or n in table
    }
    assert provider_vars == table
    # One row per provider names its key and base URL variables, and the default base URL.
    text = README.read_text()
    for row in PROVIDERS.values():
        line = next(ln for ln in text.splitlines() if ln.startswith(f"| `{row.key_env}`"))
        assert f"`{row.base_url_env}`" in line and f"`{row.default_base_url}`" in line, line


def test_prefect_yaml_names_every_provider_key_block() -> None:
    config = yaml.safe_load(PREFECT_YAML.read_text())
    named: set[str] = set()
    for deployment in config["deployments"]:
        env = deployment["work_pool"]["job_variables"].get("env") or {}
        named |= {n.removesuffix(BLOCK_SUFFIX) for n in env if n.endswith(BLOCK_SUFFIX)}
    keys = {row.key_env for row in PROVIDERS.values()}
    assert keys <= named, f"no deployment reads {sorted(keys - named)} from a Secret block"
    assert named <= set(secret_env_names())


def test_everything_derives_from_the_table() -> None:
    env = env_for("http://emulators.test/")
    for row in PROVIDERS.values():
        assert env[row.base_url_env] == f"http://emulators.test{row.emulator_path}"
        assert env[row.key_env] == EMULATOR_KEY
        assert row.key_env in secret_env_names()
        message = describe_failure(AuthFailed("bad key", provider=row.name))
        assert message.endswith(f"Check {row.key_env}.")
        assert isinstance(Settings().provider(row.name), ProviderSettings)
    assert len(env) == 2 * len(PROVIDERS)


def test_a_missing_key_names_its_variable(clean_env: pytest.MonkeyPatch) -> None:
    from tam.clients.anthropic import ClaudeQualifier
    from tam.clients.brightdata import BrightDataClient
    from tam.clients.discolike import DiscolikeClient
    from tam.clients.google_places import GooglePlacesClient
    from tam.clients.hunter import HunterClient
    from tam.clients.neverbounce import NeverBounceClient
    from tam.clients.prospeo import ProspeoClient

    clients = [
        ClaudeQualifier,
        BrightDataClient,
        DiscolikeClient,
        GooglePlacesClient,
        HunterClient,
        NeverBounceClient,
        ProspeoClient,
    ]
    assert {c.provider for c in clients} == set(PROVIDERS)
    settings = Settings()
    for client in clients:
        with pytest.raises(AuthFailed) as caught:
            client.from_settings(settings)
        assert PROVIDERS[caught.value.provider].key_env in str(caught.value)


def test_prices_are_checked() -> None:
    with pytest.raises(ValidationError, match="unknown price fields"):
        Settings(provider_prices={"hunter_credits_usd": 1.0})
    with pytest.raises(ValidationError, match=">= 0"):
        Settings(provider_prices={"hunter_credit_usd": -1.0})
