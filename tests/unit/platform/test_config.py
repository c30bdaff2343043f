"""Settings: defaults, environment, and refusal of settings that cannot work."""

from __future__ import annotations

import pytest

from encore.config import SettingsError, load_settings


def test_defaults_are_the_embedded_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ENCORE_DATABASE_URL", "ENCORE_STORAGE_URL", "ENCORE_PORT", "ENCORE_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir("/")  # no stray .env file

    settings = load_settings()

    assert settings.database_url == "sqlite+aiosqlite:///./var/encore.db"
    assert settings.storage_url == "file://./var/media"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.is_sqlite


def test_environment_variables_use_the_encore_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCORE_PORT", "9123")
    monkeypatch.setenv("ENCORE_DATABASE_URL", "postgresql+asyncpg://u:p@db/encore")

    settings = load_settings()

    assert settings.port == 9123
    assert not settings.is_sqlite


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"database_url": "mysql://root@localhost/encore"}, "ENCORE_DATABASE_URL"),
        ({"storage_url": "ftp://files"}, "ENCORE_STORAGE_URL"),
        ({"port": 70000}, "ENCORE_PORT"),
        ({"log_level": "loud"}, "ENCORE_LOG_LEVEL"),
    ],
)
def test_invalid_settings_are_refused_with_the_variable_named(
    overrides: dict[str, object], named: str
) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(**overrides)
    assert named in str(excinfo.value)


def test_the_s3_secret_is_never_shown_in_a_repr() -> None:
    settings = load_settings(s3_secret_access_key="very-secret-value")
    assert "very-secret-value" not in repr(settings)
    assert "very-secret-value" not in str(settings.model_dump())
