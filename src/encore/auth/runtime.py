"""What the auth domain keeps per process: the master key, signing keys, issuer and verifier."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from encore.auth import service as auth_service
from encore.auth.secrets import SecretBox, derive_key, load_master_key
from encore.auth.tokens import (
    KeyPair,
    TokenIssuer,
    TokenVerifier,
    create_signing_key,
    load_signing_keys,
)
from encore.config import Settings

SIGNING_KEY_PURPOSE = "signing-key"
# A process re-reads the signing key this often, so a rotation reaches every process.
_ISSUER_REFRESH_S = 60.0


@dataclass
class AuthRuntime:
    """Keys and token machinery of one process, shared by every request."""

    settings: Settings
    session_factory: async_sessionmaker[AsyncSession]
    signing_box: SecretBox
    app_password_box: SecretBox
    form_key: bytes
    verifier: TokenVerifier
    _issuer: TokenIssuer | None = None
    _issuer_loaded_at: float = field(default=float("-inf"))

    @property
    def keep_retired_keys_for(self) -> timedelta:
        """How long a retired key stays published: its last tokens must still verify."""
        return timedelta(minutes=self.settings.access_token_minutes) + timedelta(
            seconds=_ISSUER_REFRESH_S * 2
        )

    @classmethod
    async def start(
        cls,
        settings: Settings,
        session_factory: async_sessionmaker[AsyncSession],
        master_key: bytes | None = None,
    ) -> AuthRuntime:
        """Make sure a signing key and the web client exist (master key loaded if not given)."""
        master_key = master_key if master_key is not None else load_master_key(settings)
        signing_box = SecretBox.for_purpose(master_key, SIGNING_KEY_PURPOSE)

        async def reload_public_keys() -> list[KeyPair]:
            async with session_factory() as db_session:
                return await load_signing_keys(
                    db_session=db_session, box=None, keep_retired_for=runtime.keep_retired_keys_for
                )

        runtime = cls(
            settings=settings,
            session_factory=session_factory,
            signing_box=signing_box,
            app_password_box=SecretBox.for_purpose(master_key, auth_service.APP_PASSWORD_PURPOSE),
            form_key=derive_key(master_key, "html-forms"),
            verifier=TokenVerifier(
                issuer=settings.issuer,
                audience=settings.public_url,
                reload_keys=reload_public_keys,
            ),
        )
        async with session_factory() as db_session:
            keys = await load_signing_keys(
                db_session=db_session,
                box=signing_box,
                keep_retired_for=runtime.keep_retired_keys_for,
            )
            if not any(key.retired_at is None for key in keys):
                await create_signing_key(db_session=db_session, box=signing_box)
            await auth_service.ensure_web_client(
                db_session=db_session,
                redirect_uris=settings.web_client_redirect_uris
                or [f"{settings.public_url}/callback"],
            )
            await db_session.commit()
        await runtime.refresh_keys()
        return runtime

    async def refresh_keys(self) -> list[KeyPair]:
        """Re-read the signing keys: the newest signs, all published ones verify."""
        async with self.session_factory() as db_session:
            keys = await load_signing_keys(
                db_session=db_session,
                box=self.signing_box,
                keep_retired_for=self.keep_retired_keys_for,
            )
        current = next((key for key in keys if key.retired_at is None), None)
        if current is None:
            raise RuntimeError("no signing key: run `encore keys rotate`")
        self._issuer = TokenIssuer(
            issuer=self.settings.issuer,
            audience=self.settings.public_url,
            access_token_lifetime=timedelta(minutes=self.settings.access_token_minutes),
            key=current,
        )
        self._issuer_loaded_at = time.monotonic()
        self.verifier.use_keys(keys)
        return keys

    async def issuer(self) -> TokenIssuer:
        """The token issuer with the current signing key."""
        if self._issuer is None or time.monotonic() - self._issuer_loaded_at > _ISSUER_REFRESH_S:
            await self.refresh_keys()
        assert self._issuer is not None
        return self._issuer
