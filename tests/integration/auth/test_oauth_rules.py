"""One test per OAuth and account rule: each shows the server refusing what it must refuse."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import timedelta
from urllib.parse import urlencode

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from sqlalchemy import update

from encore.app import create_app
from encore.auth import service as auth_service
from encore.auth.models import AuthorizationCode
from encore.auth.service import GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN, WEB_CLIENT_ID
from encore.auth.tokens import TokenIssuer
from encore.config import Settings
from encore.db import utcnow
from tests.fixtures.browser import query_of, submit
from tests.fixtures.oauth import (
    PASSWORD,
    asgi_client,
    create_user,
    pkce_challenge,
    register_client,
    resources_of,
)

WEB_REDIRECT = "http://127.0.0.1:8000/callback"
PROBLEM = "application/problem+json"


def authorize_query(**overrides: str | None) -> str:
    """An /oauth/authorize URL for the web player, with some parameters changed or removed."""
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": WEB_CLIENT_ID,
        "redirect_uri": WEB_REDIRECT,
        "scope": "user-read user-modify",
        "state": "s-123",
        "code_challenge": pkce_challenge("v" * 64),
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return "/oauth/authorize?" + urlencode({k: v for k, v in params.items() if v is not None})


async def code_for(
    browser: httpx.AsyncClient, username: str, verifier: str = "v" * 64, password: str = PASSWORD
) -> str:
    """Sign in through the page and return the authorization code."""
    page = await browser.get(authorize_query(code_challenge=pkce_challenge(verifier)))
    answer = await submit(browser, page, username=username, password=password)
    assert answer.status_code == 303, answer.text
    return query_of(answer.headers["location"])["code"]


async def exchange(
    browser: httpx.AsyncClient, code: str, verifier: str | None = "v" * 64, **extra: str
) -> httpx.Response:
    """POST the code to the token endpoint as the public web client."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": WEB_REDIRECT,
        "client_id": WEB_CLIENT_ID,
        **extra,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    return await browser.post("/oauth/token", data=form)


# --- authorization requests ------------------------------------------------------------------


async def test_an_unregistered_redirect_uri_is_refused_without_redirecting(
    browser: httpx.AsyncClient,
) -> None:
    answer = await browser.get(authorize_query(redirect_uri="https://evil.example/steal"))
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert "not registered" in answer.text


async def test_a_missing_code_challenge_is_refused(browser: httpx.AsyncClient) -> None:
    answer = await browser.get(authorize_query(code_challenge=None, code_challenge_method=None))
    assert answer.status_code == 303
    error = query_of(answer.headers["location"])
    assert error["error"] == "invalid_request" and error["state"] == "s-123"


async def test_the_plain_challenge_method_is_refused(browser: httpx.AsyncClient) -> None:
    answer = await browser.get(
        authorize_query(code_challenge="v" * 64, code_challenge_method="plain")
    )
    assert query_of(answer.headers["location"])["error"] == "invalid_request"


async def test_the_implicit_flow_is_refused(browser: httpx.AsyncClient) -> None:
    answer = await browser.get(authorize_query(response_type="token"))
    assert query_of(answer.headers["location"])["error"] == "unsupported_response_type"


async def test_a_sign_in_form_without_its_csrf_token_is_refused(
    browser: httpx.AsyncClient, listener: str
) -> None:
    page = await browser.get(authorize_query())
    answer = await submit(browser, page, username=listener, password=PASSWORD, csrf_token="x")
    assert answer.status_code == 403
    assert "location" not in answer.headers


async def test_sign_in_pages_cannot_be_framed_or_cached(browser: httpx.AsyncClient) -> None:
    page = await browser.get(authorize_query())
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


