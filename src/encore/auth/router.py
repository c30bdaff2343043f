"""Accounts HTTP API: registration, /v1/me, sessions, API keys and the app password."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Response

from encore.auth import service
from encore.auth.dependencies import require_scopes
from encore.auth.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyRead,
    AppPasswordCreated,
    AppPasswordRead,
    MeUpdate,
    SessionRead,
    UserCreate,
    UserRead,
)
from encore.auth.scopes import USER_MODIFY, USER_READ
from encore.auth.tokens import Principal
from encore.dependencies import ResourcesDep, SessionDep
from encore.problems import Forbidden, InvalidInput

router = APIRouter(prefix="/v1", tags=["accounts"])

Reader = Annotated[Principal, require_scopes(USER_READ)]
Modifier = Annotated[Principal, require_scopes(USER_MODIFY)]


def _user_id(principal: Principal) -> uuid.UUID:
    assert principal.user_id is not None  # require_scopes(user=True) guarantees it
    return principal.user_id


@router.post("/users", status_code=201, response_model=UserRead, summary="Create an account")
async def register(
    body: UserCreate, db_session: SessionDep, resources: ResourcesDep, response: Response
) -> UserRead:
    """Sign up as a listener (when registration is open)."""
    if not resources.settings.registration_open:
        raise Forbidden("registration is closed on this server; ask an administrator")
    user = await service.create_user(
        db_session=db_session,
        username=body.username,
        email=str(body.email),
        password=body.password,
        display_name=body.display_name,
    )
    response.headers["Location"] = "/v1/me"
    return UserRead.model_validate(user)


@router.get("/me", response_model=UserRead, summary="Your account")
async def get_me(principal: Reader, db_session: SessionDep) -> UserRead:
    """The signed-in user's account."""
    return UserRead.model_validate(
        await service.get_user(db_session=db_session, user_id=_user_id(principal))
    )


@router.patch("/me", response_model=UserRead, summary="Change your account")
async def update_me(body: MeUpdate, principal: Modifier, db_session: SessionDep) -> UserRead:
    """Change display name or email; a new password needs the current one and signs you out
    everywhere."""
    user = await service.get_user(db_session=db_session, user_id=_user_id(principal))
    if (body.new_password is None) != (body.current_password is None):
        raise InvalidInput(
            "send current_password and new_password together",
            extra={
                "errors": [
                    {"field": "body.current_password", "message": "needed with new_password"}
                ]
            },
        )
    await service.update_profile(
        db_session=db_session,
        user=user,
        display_name=body.display_name,
        email=str(body.email) if body.email is not None else None,
    )
    if body.new_password is not None and body.current_password is not None:
        await service.change_password(
            db_session=db_session,
            user=user,
            current_password=body.current_password,
            new_password=body.new_password,
        )
    return UserRead.model_validate(user)


@router.get("/me/sessions", response_model=list[SessionRead], summary="Where you are signed in")
async def list_sessions(principal: Reader, db_session: SessionDep) -> list[SessionRead]:
    """Your live sign-ins (one per app and device), most recently used first."""
    sessions = await service.list_sessions(db_session=db_session, user_id=_user_id(principal))
    return [
        SessionRead(
            id=s.id,
            client_id=s.client_id,
            client_name=s.client_name,
            scope=s.scope,
            created_at=s.created_at,
            last_used_at=s.last_used_at,
            expires_at=s.expires_at,
            current=s.id == principal.session_id,
        )
        for s in sessions
    ]


@router.delete("/me/sessions/{session_id}", status_code=204, summary="Sign out a session")
async def revoke_session(
    session_id: uuid.UUID, principal: Modifier, db_session: SessionDep
) -> Response:
    """Revoke one sign-in: its refresh token stops working at once."""
    await service.revoke_session(
        db_session=db_session, user_id=_user_id(principal), session_id=session_id
    )
    return Response(status_code=204)


@router.post(
    "/me/api-keys", status_code=201, response_model=ApiKeyCreated, summary="Create an API key"
)
async def create_api_key(
    body: ApiKeyCreate, principal: Modifier, db_session: SessionDep
) -> ApiKeyCreated:
    """A key for Subsonic apps (OpenSubsonic apiKeyAuthentication); shown only in this answer."""
    created = await service.create_api_key(
        db_session=db_session, user_id=_user_id(principal), name=body.name
    )
    return ApiKeyCreated(**ApiKeyRead.model_validate(created.api_key).model_dump(), key=created.key)


@router.get("/me/api-keys", response_model=list[ApiKeyRead], summary="Your API keys")
async def list_api_keys(principal: Reader, db_session: SessionDep) -> list[ApiKeyRead]:
    """Your API keys, newest first; the keys themselves are never shown again."""
    keys = await service.list_api_keys(db_session=db_session, user_id=_user_id(principal))
    return [ApiKeyRead.model_validate(key) for key in keys]


@router.delete("/me/api-keys/{key_id}", status_code=204, summary="Delete an API key")
async def delete_api_key(
    key_id: uuid.UUID, principal: Modifier, db_session: SessionDep
) -> Response:
    """The key stops working at once."""
    await service.delete_api_key(db_session=db_session, user_id=_user_id(principal), key_id=key_id)
    return Response(status_code=204)


@router.put(
    "/me/app-password",
    status_code=201,
    response_model=AppPasswordCreated,
    summary="Make an app password",
)
async def create_app_password(
    principal: Modifier, db_session: SessionDep, resources: ResourcesDep
) -> AppPasswordCreated:
    """A random password for legacy Subsonic apps (token + salt), replacing any previous one."""
    password = await service.create_app_password(
        db_session=db_session, user_id=_user_id(principal), box=resources.auth.app_password_box
    )
    created_at = await service.app_password_created_at(
        db_session=db_session, user_id=_user_id(principal)
    )
    assert created_at is not None
    return AppPasswordCreated(password=password, created_at=created_at)


@router.get("/me/app-password", response_model=AppPasswordRead, summary="Is an app password set?")
async def get_app_password(principal: Reader, db_session: SessionDep) -> AppPasswordRead:
    """Whether you have an app password (never the password itself)."""
    created_at = await service.app_password_created_at(
        db_session=db_session, user_id=_user_id(principal)
    )
    return AppPasswordRead(exists=created_at is not None, created_at=created_at)


@router.delete("/me/app-password", status_code=204, summary="Delete the app password")
async def delete_app_password(principal: Modifier, db_session: SessionDep) -> Response:
    """Legacy Subsonic apps using it are signed out."""
    await service.delete_app_password(db_session=db_session, user_id=_user_id(principal))
    return Response(status_code=204)
