"""Settings: one pydantic-settings class, read from ENCORE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TrainingEngineName = Literal["implicit", "spark"]
"""Engines that train recommendation models: implicit in-process, or Spark MLlib."""


class SettingsError(Exception):
    """Raised with a human-readable message when the settings cannot be used."""


class Settings(BaseSettings):
    """Everything Encore can be configured with; each field is an ENCORE_<NAME> variable."""

    model_config = SettingsConfigDict(
        env_prefix="ENCORE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    host: str = Field("127.0.0.1", description="Interface `encore serve` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port `encore serve` listens on.")
    http_server: Literal["uvicorn", "granian"] = Field(
        "uvicorn",
        description=(
            "The HTTP server `encore serve` runs: uvicorn, or granian (Rust), which also sends "
            "large media files by path without copying them through Python (the ASGI "
            "`http.response.pathsend` extension); uvicorn streams those in chunks."
        ),
    )
    public_url: str = Field(
        "http://127.0.0.1:8000",
        description="Base URL clients reach Encore at; used to build absolute links.",
    )
    database_url: str = Field(
        "sqlite+aiosqlite:///./var/encore.db",
        description=(
            "SQLAlchemy async URL: `sqlite+aiosqlite:///path` (embedded) or "
            "`postgresql+asyncpg://user:pass@host/db` (scale-out)."
        ),
    )
    database_pool_size: int = Field(
        10, ge=1, le=500, description="Connections kept open per process (PostgreSQL only)."
    )
    database_echo: bool = Field(False, description="Log every SQL statement (debugging only).")
    migrate_on_start: bool = Field(
        True, description="Apply pending Alembic migrations when `encore serve` starts."
    )
    storage_url: str = Field(
        "file://./var/media",
        description=(
            "Blob store for audio, artwork and models: `file://DIR`, `memory://` or "
            "`s3://BUCKET[/PREFIX]`."
        ),
    )
    s3_endpoint: str | None = Field(
        None,
        description="S3 endpoint URL for non-AWS stores (SeaweedFS, MinIO, R2); empty for AWS.",
    )
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_access_key_id: str | None = Field(None, description="S3 access key id.")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret access key.")
    s3_allow_http: bool = Field(
        False, description="Allow a plain-HTTP S3 endpoint (loopback test servers only)."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Minimum level of log lines written."
    )
    log_format: Literal["json", "console"] = Field(
        "json", description="`json` for machines (default), `console` for a human at a terminal."
    )
    catalog_cache_entries: int = Field(
        20_000,
        ge=0,
        le=1_000_000,
        description="Rendered album documents kept in memory per process; 0 turns the cache off.",
    )
    catalog_cache_revalidate_seconds: float = Field(
        1.0,
        ge=0,
        le=3600,
        description=(
            "How often a process checks the catalog revision in the database (in the "
            "background; 0: before every request); cached documents are at most this much, plus "
            "one database read, older than a change made by another process."
        ),
    )
    secret_key: SecretStr | None = Field(
        None,
        description=(
            "Server master key, base64url of at least 32 random bytes. It encrypts the token "
            "signing keys and app passwords at rest and signs login-form tokens. Every process "
            "of one deployment needs the same key. When unset, the key is read from "
            "`secret_key_file`, which is created on first start."
        ),
    )
    secret_key_file: str = Field(
        "./var/secret.key",
        description=(
            "File holding the master key when `secret_key` is unset; created (mode 0600) with a "
            "fresh random key on first start. A file that exists but holds no valid key stops "
            "start-up."
        ),
    )
    media_signing_keys: dict[str, SecretStr] = Field(
        default_factory=dict,
        description=(
            "Keys that sign media URLs, by key id (JSON object of id → base64url secret of 32+ "
            "bytes). The nginx edge needs the same keys. Empty: one key `k0` derived from the "
            "master key. Keep an old key listed while URLs it signed may still be in use."
        ),
    )
    media_signing_key_id: str | None = Field(
        None, description="Which of `media_signing_keys` signs new URLs (the only one if unset)."
    )
    media_url_lifetime_seconds: int = Field(
        6 * 3600,
        ge=60,
        le=7 * 86_400,
        description=(
            "How long a signed media URL works: a whole listen with seeking. Players ask "
            "`/playback` again for fresh URLs after that."
        ),
    )
    media_redirect_to_store: bool = Field(
        False,
        description=(
            "For s3:// stores: answer a valid media request with a 302 to a short-lived "
            "presigned store URL, so the store (or its CDN) sends the bytes, not Encore."
        ),
    )
    media_memory_cache_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        le=16 * 1024**3,
        description=(
            "Bytes of small media files (playlists, init sections, segments) kept in memory "
            "by the process that serves them, so the hottest segments cost no file reads. "
            "Every hit still checks the file on disk. 0: read every request from disk."
        ),
    )
    registration_open: bool = Field(
        True, description="Whether anyone may create an account with `POST /v1/users`."
    )
    access_token_minutes: int = Field(
        15, ge=1, le=60, description="Lifetime of an access token (a signed JWT)."
    )
    refresh_token_days: int = Field(
        30, ge=1, le=365, description="A refresh token expires when unused for this long."
    )
    session_max_days: int = Field(
        90,
        ge=1,
        le=730,
        description="Absolute lifetime of a sign-in (a refresh-token family), however used.",
    )
    web_client_redirect_uris: list[str] = Field(
        default_factory=list,
        description=(
            "Redirect URIs of the first-party web player client `encore-web` (JSON list); "
            "empty means `{public_url}/callback`."
        ),
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "Addresses or CIDR networks of reverse proxies whose X-Forwarded-For is believed "
            '(JSON list, e.g. `["10.0.0.0/8"]`); from anyone else the header is ignored.'
        ),
    )
    workers: int = Field(
        1,
        ge=0,
        le=64,
        description=(
            "Job workers `encore serve` runs in-process (transcoding and other jobs); 0 leaves "
            "the jobs to separate `encore worker` processes."
        ),
    )
    jobs_retention_days: int = Field(
        7,
        ge=1,
        le=3650,
        description=(
            "Days a finished job stays in the jobs table, for inspection, before the workers "
            "delete it (daily). Dead jobs stay until requeued."
        ),
    )
    job_lease_seconds: int = Field(
        300,
        ge=5,
        le=86_400,
        description=(
            "How long a claimed job stays invisible to other workers; a worker that dies "
            "mid-job lets it be retried after this (live workers extend the lease)."
        ),
    )
    job_max_attempts: int = Field(
        5, ge=1, le=100, description="Tries before a failing job goes to the dead-letter state."
    )
    bus_url: str | None = Field(
        None,
        description=(
            "NATS server(s) for the event log and the job queue, e.g. `nats://10.0.0.1:4222` "
            "or a comma-separated list of cluster nodes; unset = tables in the database."
        ),
    )
    bus_stream_replicas: int = Field(
        1,
        ge=1,
        le=5,
        description="Replicas of each JetStream stream (3 on a 3-node cluster survives a node).",
    )
    events_per_user_per_minute: int = Field(
        3000,
        ge=1,
        le=1_000_000,
        description=(
            "Listening events one account may post per minute (per API process, bursts of a "
            "whole batch allowed); more get 429."
        ),
    )
    events_retention_days: int = Field(
        7,
        ge=1,
        le=3650,
        description=(
            "Days the event log keeps events (the lake keeps them for good): the JetStream "
            "EVENTS stream's max age, or, for the database log, how long events stay once every "
            "consumer has applied them. Consumers must never fall further behind than this."
        ),
    )
    events_consumer_batch: int = Field(
        1000, ge=1, le=100_000, description="Events the listening consumer applies per transaction."
    )
    lake_batch_events: int = Field(
        50_000, ge=1, le=1_000_000, description="Most events in one Parquet file of the lake."
    )
    lake_flush_seconds: float = Field(
        300.0,
        ge=0,
        le=3600,
        description=(
            "How long the lake writer waits to fill a file before writing a smaller one "
            "(fewer, larger files; the lake lags the log by at most this)."
        ),
    )
    analytics_query_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=600,
        description="Longest a query over the lake may run (SQL endpoint, engagement) before 422.",
    )
    analytics_query_max_rows: int = Field(
        100_000, ge=1, le=10_000_000, description="Most rows an analyst's SQL query may return."
    )
    analytics_lake_cache_dir: str = Field(
        "./var/lake-cache",
        description=(
            "Where lake files of an S3 store are copied for DuckDB (file:// reads in place)."
        ),
    )
    recommend_train_interval_seconds: float = Field(
        3600.0,
        ge=1,
        le=7 * 86400,
        description="Recommendation training runs at most this often, after new listening.",
    )
    recommend_playlists_refresh_interval_seconds: float = Field(
        86400.0,
        ge=1,
        le=30 * 86400,
        description="Generated playlists (Discover Weekly, Daily Mix) are refreshed this often, "
        "after new listening.",
    )
    recommend_ann_min_items: int = Field(
        200_000,
        ge=0,
        description="Models of at least this many tracks answer top-k through an inverted-file "
        "index (faiss IVF, 8-bit codes, built at model load) with an exact re-rank; smaller ones "
        "scan exactly (a scan of 200,000 tracks is a few milliseconds). 0 turns the index off.",
    )
    recommend_window_days: int = Field(
        365, ge=1, le=3650, description="Days of listening the recommendation model learns from."
    )
    recommend_factors: int = Field(128, ge=2, le=1024, description="Latent factors of the model.")
    recommend_iterations: int = Field(20, ge=1, le=200, description="ALS training iterations.")
    recommend_regularization: float = Field(
        1.0, ge=0, le=1000, description="ALS regularization (higher suits smaller catalogs)."
    )
    recommend_engine: TrainingEngineName = Field(
        "implicit",
        description="What training runs use (the scheduled job, and `encore recommend train` "
        "without `--engine`): `implicit` (in the process) or `spark` (Spark MLlib ALS; needs "
        "the `spark` extra and Java).",
    )
    recommend_spark_master: str = Field(
        "local[*]",
        description="Spark master of the spark training engine: `local[N]`/`local[*]` runs "
        "Spark inside the training process, `spark://HOST:PORT` (or another master URL) a "
        "cluster.",
    )
    recommend_model_poll_seconds: float = Field(
        30.0, ge=0.1, le=3600, description="How often API processes look for a newer model."
    )
    recommend_exclude_played_days: int = Field(
        14, ge=0, le=3650, description="Recommendations leave out tracks played this many days."
    )
    recommend_exploration_share: float = Field(
        0.1, ge=0, le=0.5, description="Share of a recommendation page given to exploration."
    )
    upload_max_bytes: int = Field(
        500 * 1024 * 1024,
        ge=1024,
        description="Largest audio upload accepted (bytes); more is refused with 413.",
    )
    upload_max_duration_seconds: int = Field(
        2 * 3600, ge=1, description="Longest audio upload accepted (seconds of audio)."
    )
    artist_storage_quota_bytes: int = Field(
        20 * 1024 * 1024 * 1024,
        ge=0,
        description="Original audio an artist account may store in total (bytes).",
    )
    import_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="Processes that read tags and probe audio during an import; 0 = one per core.",
    )

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError(
                "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
                f"(got {value.split('://', 1)[0]}://)"
            )
        return value

    @field_validator("bus_url")
    @classmethod
    def _check_bus_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        servers = [server.strip() for server in value.split(",")]
        for server in servers:
            if not server.startswith(("nats://", "tls://")):
                raise ValueError("bus_url must list nats:// or tls:// server URLs")
        return ",".join(servers)

    @field_validator("storage_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if not value.startswith(("file://", "memory://", "s3://")):
            raise ValueError("must start with file://, memory:// or s3://")
        return value

    @field_validator("secret_key")
    @classmethod
    def _strong_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from encore.auth.secrets import decode_master_key

            decode_master_key(value.get_secret_value())
        return value

    @field_validator("media_signing_keys")
    @classmethod
    def _media_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        import re

        from encore.auth.secrets import decode_master_key

        for kid, secret in value.items():
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", kid):
                raise ValueError(f"key id {kid!r} must be 1-16 letters, digits, '_' or '-'")
            decode_master_key(secret.get_secret_value())
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            ipaddress.ip_network(entry, strict=False)
        return value

    @field_validator("public_url")
    @classmethod
    def _absolute_public_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ValueError("must be an absolute http(s) URL such as https://music.example.com")
        return value.rstrip("/")

    @property
    def issuer(self) -> str:
        """The OAuth issuer identifier: the public URL."""
        return self.public_url

    @property
    def is_sqlite(self) -> bool:
        """True when the metadata database is the embedded SQLite file."""
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and overrides), or raise SettingsError with reasons."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        reasons = "; ".join(
            f"ENCORE_{'_'.join(str(p) for p in err['loc']).upper() or 'SETTINGS'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {reasons}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once."""
    return load_settings()
