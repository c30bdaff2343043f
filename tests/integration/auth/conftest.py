"""Fixtures shared by the OAuth tests: a browser and a listener account."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.oauth import PASSWORD, asgi_client, create_user


@pytest.fixture
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A browser: keeps cookies, does not follow the final redirect back to the app."""
    async with asgi_client(app) as http:
        yield http


@pytest.fixture
async def listener(app: FastAPI) -> str:
    """A listener account's username (its password is tests.fixtures.oauth.PASSWORD)."""
    await create_user(app, "ada", PASSWORD)
    return "ada"
