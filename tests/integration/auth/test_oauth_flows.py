"""The OAuth 2.1 flows, driven by Authlib's OAuth 2 client against the app over ASGI."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from fastapi import FastAPI

from encore.auth.models import Role
from encore.auth.service import (
    GRANT_AUTHORIZATION_CODE,
    GRANT_CLIENT_CREDENTIALS,
    GRANT_DEVICE_CODE,
    GRANT_REFRESH_TOKEN,
    WEB_CLIENT_ID,
)
from encore.config import Settings
from tests.fixtures.browser import query_of, read_form, submit
from tests.fixtures.oauth import BASE_URL, PASSWORD, asgi_client, create_user, register_client

WEB_REDIRECT = "http://127.0.0.1:8000/callback"
TOKEN_URL = f"{BASE_URL}/oauth/token"
AUTHORIZE_URL = f"{BASE_URL}/oauth/authorize"


def oauth_client(app: FastAPI, **options: Any) -> AsyncOAuth2Client:
    """Authlib's client, talking to the app through ASGI."""
    return AsyncOAuth2Client(transport=httpx.ASGITransport(app=app), base_url=BASE_URL, **options)


async def sign_in(
    browser: httpx.AsyncClient, authorization_url: str, username: str, password: str = PASSWORD
) -> httpx.Response:
    """Open the authorization URL, fill in the sign-in form and post it."""
    page = await browser.get(authorization_url)
    assert page.status_code == 200, page.text
    return await submit(browser, page, username=username, password=password)


async def authorize_web_player(
    app: FastAPI, browser: httpx.AsyncClient, username: str, scope: str = "user-read openid"
) -> tuple[AsyncOAuth2Client, dict[str, Any]]:
    """The whole code + PKCE flow for the first-party web player; its client and token."""
    client = oauth_client(
        app,
        client_id=WEB_CLIENT_ID,
        token_endpoint_auth_method="none",
        redirect_uri=WEB_REDIRECT,
        scope=scope,
        code_challenge_method="S256",
    )
    verifier = generate_token(64)
    url, state = client.create_authorization_url(AUTHORIZE_URL, code_verifier=verifier)
    answer = await sign_in(browser, url, username)
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith(WEB_REDIRECT)
    assert query_of(location)["state"] == state
    token = await client.fetch_token(
        TOKEN_URL, authorization_response=location, code_verifier=verifier
    )
    return client, dict(token)


async def test_code_flow_with_pkce_gives_tokens_that_the_api_accepts(
    app: FastAPI, browser: httpx.AsyncClient, listener: str, settings: Settings
) -> None:
    client, token = await authorize_web_player(app, browser, listener, "user-read openid profile")

    assert token["token_type"].lower() == "bearer"
    assert token["expires_in"] == 15 * 60
    assert set(token["scope"].split()) == {"user-read", "openid", "profile"}
    header = jwt.get_unverified_header(token["access_token"])
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt" and header["kid"]
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["aud"] == settings.public_url
    assert claims["roles"] == ["listener"]
    me = await client.get("/v1/me")
    assert me.status_code == 200
    assert me.json()["username"] == "ada"
    assert "password_hash" not in me.text
    # The id token is signed by a key the JWKS publishes, for this client.
    jwks = (await browser.get("/oauth/jwks")).json()
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    id_claims = jwt.decode(token["id_token"], key.key, algorithms=["ES256"], audience=WEB_CLIENT_ID)
    assert id_claims["preferred_username"] == "ada"
    userinfo = await client.get("/oauth/userinfo")
    assert userinfo.json()["sub"] == claims["sub"]


async def test_discovery_documents_describe_the_server(
    anonymous_client: httpx.AsyncClient, settings: Settings
) -> None:
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        metadata = (await anonymous_client.get(path)).json()
        assert metadata["issuer"] == settings.public_url
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert "password" not in metadata["grant_types_supported"]
        assert "implicit" not in metadata["grant_types_supported"]
        assert metadata["response_types_supported"] == ["code"]
        assert metadata["token_endpoint"] == f"{settings.public_url}/oauth/token"


