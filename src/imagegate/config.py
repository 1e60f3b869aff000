"""Configuration, read once into a typed, immutable object.

Sources, later ones winning: built-in defaults, the TOML file given with ``--config``, then the
command-line flags (host, port, data dir). Secrets are `SecretStr` so they never print.
"""

from __future__ import annotations

import base64
import os
import secrets
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr, ValidationError, field_validator

DEFAULT_DATA_DIR = Path("data")


class ConfigError(Exception):
    """The configuration file is unreadable or invalid; the message says where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Strict):
    """Input caps (DESIGN.md section 9)."""

    max_image_pixels: int = Field(40_000_000, gt=0)
    max_request_pixels: int = Field(160_000_000, gt=0)
    max_file_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_multipart_bytes: int = Field(64 * 1024 * 1024, gt=0)
    max_json_bytes: int = Field(1024 * 1024, gt=0)
    # JSON edits carry their images inline as data URLs, so they get the multipart cap.
    max_json_edit_bytes: int = Field(64 * 1024 * 1024, gt=0)
    # The resource envelope (docs/configuration.md, "Resource envelope"): image memory and image
    # requests in flight, process-wide; what does not fit waits in a FIFO queue, beyond it 503.
    image_memory_bytes: int = Field(1024 * 1024 * 1024, gt=0)
    max_image_requests_in_flight: int = Field(32, gt=0)
    image_queue_length: int = Field(256, ge=0)
    image_queue_wait_seconds: float = Field(60.0, ge=0)
    # Inputs above this many pixels are reduced by an integer factor while they are decoded.
    max_decoded_input_pixels: int = Field(16 * 1024 * 1024, gt=0)
    # Idle this long: give freed heap back to the OS (glibc malloc_trim); 0 turns it off.
    memory_trim_idle_seconds: float = Field(2.0, ge=0)


class SandboxSettings(_Strict):
    """`auto`: on when no real provider has a key; `true`/`false` force it."""

    enabled: Literal["auto"] | bool = "auto"
    # Charge the reference offering's catalog prices instead of 0, to exercise budgets and cost
    # reporting without a paid provider (a demo or test setting; the images are still sandbox images).
    simulate_prices: bool = False


class FileSettings(_Strict):
    ttl_seconds: int = Field(3600, gt=0, le=7 * 24 * 3600)
    signing_key_env: str = "IMAGEGATE_SIGNING_KEY"
    # Expired files are deleted at start and then every `purge_interval_seconds` (in a thread).
    purge_interval_seconds: float = Field(300.0, gt=0)
    # Optional cap on the stored files' total size: over it, the oldest files go first (links break early).
    max_bytes: int | None = Field(None, gt=0)


class ServerSettings(_Strict):
    """The HTTP server edge: which proxies to believe, slow clients, connection cap, shutdown."""

    # Peers whose X-Forwarded-For / Forwarded headers are believed; empty: those headers are ignored.
    trusted_proxies: tuple[IPvAnyNetwork, ...] = ()
    proxy_header: Literal["x-forwarded-for", "forwarded"] = "x-forwarded-for"
    header_timeout_seconds: float = Field(10.0, gt=0)
    body_idle_timeout_seconds: float = Field(30.0, gt=0)
    # Average upload rate a request body must keep after the grace period (0: no minimum).
    min_upload_bytes_per_second: int = Field(8192, ge=0)
    min_upload_grace_seconds: float = Field(10.0, ge=0)
    max_connections: int = Field(512, gt=0)
    keep_alive_seconds: int = Field(5, gt=0)
    shutdown_grace_seconds: int = Field(30, ge=0)
    # On SIGTERM: answer /readyz 503 "draining" (and keep serving) this long before closing the
    # listener, so a load balancer takes the instance out first; then the grace above applies.
    drain_delay_seconds: float = Field(0.0, ge=0, le=600)


class CatalogSettings(_Strict):
    paths: tuple[Path, ...] = ()
    # {"gpt-image-1": {"openai": "active"}}
    status: dict[str, dict[str, Literal["active", "deprecated", "retired"]]] = Field(default_factory=dict)


class StorageSettings(_Strict):
    """`[storage]`: where result images live (imagegate.storage.blobs.open_store).

    `url`: ``file://<dir>`` (relative to the working directory), ``s3://bucket/prefix`` or
    ``az://container/prefix`` (Azure Blob); unset means ``<data_dir>/files``. `endpoint_url` is an
    S3-compatible server (Google Cloud Storage's S3 interoperability endpoint included) or an Azure
    blob endpoint; `region` is S3's. Credentials come from the usual environment variables
    (``AWS_*``; ``AZURE_STORAGE_ACCOUNT_NAME`` / ``AZURE_STORAGE_ACCOUNT_KEY`` or a SAS). `presign`:
    file links redirect to presigned object-store URLs instead of streaming through the gateway
    (never for SVG).
    """

    url: str | None = None
    endpoint_url: str | None = None
    presign: bool = False
    region: str | None = None

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("gs://"):
            raise ValueError(
                "gs:// is not supported: use Google Cloud Storage through its S3 interoperability API, "
                'url = "s3://bucket/prefix" with endpoint_url = "https://storage.googleapis.com" and an HMAC key'
            )
        if value is not None and not value.startswith(("file://", "s3://", "az://")):
            raise ValueError('must be a file://, s3:// or az:// URL (e.g. "s3://bucket/prefix")')
        return value


class InputsSettings(_Strict):
    """`[inputs]`: image URLs (`image_url` with http/https) that the gateway fetches itself
    (imagegate.netfetch): private, loopback, link-local and metadata addresses are refused unless
    allowed here (metadata never); hosts may be listed ("*.example.com" matches subdomains)."""

    allow_private: bool = False  # RFC 1918, CGNAT, unique-local: for on-premises sources
    allow_loopback: bool = False  # 127/8 and ::1 (local test servers)
    allow_hosts: tuple[str, ...] = ()  # when set, only these hosts
    deny_hosts: tuple[str, ...] = ()
    allowed_ports: tuple[int, ...] = (80, 443)
    fetch_timeout_seconds: float = Field(20.0, gt=0, le=300)


class JobsSettings(_Strict):
    """`[jobs]`: async requests (``Prefer: respond-async``) run by every instance's job workers.

    A worker holds a job under a lease it renews every `lease_seconds / 3`; a job whose lease
    ran out (its instance died) is taken by another worker, at most `max_attempts` times in all.
    Each instance looks for claimable jobs and due webhooks with one read every
    `poll_interval_seconds`, backing off to 8 times that while idle; a job accepted here is taken at
    once, and an instance never writes while it has nothing to do.
    """

    workers: int = Field(4, ge=0, le=256)  # 0: this instance accepts jobs but runs none
    lease_seconds: float = Field(30.0, ge=1, le=3600)
    poll_interval_seconds: float = Field(1.0, gt=0, le=60)
    max_attempts: int = Field(3, ge=1, le=20)
    retention_seconds: int = Field(7 * 24 * 3600, gt=0)  # finished jobs are readable this long


class WebhookSettings(_Strict):
    """`[webhooks]`: signed notifications when a job finishes (Standard Webhooks).

    `secret_env` names the variable holding the signing secret (``whsec_`` + base64); unset, a
    secret is generated once into ``<data_dir>/webhook.secret``. Delivery is retried after each
    of `retry_delays_seconds` in turn, then given up. Webhook URLs pass the `[inputs]` URL policy.
    """

    secret_env: str = "IMAGEGATE_WEBHOOK_SECRET"
    retry_delays_seconds: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0, 1800.0)
    timeout_seconds: float = Field(10.0, gt=0, le=120)


class ProviderSettings(_Strict):
    """What every `[providers.NAME]` table may hold. A provider kind (`imagegate.providers.kinds`)
    validates its tables with this model or a subclass that adds its own fields (fal's queue, an
    OpenAI-compatible host's model map), so unknown keys are still refused, per kind. Unset fields
    take the kind's defaults (e.g. OpenAI: api_key_env OPENAI_API_KEY, base_url api.openai.com/v1)."""

    kind: str | None = None
    enabled: bool = True
    api_key_env: str | None = None
    api_key: SecretStr | None = None
    base_url: str | None = None
    timeout_seconds: float = Field(300.0, gt=0)  # long generations (gpt-image high, 4K) take minutes
    connect_timeout_seconds: float = Field(10.0, gt=0)
    max_connections: int = Field(256, gt=0)
    max_result_bytes: int = Field(64 * 1024 * 1024, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    def key(self, default_env: str) -> str | None:
        """The API key: `api_key` if set, else the environment variable (never logged)."""
        if self.api_key is not None:
            return self.api_key.get_secret_value() or None
        return os.environ.get(self.api_key_env or default_env) or None


def http_url(value: str | None) -> str | None:
    """An http(s) URL without its trailing slash (ValueError otherwise); None stays None."""
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


class RouteEntry(_Strict):
    provider: str
    priority: int = 0
    weight: float = Field(1.0, gt=0)


class ModelRouting(_Strict):
    strategy: Literal["priority", "cheapest", "fastest"] | None = None
    providers: tuple[RouteEntry, ...] = ()


class RoutingSettings(_Strict):
    """Retries, failover and circuit breaking (DESIGN.md section 6)."""

    strategy: Literal["priority", "cheapest", "fastest"] = "priority"
    attempts_per_provider: int = Field(2, ge=1, le=10)
    max_attempts: int = Field(4, ge=1, le=20)
    backoff_base_seconds: float = Field(0.1, ge=0)
    backoff_max_seconds: float = Field(2.0, ge=0)
    breaker_failures: int = Field(5, ge=1)
    breaker_window_seconds: float = Field(30.0, gt=0)
    breaker_cooldown_seconds: float = Field(30.0, gt=0)
    models: dict[str, ModelRouting] = Field(default_factory=dict)


class PlaygroundSettings(_Strict):
    """The /playground page. Without an API key it uses anonymous quotas (images per UTC day)."""

    enabled: bool = True
    anonymous_images_per_ip_per_day: int = Field(25, ge=0)
    anonymous_images_per_day: int = Field(500, ge=0)
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0)


class AuthSettings(_Strict):
    """`open`: no key needed; a bearer token that is an imagegate key (``igk_...``) is still checked
    (unknown or revoked: 401) and accounted to that key, any other token (SDKs insist on one) is
    anonymous. `keys`: every /v1 call and /metrics needs `Authorization: Bearer <key>`. The pepper
    is the HMAC key for stored key hashes."""

    mode: Literal["open", "keys"] = "open"
    pepper_env: str = "IMAGEGATE_KEY_PEPPER"


class Settings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    data_dir: Path = DEFAULT_DATA_DIR
    default_model: str = "gpt-image-1"
    default_response_format: Literal["url", "b64_json"] = "url"
    public_url: str | None = None
    signing_key: SecretStr | None = None
    limits: Limits = Field(default_factory=Limits)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    files: FileSettings = Field(default_factory=FileSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    inputs: InputsSettings = Field(default_factory=InputsSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    catalog: CatalogSettings = Field(default_factory=CatalogSettings)
    request_timeout_seconds: float = Field(300.0, gt=0)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    database_url: str | None = None
    redis_url: str | None = None
    auth: AuthSettings = Field(default_factory=AuthSettings)
    playground: PlaygroundSettings = Field(default_factory=PlaygroundSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    instance_id: str | None = None

    def resolved_database_url(self) -> str:
        """SQLAlchemy async URL: the configured one with its driver filled in, else SQLite in the data dir."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'imagegate.db').resolve()}"
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    def resolved_pepper(self) -> bytes:
        """The HMAC key for API key hashes: env, else a random one kept in the data dir (0600)."""
        return _secret_file(self, self.auth.pepper_env, "pepper.key")

    def provider(self, name: str) -> ProviderSettings:
        """The `[providers.NAME]` table, as its kind's settings model; the defaults when there is none."""
        table = self.providers.get(name)
        if table is not None:
            return table
        from imagegate.providers.kinds import kinds

        kind = kinds().get(name)
        return kind.settings_model() if kind is not None else ProviderSettings()

    @field_validator("providers", mode="before")
    @classmethod
    def _typed_providers(cls, value: Any) -> Any:
        """Each table validated by its kind's own settings model (see imagegate.providers.kinds)."""
        if not isinstance(value, dict):
            return value
        from imagegate.providers.kinds import validate_table

        return {name: validate_table(str(name), table) for name, table in value.items()}

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    def status_overrides(self) -> dict[tuple[str, str], str]:
        return {
            (model, provider): status
            for model, table in self.catalog.status.items()
            for provider, status in table.items()
        }

    def resolved_signing_key(self) -> bytes:
        """The HMAC key for file links: config, then env, then a key kept in the data dir."""
        if self.signing_key is not None:
            return self.signing_key.get_secret_value().encode()
        return _secret_file(self, self.files.signing_key_env, "signing.key")


def resolved_webhook_secret(settings: Settings) -> str:
    """The Standard Webhooks secret (``whsec_`` + base64): env, else one kept in the data dir."""
    from_env = os.environ.get(settings.webhooks.secret_env)
    if from_env:
        return from_env.strip()
    path = settings.data_dir / "webhook.secret"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secret + "\n")
    return path.read_text().strip()


def _secret_file(settings: Settings, env_name: str, file_name: str) -> bytes:
    from_env = os.environ.get(env_name)
    if from_env:
        return from_env.encode()
    path = settings.data_dir / file_name
    if path.exists():
        return path.read_bytes().strip()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def load_settings(
    config_file: Path | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    data_dir: Path | None = None,
) -> Settings:
    data: dict[str, object] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_file}: invalid TOML: {exc}") from None
    overrides = {"host": host, "port": port, "data_dir": data_dir}
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        where = f"{config_file}: " if config_file else ""
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{where}invalid configuration: {problems}") from None