async def test_native_apps_may_use_any_loopback_port_but_only_on_loopback(
    app: FastAPI, browser: httpx.AsyncClient
) -> None:
    created = await register_client(
        app,
        name="CLI",
        redirect_uris=("http://127.0.0.1/callback", "https://app.example/cb"),
        grant_types=(GRANT_AUTHORIZATION_CODE, GRANT_REFRESH_TOKEN),
    )
    client_id = created.client.client_id
    on_loopback = await browser.get(
        authorize_query(client_id=client_id, redirect_uri="http://127.0.0.1:53121/callback")
    )
    other_port = await browser.get(
        authorize_query(client_id=client_id, redirect_uri="https://app.example:8443/cb")
    )
    other_path = await browser.get(
        authorize_query(client_id=client_id, redirect_uri="http://127.0.0.1:53121/other")
    )
    assert on_loopback.status_code == 200
    assert other_port.status_code == 400
    assert other_path.status_code == 400


# --- the code at the token endpoint ----------------------------------------------------------


async def test_a_code_without_its_verifier_is_refused(
    browser: httpx.AsyncClient, listener: str
) -> None:
    code = await code_for(browser, listener)
    answer = await exchange(browser, code, verifier=None)
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"


async def test_a_code_with_the_wrong_verifier_is_refused_and_burnt(
    browser: httpx.AsyncClient, listener: str
) -> None:
    code = await code_for(browser, listener)
    wrong = await exchange(browser, code, verifier="w" * 64)
    right_after = await exchange(browser, code)
    assert wrong.json()["error"] == "invalid_grant"
    assert right_after.json()["error"] == "invalid_grant"


async def test_a_code_for_another_redirect_uri_is_refused(
    browser: httpx.AsyncClient, listener: str
) -> None:
    code = await code_for(browser, listener)
    answer = await exchange(browser, code, redirect_uri="http://127.0.0.1:8000/elsewhere")
    assert answer.json()["error"] == "invalid_grant"


async def test_a_code_is_bound_to_its_client(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    other = await register_client(
        app,
        name="other",
        redirect_uris=(WEB_REDIRECT,),
        grant_types=(GRANT_AUTHORIZATION_CODE,),
    )
    code = await code_for(browser, listener)
    answer = await exchange(browser, code, client_id=other.client.client_id)
    assert answer.json()["error"] == "invalid_grant"


async def test_a_reused_code_is_refused_and_revokes_what_it_gave(
    browser: httpx.AsyncClient, listener: str
) -> None:
    code = await code_for(browser, listener)
    first = await exchange(browser, code)
    assert first.status_code == 200
    replay = await exchange(browser, code)
    assert replay.json()["error"] == "invalid_grant"

    refresh = await browser.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": first.json()["refresh_token"],
            "client_id": WEB_CLIENT_ID,
        },
    )
    assert refresh.json()["error"] == "invalid_grant"


async def test_an_expired_code_is_refused(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    code = await code_for(browser, listener)
    async with resources_of(app).session_factory() as db_session:
        await db_session.execute(
            update(AuthorizationCode)
            .where(AuthorizationCode.code_hash == auth_service.sha256_hex(code))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await db_session.commit()
    answer = await exchange(browser, code)
    assert answer.json()["error"] == "invalid_grant"


async def test_a_parameter_sent_twice_is_refused(browser: httpx.AsyncClient) -> None:
    answer = await browser.post(
        "/oauth/token",
        content="grant_type=client_credentials&grant_type=authorization_code&client_id=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"


async def test_the_password_grant_does_not_exist(browser: httpx.AsyncClient, listener: str) -> None:
    answer = await browser.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "username": listener,
            "password": PASSWORD,
            "client_id": WEB_CLIENT_ID,
        },
    )
    assert answer.json()["error"] == "unsupported_grant_type"


async def test_an_oversized_token_request_is_refused(browser: httpx.AsyncClient) -> None:
    answer = await browser.post(
        "/oauth/token", data={"grant_type": "client_credentials", "junk": "x" * 20_000}
    )
    assert answer.status_code == 400


# --- access tokens at the API ----------------------------------------------------------------


async def _token(browser: httpx.AsyncClient, username: str) -> str:
    answer = await exchange(browser, await code_for(browser, username))
    token: str = answer.json()["access_token"]
    return token


async def _me(app: FastAPI, token: str) -> httpx.Response:
    async with asgi_client(app) as http:
        return await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})


