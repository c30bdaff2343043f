"""The master key: no default, clear refusals, created once with private permissions."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest

from encore.auth.secrets import DecryptionError, SecretBox, derive_key, load_master_key
from encore.config import SettingsError, load_settings


def test_a_short_or_malformed_secret_key_setting_is_refused() -> None:
    with pytest.raises(SettingsError, match="ENCORE_SECRET_KEY"):
        load_settings(secret_key="too-short")
    with pytest.raises(SettingsError, match="ENCORE_SECRET_KEY"):
        load_settings(secret_key="!!! not base64 at all, but long enough to pass length !!!")


def test_a_good_secret_key_setting_is_used_as_is(tmp_path: Path) -> None:
    key = secrets.token_urlsafe(32)
    settings = load_settings(secret_key=key, secret_key_file=str(tmp_path / "unused.key"))
    assert len(load_master_key(settings)) == 32
    assert not (tmp_path / "unused.key").exists()


def test_the_key_file_is_created_once_with_owner_only_permissions(tmp_path: Path) -> None:
    settings = load_settings(secret_key_file=str(tmp_path / "var" / "secret.key"))
    first = load_master_key(settings)
    second = load_master_key(settings)

    assert first == second
    mode = stat.S_IMODE((tmp_path / "var" / "secret.key").stat().st_mode)
    assert mode == 0o600


def test_a_key_file_holding_garbage_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("changeme\n")
    path.chmod(0o600)
    with pytest.raises(SettingsError, match="ENCORE_SECRET_KEY_FILE"):
        load_master_key(load_settings(secret_key_file=str(path)))


def test_a_key_file_others_can_read_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text(secrets.token_urlsafe(32))
    path.chmod(0o644)
    with pytest.raises(SettingsError, match="chmod 600"):
        load_master_key(load_settings(secret_key_file=str(path)))


def test_sealed_values_open_only_with_their_key_and_context() -> None:
    master = secrets.token_bytes(32)
    box = SecretBox.for_purpose(master, "app-password")
    sealed = box.seal(b"hunter2", context=b"user-1")

    assert box.open(sealed, context=b"user-1") == b"hunter2"
    with pytest.raises(DecryptionError):
        box.open(sealed, context=b"user-2")
    with pytest.raises(DecryptionError):
        SecretBox.for_purpose(master, "other").open(sealed, context=b"user-1")
    assert derive_key(master, "a") != derive_key(master, "b")
