"""Media HTTP API: artist uploads, their status, and album artwork uploads."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Request, Response

from encore.auth.dependencies import require_scopes
from encore.auth.scopes import UPLOAD
from encore.auth.tokens import Principal
from encore.dependencies import ResourcesDep, SessionDep
from encore.media import service
from encore.media.schemas import ArtworkRead, UploadRead
from encore.media.upload_stream import receive_upload
from encore.pagination import Page, PageDep
from encore.problems import Forbidden, InvalidInput

router = APIRouter(prefix="/v1", tags=["uploads"])

Uploader = Annotated[Principal, require_scopes(UPLOAD)]
MAX_ARTWORK_UPLOAD_BYTES = 10 * 1024 * 1024

_UPLOAD_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "title", "artist_id"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "title": {"type": "string"},
                        "artist_id": {"type": "string", "format": "uuid"},
                        "album_id": {"type": "string", "format": "uuid"},
                        "album_title": {"type": "string"},
                        "album_type": {"enum": ["album", "single", "ep", "compilation"]},
                        "release_date": {"type": "string", "format": "date"},
                        "track_number": {"type": "integer"},
                        "disc_number": {"type": "integer"},
                        "featured": {"type": "array", "items": {"type": "string"}},
                        "genres": {"type": "array", "items": {"type": "string"}},
                        "explicit": {"type": "boolean"},
                        "isrc": {"type": "string"},
                    },
                }
            }
        },
    }
}


def _uploader_id(principal: Principal) -> uuid.UUID:
    # The scope says the client may upload; the role says the account is an artist.
    if not principal.roles & {"artist", "admin"} or principal.user_id is None:
        raise Forbidden("uploading needs an artist account")
    return principal.user_id


@router.post(
    "/uploads",
    status_code=202,
    response_model=UploadRead,
    summary="Upload a track",
    openapi_extra=_UPLOAD_FORM,
)
async def create_upload(
    request: Request, principal: Uploader, db_session: SessionDep, resources: ResourcesDep
) -> Response:
    """Send audio (field `file`) and its metadata; processing continues in the background."""
    user_id = _uploader_id(principal)
    settings = resources.settings
    received = await receive_upload(
        content_type=request.headers.get("content-type", ""),
        content_length=request.headers.get("content-length"),
        body=request.stream(),
        file_field="file",
        max_file_bytes=settings.upload_max_bytes,
    )
    try:
        upload = await service.create_upload(
            db_session=db_session,
            store=resources.store,
            settings=settings,
            user_id=user_id,
            received=received,
        )
        # Committed before answering: a client that sees 202 can rely on the upload existing.
        await db_session.commit()
    finally:
        received.discard()
    body = UploadRead.model_validate(upload).model_dump_json()
    return Response(
        body,
        status_code=202,
        media_type="application/json",
        headers={"Location": f"/v1/uploads/{upload.id}"},
    )


@router.get("/uploads", response_model=Page[UploadRead], summary="Your uploads")
async def list_uploads(
    principal: Uploader, db_session: SessionDep, page: PageDep
) -> Page[UploadRead]:
    """Your uploads, newest first."""
    uploads = await service.list_uploads(
        db_session=db_session,
        user_id=_uploader_id(principal),
        limit=page.limit,
        cursor=page.cursor,
    )
    return Page(
        items=[UploadRead.model_validate(u) for u in uploads.items],
        next_cursor=uploads.next_cursor,
    )


@router.get("/uploads/{upload_id}", response_model=UploadRead, summary="An upload's status")
async def get_upload(
    upload_id: uuid.UUID, principal: Uploader, db_session: SessionDep
) -> UploadRead:
    """queued → processing → ready, or failed with a reason you can act on."""
    upload = await service.get_upload(
        db_session=db_session, upload_id=upload_id, user_id=_uploader_id(principal)
    )
    return UploadRead.model_validate(upload)


@router.post(
    "/albums/{album_id}/artwork",
    response_model=ArtworkRead,
    summary="Upload an album's cover",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def upload_artwork(
    album_id: uuid.UUID,
    request: Request,
    principal: Uploader,
    db_session: SessionDep,
    resources: ResourcesDep,
) -> ArtworkRead:
    """A JPEG, PNG or WebP cover (field `file`), re-encoded and stored in 64, 300 and 640 px."""
    user_id = _uploader_id(principal)
    received = await receive_upload(
        content_type=request.headers.get("content-type", ""),
        content_length=request.headers.get("content-length"),
        body=request.stream(),
        file_field="file",
        max_file_bytes=MAX_ARTWORK_UPLOAD_BYTES,
    )
    try:
        if received.file_path is None or received.size == 0:
            raise InvalidInput("attach the image in a part named file")
        image = received.file_path.read_bytes()
    finally:
        received.discard()
    await service.replace_album_artwork(
        db_session=db_session,
        store=resources.store,
        user_id=user_id,
        album_id=album_id,
        image=image,
    )
    return ArtworkRead(
        album_id=album_id,
        artwork_url=f"/v1/albums/{album_id}/artwork",
        sizes=list(service.ARTWORK_SIZES),
    )
