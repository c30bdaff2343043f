"""Settings: one pydantic-settings class, read from ENCORE_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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
            "How often a process checks the catalog revision in the database; cached documents "
            "are at most this much older than a change made by another process."
        ),
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

    @field_validator("storage_url")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if not value.startswith(("file://", "memory://", "s3://")):
            raise ValueError("must start with file://, memory:// or s3://")
        return value

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