async def test_no_token_is_a_401_problem_with_a_bearer_challenge(
    anonymous_client: httpx.AsyncClient,
) -> None:
    for path in ("/v1/me", "/v1/genres", "/v1/browse/new-releases"):
        answer = await anonymous_client.get(path)
        assert answer.status_code == 401
        assert answer.headers["content-type"] == PROBLEM
        assert answer.headers["www-authenticate"].startswith("Bearer")


async def test_a_missing_scope_is_a_403(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    page = await browser.get(authorize_query(scope="user-read"))
    answer = await submit(browser, page, username=listener, password=PASSWORD)
    token = (await exchange(browser, query_of(answer.headers["location"])["code"])).json()
    async with asgi_client(app) as http:
        patch = await http.patch(
            "/v1/me",
            json={"display_name": "Ada"},
            headers={"Authorization": f"Bearer {token['access_token']}"},
        )
    assert patch.status_code == 403
    assert 'error="insufficient_scope"' in patch.headers["www-authenticate"]


async def _forged(app: FastAPI, **changes: object) -> str:
    issuer = await resources_of(app).auth.issuer()
    forged = TokenIssuer(
        issuer=str(changes.get("issuer", issuer.issuer)),
        audience=str(changes.get("audience", issuer.audience)),
        access_token_lifetime=changes.get("lifetime", issuer.access_token_lifetime),  # type: ignore[arg-type]
        key=issuer.key,
    )
    token, _ = forged.access_token(
        subject="0190a8f2-7c1e-7b3a-9f00-0123456789ab",
        client_id=WEB_CLIENT_ID,
        scopes={"user-read"},
        roles={"listener"},
        session_id=None,
    )
    return token


async def test_an_expired_token_is_refused(app: FastAPI) -> None:
    token = await _forged(app, lifetime=timedelta(minutes=-5))
    answer = await _me(app, token)
    assert answer.status_code == 401
    assert "expired" in answer.json()["detail"]


async def test_a_token_for_another_audience_is_refused(app: FastAPI) -> None:
    answer = await _me(app, await _forged(app, audience="https://other.example"))
    assert answer.status_code == 401


async def test_a_token_from_another_issuer_is_refused(app: FastAPI) -> None:
    answer = await _me(app, await _forged(app, issuer="https://other.example"))
    assert answer.status_code == 401


async def test_a_tampered_token_is_refused(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    token = await _token(browser, listener)
    header, _payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["roles"] = ["admin"]
    claims["scope"] = "admin user-read"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    answer = await _me(app, f"{header}.{forged_payload}.{signature}")
    assert answer.status_code == 401


async def test_an_unsigned_token_is_refused(app: FastAPI) -> None:
    unsigned = jwt.encode(
        {"sub": "x", "aud": "http://127.0.0.1:8000", "exp": time.time() + 60},
        key=None,
        algorithm="none",
        headers={"typ": "at+jwt", "kid": "whatever"},
    )
    assert (await _me(app, unsigned)).status_code == 401


async def test_a_token_signed_with_an_unknown_key_is_refused(app: FastAPI) -> None:
    issuer = await resources_of(app).auth.issuer()
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    claims = jwt.decode(await _forged(app), options={"verify_signature": False})
    rogue = jwt.encode(
        claims, rogue_key, algorithm="ES256", headers={"kid": "rogue", "typ": "at+jwt"}
    )
    same_kid = jwt.encode(
        claims, rogue_key, algorithm="ES256", headers={"kid": issuer.key.kid, "typ": "at+jwt"}
    )
    assert (await _me(app, rogue)).status_code == 401
    assert (await _me(app, same_kid)).status_code == 401


async def test_an_id_token_is_not_an_access_token(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    page = await browser.get(authorize_query(scope="openid user-read"))
    answer = await submit(browser, page, username=listener, password=PASSWORD)
    tokens = (await exchange(browser, query_of(answer.headers["location"])["code"])).json()
    assert (await _me(app, tokens["id_token"])).status_code == 401


# --- accounts ---------------------------------------------------------------------------------


async def test_a_disabled_user_cannot_sign_in_or_refresh(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    tokens = (await exchange(browser, await code_for(browser, listener))).json()
    async with resources_of(app).session_factory() as db_session:
        await auth_service.set_disabled(db_session=db_session, username=listener, disabled=True)
        await db_session.commit()

    page = await browser.get(authorize_query())
    answer = await submit(browser, page, username=listener, password=PASSWORD)
    assert answer.status_code == 400
    refresh = await browser.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": WEB_CLIENT_ID,
        },
    )
    assert refresh.json()["error"] == "invalid_grant"


async def test_failed_sign_ins_slow_an_account_down_without_locking_others_out(
    browser: httpx.AsyncClient, listener: str, app: FastAPI
) -> None:
    await create_user(app, "grace", PASSWORD)
    for _ in range(5):
        page = await browser.get(authorize_query())
        wrong = await submit(browser, page, username=listener, password="wrong password!")
        assert wrong.status_code == 400
    page = await browser.get(authorize_query())
    wrong = await submit(browser, page, username=listener, password="wrong password!")
    assert wrong.status_code == 400
    # Past the allowance even the right password must wait; the page says how long.
    page = await browser.get(authorize_query())
    blocked = await submit(browser, page, username=listener, password=PASSWORD)
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) >= 1
    # Another account from the same address is not affected.
    assert await code_for(browser, "grace")


async def _failures_from(app: FastAPI, addresses: list[str], password: str = "wrong!") -> int:
    async with asgi_client(app) as browser:
        statuses = []
        for number, address in enumerate(addresses):
            page = await browser.get(authorize_query())
            answer = await browser.post(
                "/oauth/authorize",
                data={**_fields(page.text), "username": f"nobody{number}", "password": password},
                headers={"X-Forwarded-For": address},
            )
            statuses.append(answer.status_code)
        return statuses.count(429)


def _fields(html: str) -> dict[str, str]:
    from tests.fixtures.browser import read_form

    return read_form(html).fields


async def test_a_spoofed_forwarded_for_does_not_dodge_the_address_throttle(app: FastAPI) -> None:
    # The test client is not a trusted proxy: its X-Forwarded-For is ignored, so 22 failures
    # "from 22 addresses" are 22 failures from one address.
    blocked = await _failures_from(app, [f"203.0.113.{n}" for n in range(22)])
    assert blocked >= 1


async def test_a_trusted_proxy_s_forwarded_for_names_the_client(settings: Settings) -> None:
    behind_proxy = settings.model_copy(update={"trusted_proxies": ["127.0.0.1/32"]})
    application = create_app(behind_proxy)
    async with application.router.lifespan_context(application):
        blocked = await _failures_from(application, [f"203.0.113.{n}" for n in range(22)])
    assert blocked == 0
    assert auth_service.client_address("127.0.0.1", "198.51.100.7, 127.0.0.1", ["127.0.0.1"]) == (
        "198.51.100.7"
    )
    assert auth_service.client_address("192.0.2.9", "198.51.100.7", ["127.0.0.1"]) == "192.0.2.9"


async def test_registration_validates_and_never_echoes_secrets(
    anonymous_client: httpx.AsyncClient,
) -> None:
    good = {"username": "Lin", "email": "lin@example.com", "password": PASSWORD}
    created = await anonymous_client.post("/v1/users", json=good)
    assert created.status_code == 201
    assert set(created.json()) == {"id", "username", "email", "display_name", "roles", "created_at"}
    assert created.json()["roles"] == ["listener"]

    duplicate = await anonymous_client.post(
        "/v1/users", json={**good, "username": "LIN", "email": "other@example.com"}
    )
    common = await anonymous_client.post(
        "/v1/users", json={**good, "username": "bo", "password": "password123"}
    )
    weak = await anonymous_client.post(
        "/v1/users",
        json={**good, "username": "bob", "email": "b@example.com", "password": "iloveyou"},
    )
    short = await anonymous_client.post(
        "/v1/users", json={**good, "username": "bob", "email": "b@example.com", "password": "abc"}
    )
    escalate = await anonymous_client.post(
        "/v1/users",
        json={**good, "username": "mallory", "email": "m@example.com", "roles": ["admin"]},
    )
    bad_email = await anonymous_client.post(
        "/v1/users", json={**good, "username": "zed", "email": "not-an-email"}
    )
    assert duplicate.status_code == 409
    assert common.status_code == 422
    assert weak.status_code == 422
    assert short.status_code == 422
    assert escalate.status_code == 422
    assert bad_email.status_code == 422
    for answer in (duplicate, common, weak, short, escalate, bad_email):
        assert answer.headers["content-type"] == PROBLEM


async def test_registration_can_be_closed(settings: Settings) -> None:
    closed = settings.model_copy(update={"registration_open": False})
    application = create_app(closed)
    async with application.router.lifespan_context(application), asgi_client(application) as http:
        answer = await http.post(
            "/v1/users", json={"username": "lin", "email": "l@example.com", "password": PASSWORD}
        )
    assert answer.status_code == 403


async def test_changing_the_password_needs_the_old_one_and_signs_out_everywhere(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    tokens = (await exchange(browser, await code_for(browser, listener))).json()
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    async with asgi_client(app) as http:
        wrong = await http.patch(
            "/v1/me",
            headers=bearer,
            json={"current_password": "nope nope nope", "new_password": "a brand new passphrase"},
        )
        alone = await http.patch(
            "/v1/me", headers=bearer, json={"new_password": "a brand new passphrase"}
        )
        changed = await http.patch(
            "/v1/me",
            headers=bearer,
            json={
                "current_password": PASSWORD,
                "new_password": "a brand new passphrase",
                "display_name": "Ada L.",
            },
        )
    assert wrong.status_code == 422
    assert alone.status_code == 422
    assert changed.status_code == 200 and changed.json()["display_name"] == "Ada L."
    refresh = await browser.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": WEB_CLIENT_ID,
        },
    )
    assert refresh.json()["error"] == "invalid_grant"
    assert await code_for(browser, listener, password="a brand new passphrase")


