"""`encore users`, `encore clients` and `encore keys`, run in-process on this test's database."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner, Result

from encore.auth import service as auth_service
from encore.auth.models import OAuthClient, SigningKey, User
from encore.cli import app
from encore.config import Settings
from encore.db import create_engine, create_session_factory

PASSWORD = "correct horse battery staple"
_Read = TypeVar("_Read")


class Encore(Protocol):
    """Runs `encore ARGS...` and returns what it did."""

    def __call__(self, *args: str, input: str | None = None) -> Result: ...


def _clear_encore_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("ENCORE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def encore(settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Encore:
    """The `encore` command, configured (through its environment) for this test's database."""
    _clear_encore_environment(monkeypatch)
    monkeypatch.setenv("ENCORE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("ENCORE_SECRET_KEY_FILE", settings.secret_key_file)
    monkeypatch.setenv("ENCORE_STORAGE_URL", settings.storage_url)
    # No stray .env from the repository's working directory.
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=input)

    return run


def read(settings: Settings, query: Callable[[AsyncSession], Awaitable[_Read]]) -> _Read:
    """Run a query on this test's database in a session of its own."""

    async def run() -> _Read:
        engine = create_engine(settings)
        try:
            async with create_session_factory(engine)() as db_session:
                return await query(db_session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def find_user(settings: Settings, username: str) -> User | None:
    """The account named `username`, as stored."""
    return read(
        settings,
        lambda db_session: auth_service.find_user_by_username(
            db_session=db_session, username=username
        ),
    )


def assert_clean_failure(result: Result, message: str) -> None:
    """The command failed with exit code 1 and a one-line reason, not a traceback."""
    assert result.exit_code == 1, result.output
    assert f"encore: {message}" in result.stderr
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_users_create_makes_an_account_with_its_roles(encore: Encore, settings: Settings) -> None:
    result = encore(
        "users", "create", "ada", "--email", "ada@example.com", "--password", PASSWORD,
        "--role", "artist", "--display-name", "Ada L.",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert "created user ada" in result.stderr
    user = find_user(settings, "ada")
    assert user is not None
    assert user.email == "ada@example.com"
    assert user.display_name == "Ada L."
    assert set(user.roles) == {"artist", "listener"}
    assert user.password_hash.startswith("$argon2id$")
    assert asyncio.run(auth_service.verify_password(user.password_hash, PASSWORD))


def test_users_create_asks_for_the_password_when_not_given(
    encore: Encore, settings: Settings
) -> None:
    result = encore(
        "users", "create", "grace", "--email", "grace@example.com", input=f"{PASSWORD}\n" * 2
    )

    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output, "the password is not echoed"
    user = find_user(settings, "grace")
    assert user is not None
    assert user.roles == ["listener"]
    assert asyncio.run(auth_service.verify_password(user.password_hash, PASSWORD))


def test_a_taken_username_fails_with_a_message(encore: Encore, settings: Settings) -> None:
    first = encore("users", "create", "ada", "--email", "ada@example.com", "--password", PASSWORD)
    assert first.exit_code == 0, first.output

    again = encore("users", "create", "ADA", "--email", "other@example.com", "--password", PASSWORD)

    assert_clean_failure(again, "that username or email is already registered")


def test_a_common_password_is_refused(encore: Encore, settings: Settings) -> None:
    result = encore(
        "users", "create", "ada", "--email", "ada@example.com", "--password", "password123"
    )

    assert_clean_failure(result, "password is one of the most common passwords")
    assert find_user(settings, "ada") is None


def test_an_unknown_role_is_refused_before_anything_is_written(
    encore: Encore, settings: Settings
) -> None:
    result = encore(
        "users", "create", "ada", "--email", "ada@example.com", "--password", PASSWORD,
        "--role", "superuser",
    )  # fmt: skip

    assert result.exit_code == 2
    assert find_user(settings, "ada") is None


def test_set_role_gives_exactly_these_roles(encore: Encore, settings: Settings) -> None:
    created = encore(
        "users", "create", "ada", "--email", "ada@example.com", "--password", PASSWORD,
        "--role", "artist",
    )  # fmt: skip
    assert created.exit_code == 0, created.output

    result = encore("users", "set-role", "ada", "--role", "analyst", "--role", "admin")

    assert result.exit_code == 0, result.output
    user = find_user(settings, "ada")
    assert user is not None
    assert set(user.roles) == {"admin", "analyst", "listener"}
    assert_clean_failure(encore("users", "set-role", "nobody", "--role", "admin"), "no user named")


def test_disable_and_enable_an_account(encore: Encore, settings: Settings) -> None:
    created = encore("users", "create", "ada", "--email", "ada@example.com", "--password", PASSWORD)
    assert created.exit_code == 0, created.output

    disabled = encore("users", "disable", "ada")
    assert disabled.exit_code == 0, disabled.output
    user = find_user(settings, "ada")
    assert user is not None and user.disabled

    enabled = encore("users", "enable", "ada")
    assert enabled.exit_code == 0, enabled.output
    user = find_user(settings, "ada")
    assert user is not None and not user.disabled
    assert_clean_failure(encore("users", "disable", "nobody"), "no user named nobody")


def test_users_list_shows_every_page(encore: Encore, settings: Settings) -> None:
    async def add_users(db_session: AsyncSession) -> None:
        # Written directly: hashing 105 passwords through the command would take a while.
        for number in range(105):
            name = f"user-{number:03d}"
            db_session.add(
                User(
                    username=name,
                    username_key=name,
                    email=f"{name}@example.com",
                    email_key=f"{name}@example.com",
                    display_name=name,
                    password_hash="$argon2id$not-a-real-hash",
                    roles=["analyst", "listener"] if number == 7 else ["listener"],
                    disabled=number == 104,
                )
            )
        await db_session.commit()

    read(settings, add_users)

    result = encore("users", "list")

    assert result.exit_code == 0, result.output
    listed = [line for line in result.stdout.splitlines() if "user-" in line]
    assert len(listed) == 105
    assert "analyst, listener" in next(line for line in listed if "user-007" in line)
    assert "yes" in next(line for line in listed if "user-104" in line)
    assert "105 users" in result.stderr


def _printed(result: Result, name: str) -> str | None:
    for line in result.stdout.splitlines():
        if line.startswith(f"{name}: "):
            return line.removeprefix(f"{name}: ").strip()
    return None


def test_a_confidential_client_gets_a_secret_stored_only_as_a_hash(
    encore: Encore, settings: Settings
) -> None:
    result = encore(
        "clients", "create", "Reporting", "--confidential", "--grant", "client_credentials",
        "--scope", "analytics",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    client_id, secret = _printed(result, "client_id"), _printed(result, "client_secret")
    assert client_id and secret
    assert "shown only now" in result.stderr

    async def stored(db_session: AsyncSession) -> OAuthClient | None:
        return await auth_service.get_client(db_session=db_session, client_id=client_id)

    client = read(settings, stored)
    assert client is not None
    assert client.name == "Reporting"
    assert client.grant_types == ["client_credentials"]
    assert client.scopes == ["analytics"]
    assert client.secret_hash == auth_service.sha256_hex(secret)
    assert secret not in repr(
        [client.client_id, client.name, client.secret_hash, client.redirect_uris]
    )
    assert auth_service.client_secret_matches(client, secret)


def test_a_public_client_is_listed_then_deleted(encore: Encore, settings: Settings) -> None:
    created = encore(
        "clients", "create", "Living room TV", "--grant", "device_code", "--client-id", "tv-app",
    )  # fmt: skip
    assert created.exit_code == 0, created.output
    assert _printed(created, "client_id") == "tv-app"
    assert _printed(created, "client_secret") is None

    listed = encore("clients", "list")
    assert listed.exit_code == 0, listed.output
    assert "tv-app" in listed.stdout
    assert "device_code" in listed.stdout

    deleted = encore("clients", "delete", "tv-app")
    assert deleted.exit_code == 0, deleted.output

    async def stored(db_session: AsyncSession) -> OAuthClient | None:
        return await auth_service.get_client(db_session=db_session, client_id="tv-app")

    assert read(settings, stored) is None
    assert_clean_failure(encore("clients", "delete", "tv-app"), "no client tv-app")


def test_client_rules_are_explained(encore: Encore) -> None:
    public_service = encore("clients", "create", "cron", "--grant", "client_credentials")
    assert_clean_failure(public_service, "client_credentials needs a confidential client")

    no_redirect = encore("clients", "create", "web app")
    assert_clean_failure(no_redirect, "authorization_code needs at least one redirect URI")


def test_keys_rotate_makes_a_new_current_key_and_retires_the_old(
    encore: Encore, settings: Settings
) -> None:
    async def signing_keys(db_session: AsyncSession) -> list[SigningKey]:
        return list((await db_session.scalars(select(SigningKey))).all())

    first = encore("keys", "rotate")
    assert first.exit_code == 0, first.output
    [old] = [key for key in read(settings, signing_keys) if key.retired_at is None]

    second = encore("keys", "rotate")

    assert second.exit_code == 0, second.output
    keys = {key.kid: key for key in read(settings, signing_keys)}
    [current] = [key for key in keys.values() if key.retired_at is None]
    assert current.kid != old.kid
    assert current.kid in second.stderr
    assert keys[old.kid].retired_at is not None
    assert "stays published" in second.stderr


def test_commands_need_a_migrated_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _clear_encore_environment(monkeypatch)
    monkeypatch.setenv("ENCORE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("ENCORE_SECRET_KEY_FILE", str(tmp_path / "secret.key"))
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(app, ["users", "list"])

    assert_clean_failure(result, "the database has no tables yet; run `encore db upgrade`")


def test_serve_refuses_a_bad_key_file_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _clear_encore_environment(monkeypatch)
    key_file = tmp_path / "secret.key"
    key_file.write_text("changeme\n")
    key_file.chmod(0o600)
    monkeypatch.setenv("ENCORE_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'e.db'}")
    monkeypatch.setenv("ENCORE_SECRET_KEY_FILE", str(key_file))
    monkeypatch.chdir(tmp_path)

    result = CliRunner().invoke(app, ["serve", "--port", "1"])

    assert result.exit_code == 2
    assert "ENCORE_SECRET_KEY_FILE" in result.stderr
    assert "Traceback" not in result.stderr
