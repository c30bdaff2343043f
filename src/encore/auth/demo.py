"""Demo accounts: a listener, an artist who owns the demo artists, and an analyst.

Passwords are random on every machine and written only to a file readable by its owner,
so a demo database exposed by mistake has no well-known password.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession

from encore.auth import service as auth_service
from encore.auth.models import Role
from encore.catalog import service as catalog_service

__all__ = [
    "DEMO_ACCOUNTS",
    "DEMO_CREDENTIALS_FILE",
    "DemoCredentials",
    "create_demo_accounts",
    "demo_accounts_exist",
    "save_demo_credentials",
]

DEMO_ACCOUNTS: tuple[tuple[str, Role], ...] = (
    ("demo-listener", Role.listener),
    ("demo-artist", Role.artist),
    ("demo-analyst", Role.analyst),
)
DEMO_CREDENTIALS_FILE = "demo-credentials.txt"
_FILE_HEADER = (
    "# Encore demo accounts, made by `encore demo`. Keep this file private.\n"
    "# username\trole\tpassword\n"
)


class DemoCredentials(NamedTuple):
    """A demo account just created, with the only copy of its password."""

    username: str
    role: str
    password: str


async def create_demo_accounts(
    *, db_session: AsyncSession, artist_names: Sequence[str]
) -> list[DemoCredentials]:
    """Create the demo accounts that do not exist yet; the artist owns `artist_names`."""
    created: list[DemoCredentials] = []
    for username, role in DEMO_ACCOUNTS:
        user = await auth_service.find_user_by_username(db_session=db_session, username=username)
        if user is None:
            password = secrets.token_urlsafe(12)
            user = await auth_service.create_user(
                db_session=db_session,
                username=username,
                email=f"{username}@example.com",
                password=password,
                display_name=f"Demo {role.value}",
                roles=(role,),
            )
            created.append(DemoCredentials(username, role.value, password))
        if role is Role.artist:
            # Also for an artist account kept from an earlier run: the catalog may be new.
            await catalog_service.assign_artist_owner(
                db_session=db_session, artist_names=artist_names, user_id=user.id
            )
    return created


async def demo_accounts_exist(*, db_session: AsyncSession) -> bool:
    """True when any of the demo accounts exists."""
    for username, _role in DEMO_ACCOUNTS:
        if await auth_service.find_user_by_username(db_session=db_session, username=username):
            return True
    return False


def _read_credentials(path: Path) -> dict[str, DemoCredentials]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    found: dict[str, DemoCredentials] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and not line.startswith("#"):
            found[fields[0]] = DemoCredentials(*fields)
    return found


def save_demo_credentials(path: Path, credentials: Iterable[DemoCredentials]) -> Path:
    """Add these accounts to the credentials file (mode 0600), replacing older lines of them."""
    merged = _read_credentials(path)
    merged.update({entry.username: entry for entry in credentials})
    body = _FILE_HEADER + "".join(
        f"{entry.username}\t{entry.role}\t{entry.password}\n" for entry in merged.values()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.partial")
    try:
        with os.fdopen(
            os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8"
        ) as file:
            # A leftover temp file keeps its old mode: O_CREAT's mode applies to new files only.
            os.fchmod(file.fileno(), 0o600)
            file.write(body)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    temp.replace(path)
    return path
