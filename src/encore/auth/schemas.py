"""Accounts request and response shapes."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, EmailStr, Field


class _Input(BaseModel):
    # Unknown fields are an error, not silently dropped: no mass assignment of roles & co.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class UserCreate(_Input):
    """A registration."""

    username: str = Field(min_length=3, max_length=32, examples=["ada"])
    email: EmailStr = Field(max_length=320)
    password: str = Field(min_length=1, max_length=1024)
    display_name: str | None = Field(None, max_length=100)


class UserRead(_Read):
    """An account as its owner sees it."""

    id: uuid.UUID
    username: str
    email: str
    display_name: str
    roles: list[str]
    created_at: datetime


class MeUpdate(_Input):
    """Changes to one's own account; a new password needs the current one."""

    display_name: str | None = Field(None, min_length=1, max_length=100)
    email: EmailStr | None = Field(None, max_length=320)
    current_password: str | None = Field(None, max_length=1024)
    new_password: str | None = Field(None, max_length=1024)


class SessionRead(_Read):
    """A sign-in on some app."""

    id: uuid.UUID
    client_id: str
    client_name: str
    scope: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    current: bool


class ApiKeyCreate(_Input):
    """A new API key's label."""

    name: str = Field(min_length=1, max_length=100, examples=["Symfonium on my phone"])


class ApiKeyRead(_Read):
    """An API key, without the key."""

    id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    """An API key just made: the key is shown this once."""

    key: str


class AppPasswordRead(BaseModel):
    """Whether an app password is set, and since when."""

    exists: bool
    created_at: datetime | None


class AppPasswordCreated(BaseModel):
    """An app password just made: shown this once."""

    password: str
    created_at: datetime
