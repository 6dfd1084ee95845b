"""Settings: `TOLLGATE_*` environment variables, or a TOML file named by `TOLLGATE_CONFIG`.

Names follow SPEC §2. Environment variables win over the TOML file, which wins over defaults.
`get_settings()` is called only by `create_app`, the worker's start-up and the CLI; everything
else receives plain values.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROVIDER_NAMES = ("openai", "anthropic", "gemini", "deepseek")


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    name: str
    api_key: str | None
    base_url: str


class UpstreamAccount(BaseModel):
    """One account of the operator's pool: `[[upstreams.openai]]` in the TOML config."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: SecretStr
    name: str | None = None  # shown in usage events and traces; never the key
    base_url: str | None = None  # the provider's TOLLGATE_*_BASE_URL when unset
    weight: int = Field(default=1, ge=0, le=1000)
    rpm: int | None = Field(default=None, ge=1)  # requests per minute this account may take
    tpm: int | None = Field(default=None, ge=1)  # tokens per minute (counted as answers settle)
    capabilities: list[str] = Field(default_factory=list)  # e.g. "audio", "responses"


@dataclass(frozen=True, slots=True)
class AccountSettings:
    provider: str
    name: str
    api_key: str
    base_url: str
    weight: int = 1
    rpm: int | None = None
    tpm: int | None = None
    capabilities: frozenset[str] = frozenset()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOLLGATE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    data_dir: Path = Path(".tollgate")
    database_url: str | None = None
    # PostgreSQL connections per process: kept open, and opened beyond them under load. Every
    # API process and worker has its own pool: keep their sum under the server's connections.
    database_pool_size: int = Field(default=10, ge=1, le=1000)
    database_max_overflow: int = Field(default=20, ge=0, le=1000)
    redis_url: str | None = None
    qdrant_url: str | None = None
    secret_key: SecretStr | None = None
    admin_token: SecretStr | None = None

    openai_api_key: SecretStr | None = None
    openai_base_url: str = "https://api.openai.com/v1"
    anthropic_api_key: SecretStr | None = None
    anthropic_base_url: str = "https://api.anthropic.com"
    gemini_api_key: SecretStr | None = None
    gemini_base_url: str = "https://generativelanguage.googleapis.com"
    deepseek_api_key: SecretStr | None = None
    deepseek_base_url: str = "https://api.deepseek.com"

    allow_private_webhooks: bool = False

    # The dashboard (SPEC §5.13): how long a sign-in lasts, and whether its cookie is `Secure`
    # (sent over HTTPS only; browsers also send it to http://localhost). Keep it on behind a
    # TLS-terminating proxy too (browsers speak HTTPS to it); turn it off only to reach the
    # dashboard over plain HTTP on a host other than localhost.
    dashboard_session_minutes: int = Field(default=480, ge=5, le=7 * 24 * 60)
    dashboard_secure_cookie: bool = True

    # Budget alerts by email (SPEC §7): the operator's SMTP server. Unset host: no email is sent.
    # TLS: "starttls" (upgrade after connecting, port 587), "tls" (implicit, port 465) or "none".
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_tls: Literal["starttls", "tls", "none"] = "starttls"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None  # required with smtp_host, e.g. "Tollgate <alerts@example.com>"

    # Stripe (SPEC §5.8): each tenant's own account, reached through this API base. Tests point
    # it at a local fake; nothing else should change it.
    stripe_api_base: str = "https://api.stripe.com"
    stripe_max_network_retries: int = Field(default=2, ge=0, le=10)
    stripe_timeout_seconds: float = Field(default=30.0, gt=0)
    # Search (SPEC §5.6; api/search/runtime.py): the sentence-transformers model (a path, or a
    # name in the local Hugging Face cache; the bundled all-MiniLM-L6-v2 when unset), the Qdrant
    # server's API key, and a switch that turns indexing and `POST /v1/search` off.
    embedding_model: str | None = None
    qdrant_api_key: SecretStr | None = None
    search_enabled: bool = True

    # Upstream HTTP client: connect, gap between bytes read, and a whole non-streaming call.
    upstream_connect_timeout_seconds: float = Field(default=10.0, gt=0)
    upstream_read_timeout_seconds: float = Field(default=300.0, gt=0)
    upstream_total_timeout_seconds: float = Field(default=900.0, gt=0)
    upstream_max_connections: int = Field(default=512, ge=1)
    # To any one host (default: half the above), so a tenant's slow host leaves room for others.
    upstream_max_connections_per_origin: int | None = Field(default=None, ge=1)

    # Upstream pools (TOML `[[upstreams.<provider>]]`), beside the TOLLGATE_*_API_KEY account.
    upstreams: dict[str, list[UpstreamAccount]] = Field(default_factory=dict)
    # Retries (429, 5xx, 529, timeouts, connection errors): attempts per request over every
    # account, exponential backoff with full jitter, and a bound on the time spent retrying.
    retry_max_attempts: int = Field(default=4, ge=1, le=20)
    retry_base_delay_seconds: float = Field(default=0.25, ge=0)
    retry_max_delay_seconds: float = Field(default=8.0, ge=0)
    retry_max_total_seconds: float = Field(default=20.0, ge=0)
    # An account that answered 429 without a retry hint cools down this long.
    cooldown_seconds: float = Field(default=20.0, ge=0)
    # When every eligible account cools down: how long a request may wait, and how many may.
    capacity_wait_seconds: float = Field(default=5.0, ge=0)
    capacity_queue_size: int = Field(default=200, ge=0)
    # Sticky sessions: how long a session remembers its account.
    sticky_session_seconds: float = Field(default=3600.0, gt=0)
    # Tenants' own provider keys (BYOK) are cached in memory this long per process.
    byok_cache_seconds: float = Field(default=30.0, ge=0)

    # The model catalog from TOML: [models."<id>"] provider/input/cached_input/output/…
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)

    # Top-level fields of a proxied request that Tollgate does not know what they cost
    # (docs/decisions/0002-unknown-request-fields.md): dropped and named in X-Tollgate-Warning,
    # passed to the same-family upstream, or refused with 400.
    unknown_fields: Literal["drop", "pass", "refuse"] = "drop"
    # An async job's run is cut off after this long (and a job left running past it by a
    # worker that died is run again). Longer than a model call can take (the pipeline ends
    # and bills its own calls), checked below.
    job_timeout_seconds: float = Field(default=3600.0, ge=2, le=86_400)
    # Stored responses (`/v1/responses` with `store`, the default) are kept this long.
    response_retention_days: int = Field(default=30, ge=1, le=3650)
    # Request traces (`GET /v1/traces/{id}`) are kept this long; request-log rows (`/v1/logs`)
    # this long when set, else for ever. Usage rollups (reports, caps) are never deleted.
    trace_retention_days: int = Field(default=30, ge=1, le=3650)
    log_retention_days: int | None = Field(default=None, ge=1, le=36500)
    # Request traces also go out as OpenTelemetry spans over OTLP/HTTP to this endpoint (else
    # the standard OTEL_EXPORTER_OTLP_ENDPOINT); unset: off, and the SDK is never imported.
    otel_exporter_otlp_endpoint: str | None = None
    # A running job's row is touched this often; three missed beats and it is run again.
    job_heartbeat_seconds: float = Field(default=10.0, gt=0, le=600)

    # Requests larger than this are refused with 413 before they are parsed.
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Slow and hostile clients (`api/kit/connections.py`): a request's line and headers must
    # arrive within `header_timeout_seconds` of the connection (or of its previous response);
    # its body may pause at most `body_timeout_seconds`; a response the client does not read for
    # `client_write_timeout_seconds` is cut off.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    client_write_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    # The largest audio file `/v1/audio/transcriptions` and `/translations` take (OpenAI's
    # own limit); one whose duration cannot be read is reserved as this many bytes at the
    # lowest bitrate (`api/gateway/dialects/openai/audio.py`).
    audio_max_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    log_level: str = "info"

    # With Redis, the API process also runs what `tollgate worker` runs continuously (the usage
    # ledger drain, the alert resend sweep). Turn it off where workers run (docker-compose does).
    api_runs_background_jobs: bool = True

    @model_validator(mode="after")
    def _jobs_outlast_calls(self) -> Settings:
        bound = self.upstream_total_timeout_seconds + self.capacity_wait_seconds
        if self.job_timeout_seconds <= bound:
            raise ValueError(
                f"job_timeout_seconds ({self.job_timeout_seconds:g}) must exceed "
                f"upstream_total_timeout_seconds + capacity_wait_seconds ({bound:g}): a job "
                "must never cut off a model call the upstream bills"
            )
        return self

    @model_validator(mode="after")
    def _smtp_has_a_sender(self) -> Settings:
        if self.smtp_host and not self.smtp_from:
            raise ValueError("smtp_from (TOLLGATE_SMTP_FROM) is required when smtp_host is set")
        return self

    @field_validator("upstreams")
    @classmethod
    def _known_providers(
        cls, value: dict[str, list[UpstreamAccount]]
    ) -> dict[str, list[UpstreamAccount]]:
        unknown = set(value) - set(PROVIDER_NAMES)
        if unknown:
            raise ValueError(
                f"upstreams: unknown provider {sorted(unknown)[0]!r}; "
                f"use one of {', '.join(PROVIDER_NAMES)}"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003 - fixed hook signature
        file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_path = os.environ.get("TOLLGATE_CONFIG")
        if config_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_path)))
        return tuple(sources)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tollgate.db').resolve()}"

    @property
    def upstream_pools(self) -> dict[str, list[AccountSettings]]:
        """Every operator account per provider: the environment's first, then the TOML pool."""
        providers = self.providers
        pools: dict[str, list[AccountSettings]] = {}
        for name in PROVIDER_NAMES:
            single = providers[name]
            accounts = []
            if single.api_key:
                accounts.append(AccountSettings(name, f"{name}-default", single.api_key,
                                                single.base_url))  # fmt: skip
            for index, item in enumerate(self.upstreams.get(name, [])):
                accounts.append(
                    AccountSettings(
                        provider=name,
                        name=item.name or f"{name}-{index + 1}",
                        api_key=item.api_key.get_secret_value(),
                        base_url=(item.base_url or single.base_url).rstrip("/"),
                        weight=item.weight,
                        rpm=item.rpm,
                        tpm=item.tpm,
                        capabilities=frozenset(item.capabilities),
                    )
                )
            pools[name] = accounts
        return pools

    @property
    def providers(self) -> dict[str, ProviderSettings]:
        out: dict[str, ProviderSettings] = {}
        for name in PROVIDER_NAMES:
            key: SecretStr | None = getattr(self, f"{name}_api_key")
            out[name] = ProviderSettings(
                name=name,
                api_key=key.get_secret_value() if key else None,
                base_url=getattr(self, f"{name}_base_url").rstrip("/"),
            )
        return out


class ConfigurationError(Exception):
    """A setting is missing or wrong; the CLI prints it as one line."""


def _write_private_file(path: Path, content: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(content)


def resolve_secret_key(settings: Settings) -> str:
    """Return the secret key, generating one into the data dir for the embedded default.

    A shared database needs the same key on every process, so with `TOLLGATE_DATABASE_URL`
    set the key must be given explicitly.
    """
    if settings.secret_key is not None:
        value = settings.secret_key.get_secret_value()
        if len(value) < 32:
            raise ConfigurationError("TOLLGATE_SECRET_KEY must be at least 32 characters")
        return value
    if settings.database_url:
        raise ConfigurationError(
            "TOLLGATE_SECRET_KEY is required when TOLLGATE_DATABASE_URL is set"
        )
    import secrets

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    path = settings.data_dir / "secret_key"
    with contextlib.suppress(FileExistsError):  # another process won the race: use its key
        _write_private_file(path, secrets.token_urlsafe(48))
    return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
