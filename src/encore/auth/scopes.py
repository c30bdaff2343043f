"""OAuth scopes and which roles may be granted them."""

from __future__ import annotations

from collections.abc import Iterable

from encore.auth.models import Role

USER_READ = "user-read"
USER_MODIFY = "user-modify"
LIBRARY_READ = "library-read"
LIBRARY_MODIFY = "library-modify"
PLAYLIST_READ = "playlist-read"
PLAYLIST_MODIFY = "playlist-modify"
STREAMING = "streaming"
EVENTS_WRITE = "events-write"
UPLOAD = "upload"
ARTIST_STATS = "artist-stats"
ANALYTICS = "analytics"
ADMIN = "admin"
# OpenID Connect: an id token and the userinfo endpoint.
OPENID = "openid"
PROFILE = "profile"
EMAIL = "email"

LISTENER_SCOPES = frozenset(
    {
        USER_READ,
        USER_MODIFY,
        LIBRARY_READ,
        LIBRARY_MODIFY,
        PLAYLIST_READ,
        PLAYLIST_MODIFY,
        STREAMING,
        EVENTS_WRITE,
        OPENID,
        PROFILE,
        EMAIL,
    }
)
SCOPES_BY_ROLE: dict[Role, frozenset[str]] = {
    Role.listener: LISTENER_SCOPES,
    Role.artist: frozenset({UPLOAD, ARTIST_STATS}),
    Role.analyst: frozenset({ANALYTICS}),
    Role.admin: frozenset({ADMIN}),
}
ALL_SCOPES = frozenset().union(*SCOPES_BY_ROLE.values())

SCOPE_DESCRIPTIONS = {
    USER_READ: "See your profile",
    USER_MODIFY: "Change your profile",
    LIBRARY_READ: "See your saved music and likes",
    LIBRARY_MODIFY: "Save and like music for you",
    PLAYLIST_READ: "See your playlists",
    PLAYLIST_MODIFY: "Create and change your playlists",
    STREAMING: "Play music",
    EVENTS_WRITE: "Record what you listen to",
    UPLOAD: "Upload music as your artist",
    ARTIST_STATS: "See how your music is heard",
    ANALYTICS: "Read listening analytics",
    ADMIN: "Administer Encore",
    OPENID: "Know who you are",
    PROFILE: "See your display name",
    EMAIL: "See your email address",
}


def scopes_for_roles(roles: Iterable[str]) -> frozenset[str]:
    """Every scope a user with these roles may be granted (each role includes listener's)."""
    granted = set(LISTENER_SCOPES)
    for role in roles:
        try:
            granted |= SCOPES_BY_ROLE[Role(role)]
        except ValueError:
            continue
    return frozenset(granted)


def parse_scope(text: str | None) -> frozenset[str]:
    """The scopes named in a space-separated `scope` parameter."""
    return frozenset((text or "").split())


def format_scope(scopes: Iterable[str]) -> str:
    """A `scope` parameter value, in a stable order."""
    return " ".join(sorted(set(scopes)))