async def test_refresh_rotates_and_a_replayed_refresh_token_revokes_the_family(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    client, first = await authorize_web_player(app, browser, listener)

    second = await client.refresh_token(TOKEN_URL, refresh_token=first["refresh_token"])
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/v1/me")).status_code == 200

    replay = await browser.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "client_id": WEB_CLIENT_ID,
        },
    )
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    # The thief's replay also kills the legitimate holder's newer token.
    newer = await browser.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": second["refresh_token"],
            "client_id": WEB_CLIENT_ID,
        },
    )
    assert newer.status_code == 400
    assert newer.json()["error"] == "invalid_grant"


async def test_client_credentials_for_a_service_account(app: FastAPI) -> None:
    created = await register_client(
        app,
        name="analytics job",
        confidential=True,
        grant_types=(GRANT_CLIENT_CREDENTIALS,),
        scopes=("analytics",),
    )
    client = oauth_client(
        app, client_id=created.client.client_id, client_secret=created.secret, scope="analytics"
    )
    token = await client.fetch_token(TOKEN_URL, grant_type="client_credentials")

    assert "refresh_token" not in token
    assert token["scope"] == "analytics"
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["sub"] == f"client:{created.client.client_id}"
    # Catalog reads accept any valid token; /v1/me needs a user.
    assert (await client.get("/v1/genres")).status_code == 200
    assert (await client.get("/v1/me")).status_code == 403


async def test_client_credentials_with_a_wrong_secret_is_invalid_client(app: FastAPI) -> None:
    created = await register_client(
        app,
        name="job",
        confidential=True,
        grant_types=(GRANT_CLIENT_CREDENTIALS,),
        scopes=("analytics",),
    )
    async with asgi_client(app) as http:
        answer = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(created.client.client_id, "not-the-secret"),
        )
    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


async def test_device_flow_for_a_tv(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    created = await register_client(
        app,
        name="Living-room TV",
        grant_types=(GRANT_DEVICE_CODE, GRANT_REFRESH_TOKEN),
        scopes=("streaming", "user-read"),
    )
    tv = oauth_client(app, client_id=created.client.client_id, token_endpoint_auth_method="none")
    device = browser  # the TV's own HTTP calls; no token yet
    start = (
        await device.post(
            "/oauth/device_authorization",
            data={"client_id": created.client.client_id, "scope": "streaming user-read"},
        )
    ).json()
    poll = {
        "grant_type": GRANT_DEVICE_CODE,
        "device_code": start["device_code"],
        "client_id": created.client.client_id,
    }
    pending = await device.post("/oauth/token", data=poll)
    assert pending.json()["error"] == "authorization_pending"
    too_fast = await device.post("/oauth/token", data=poll)
    assert too_fast.json()["error"] == "slow_down"

    # The test server answers at BASE_URL, not at the public URL the links are made with.
    complete = urlsplit(start["verification_uri_complete"])
    page = await browser.get(f"{complete.path}?{complete.query}")
    assert read_form(page.text).fields["user_code"] == start["user_code"]
    consent = await submit(browser, page, username=listener, password=PASSWORD)
    assert consent.status_code == 200 and "Living-room TV" in consent.text
    done = await submit(browser, consent, decision="allow")
    assert "return to your device" in done.text

    await _forget_last_poll(app, start["device_code"])
    token = await tv.fetch_token(
        TOKEN_URL, grant_type=GRANT_DEVICE_CODE, device_code=start["device_code"]
    )
    assert set(token["scope"].split()) == {"streaming", "user-read"}
    assert (await tv.get("/v1/me")).json()["username"] == listener
    await _forget_last_poll(app, start["device_code"])
    again = await device.post("/oauth/token", data=poll)
    assert again.json()["error"] == "invalid_grant"


async def _forget_last_poll(app: FastAPI, device_code: str) -> None:
    # The polling interval is enforced; the test moves the last poll back instead of sleeping.
    from sqlalchemy import update

    from encore.auth.models import DeviceAuthorization
    from encore.auth.service import sha256_hex
    from tests.fixtures.oauth import resources_of

    async with resources_of(app).session_factory() as db_session:
        await db_session.execute(
            update(DeviceAuthorization)
            .where(DeviceAuthorization.device_code_hash == sha256_hex(device_code))
            .values(last_polled_at=None)
        )
        await db_session.commit()


async def test_revocation_and_introspection(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    client, token = await authorize_web_player(app, browser, listener)
    edge = await register_client(
        app,
        name="edge",
        confidential=True,
        grant_types=(GRANT_CLIENT_CREDENTIALS,),
        scopes=("analytics",),
    )
    inspector = oauth_client(app, client_id=edge.client.client_id, client_secret=edge.secret)

    active = (
        await inspector.introspect_token(
            f"{BASE_URL}/oauth/introspect", token=token["access_token"]
        )
    ).json()
    assert active["active"] is True
    assert active["username"] == listener
    assert active["client_id"] == WEB_CLIENT_ID

    revoked = await client.revoke_token(
        f"{BASE_URL}/oauth/revoke", token=token["refresh_token"], token_type_hint="refresh_token"
    )
    assert revoked.status_code == 200

    for presented in (token["access_token"], token["refresh_token"]):
        answer = (
            await inspector.introspect_token(f"{BASE_URL}/oauth/introspect", token=presented)
        ).json()
        assert answer == {"active": False}
    refused = await browser.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": WEB_CLIENT_ID,
        },
    )
    assert refused.json()["error"] == "invalid_grant"