async def test_api_keys_are_shown_once_and_private_to_their_owner(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    ada = {"Authorization": f"Bearer {await _token(browser, listener)}"}
    await create_user(app, "eve", PASSWORD)
    eve = {"Authorization": f"Bearer {await _token(browser, 'eve')}"}
    async with asgi_client(app) as http:
        created = await http.post("/v1/me/api-keys", headers=ada, json={"name": "Symfonium"})
        listed = await http.get("/v1/me/api-keys", headers=ada)
        eves = await http.get("/v1/me/api-keys", headers=eve)
        stolen = await http.delete(f"/v1/me/api-keys/{created.json()['id']}", headers=eve)
        key = created.json()["key"]
        async with resources_of(app).session_factory() as db_session:
            owner = await auth_service.user_for_api_key(db_session=db_session, key=key)
        deleted = await http.delete(f"/v1/me/api-keys/{created.json()['id']}", headers=ada)
        async with resources_of(app).session_factory() as db_session:
            after = await auth_service.user_for_api_key(db_session=db_session, key=key)

    assert created.status_code == 201 and key.startswith("enc_")
    assert listed.json()[0]["name"] == "Symfonium" and "key" not in listed.json()[0]
    assert key not in listed.text
    assert eves.json() == []
    assert stolen.status_code == 404
    assert owner is not None and owner.username == listener
    assert deleted.status_code == 204 and after is None


async def test_an_app_password_answers_subsonic_token_and_salt(
    app: FastAPI, browser: httpx.AsyncClient, listener: str
) -> None:
    bearer = {"Authorization": f"Bearer {await _token(browser, listener)}"}
    async with asgi_client(app) as http:
        created = await http.put("/v1/me/app-password", headers=bearer)
        shown = await http.get("/v1/me/app-password", headers=bearer)
    password = created.json()["password"]
    assert shown.json()["exists"] is True and password not in shown.text
    salt = "c19b2d"
    token = hashlib.md5((password + salt).encode(), usedforsecurity=False).hexdigest()
    box = resources_of(app).auth.app_password_box
    async with resources_of(app).session_factory() as db_session:
        good = await auth_service.subsonic_token_matches(
            db_session=db_session, username=listener, token=token, salt=salt, box=box
        )
        bad = await auth_service.subsonic_token_matches(
            db_session=db_session, username=listener, token=token, salt="other1", box=box
        )
    assert good is not None and bad is None