async def test_a_public_client_cannot_introspect(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    _, token = await authorize_web_player(app, browser, listener)
    answer = await browser.post(
        "/oauth/introspect", data={"token": token["access_token"], "client_id": WEB_CLIENT_ID}
    )
    assert answer.status_code == 401


async def test_third_party_clients_ask_for_consent_once(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    created = await register_client(
        app,
        name="Scrobbler",
        redirect_uris=("https://scrobbler.example/cb",),
        grant_types=(GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN),
        scopes=("user-read", "library-read"),
    )
    client = oauth_client(
        app,
        client_id=created.client.client_id,
        token_endpoint_auth_method="none",
        redirect_uri="https://scrobbler.example/cb",
        scope="library-read",
        code_challenge_method="S256",
    )
    verifier = generate_token(64)
    url, _ = client.create_authorization_url(AUTHORIZE_URL, code_verifier=verifier)
    consent = await sign_in(browser, url, listener)
    assert consent.status_code == 200
    assert "Scrobbler" in consent.text and "See your saved music" in consent.text
    denied = await submit(browser, consent, decision="deny")
    assert query_of(denied.headers["location"])["error"] == "access_denied"

    consent = await sign_in(browser, url, listener)
    allowed = await submit(browser, consent, decision="allow")
    assert "code" in query_of(allowed.headers["location"])
    # Consent is remembered: the next sign-in goes straight back to the app.
    url, _ = client.create_authorization_url(AUTHORIZE_URL, code_verifier=generate_token(64))
    again = await sign_in(browser, url, listener)
    assert again.status_code == 303


async def test_a_listener_is_not_granted_scopes_beyond_their_roles(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    _, token = await authorize_web_player(app, browser, listener, "user-read analytics upload")
    assert token["scope"] == "user-read"

    await create_user(app, "grace", PASSWORD, roles=(Role.analyst,))
    _, analyst = await authorize_web_player(app, browser, "grace", "user-read analytics")
    assert set(analyst["scope"].split()) == {"user-read", "analytics"}


async def test_sessions_are_listed_and_revocable_by_their_owner_only(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    client, token = await authorize_web_player(app, browser, listener, "user-read user-modify")
    await create_user(app, "eve", PASSWORD)
    other, _ = await authorize_web_player(app, browser, "eve", "user-read user-modify")

    sessions = (await client.get("/v1/me/sessions")).json()
    assert len(sessions) == 1 and sessions[0]["current"] is True
    assert sessions[0]["client_id"] == WEB_CLIENT_ID

    assert (await other.delete(f"/v1/me/sessions/{sessions[0]['id']}")).status_code == 404
    assert (await client.delete(f"/v1/me/sessions/{sessions[0]['id']}")).status_code == 204
    refused = await browser.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": WEB_CLIENT_ID,
        },
    )
    assert refused.json()["error"] == "invalid_grant"


async def test_a_token_expires(app: FastAPI, browser: httpx.AsyncClient, listener: str) -> None:
    _client, token = await authorize_web_player(app, browser, listener)
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert claims["exp"] > time.time()
