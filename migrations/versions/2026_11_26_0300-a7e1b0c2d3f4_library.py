"""library (playlists, likes, follows, search indexes)

Revision ID: a7e1b0c2d3f4
Revises: 90712dd2ed77
Create Date: 2026-11-26 03:00:00

Search documents are kept by triggers on the catalog and playlist tables. On SQLite a later
migration that rebuilds one of those tables (Alembic batch mode "recreate") drops the
triggers with the old table: such a migration must create them again.
"""

# Every statement here is assembled from constants of this file (table, column and kind
# names), never from data: S608 does not apply.
# ruff: noqa: S608
from __future__ import annotations

import re
import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "a7e1b0c2d3f4"
down_revision = "90712dd2ed77"
branch_labels = None
depends_on = None

SEARCH_KINDS = ("artist", "album", "track", "playlist")


def _fold(text: str) -> str:
    # The same folding as encore.catalog.service.name_key, copied: migrations stay runnable
    # whatever the application code becomes.
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())


def _library_tables() -> None:
    op.create_table(
        "playlists",
        sa.Column("owner_user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("name_key", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("collaborative", sa.Boolean(), nullable=False),
        sa.Column("cover_key", sa.String(length=1024), nullable=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_user_id"],
            ["users.id"],
            name=op.f("fk_playlists_owner_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playlists")),
    )
    op.create_index(op.f("ix_playlists_owner_user_id"), "playlists", ["owner_user_id"])

    op.create_table(
        "playlist_items",
        sa.Column("playlist_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("track_id", sa.Uuid(), nullable=False),
        sa.Column("added_by_user_id", sa.Uuid(), nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["added_by_user_id"],
            ["users.id"],
            name=op.f("fk_playlist_items_added_by_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["playlist_id"],
            ["playlists.id"],
            name=op.f("fk_playlist_items_playlist_id_playlists"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["track_id"],
            ["tracks.id"],
            name=op.f("fk_playlist_items_track_id_tracks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playlist_items")),
    )
    op.create_index(
        op.f("ix_playlist_items_added_by_user_id"), "playlist_items", ["added_by_user_id"]
    )
    op.create_index(
        "ix_playlist_items_playlist_position", "playlist_items", ["playlist_id", "position"]
    )
    op.create_index(op.f("ix_playlist_items_track_id"), "playlist_items", ["track_id"])

    op.create_table(
        "playlist_collaborators",
        sa.Column("playlist_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["playlist_id"],
            ["playlists.id"],
            name=op.f("fk_playlist_collaborators_playlist_id_playlists"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_playlist_collaborators_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("playlist_id", "user_id", name=op.f("pk_playlist_collaborators")),
    )
    op.create_index(
        op.f("ix_playlist_collaborators_user_id"), "playlist_collaborators", ["user_id"]
    )

    for table, column, target in (
        ("liked_tracks", "track_id", "tracks"),
        ("liked_albums", "album_id", "albums"),
        ("followed_artists", "artist_id", "artists"),
        ("followed_playlists", "playlist_id", "playlists"),
    ):
        op.create_table(
            table,
            sa.Column("user_id", sa.Uuid(), nullable=False),
            sa.Column(column, sa.Uuid(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(
                [column],
                [f"{target}.id"],
                name=op.f(f"fk_{table}_{column}_{target}"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["user_id"],
                ["users.id"],
                name=op.f(f"fk_{table}_user_id_users"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint("user_id", column, name=op.f(f"pk_{table}")),
        )
        op.create_index(op.f(f"ix_{table}_{column}"), table, [column])
        op.create_index(f"ix_{table}_newest", table, ["user_id", "created_at", column])


def _track_title_keys() -> None:
    # Search indexes folded titles; existing tracks get theirs here, new ones from the catalog.
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # A NOT NULL column needs a default on SQLite's ALTER TABLE; recreating the table
        # instead would cascade-delete every credit and playlist item pointing at it.
        op.execute("ALTER TABLE tracks ADD COLUMN title_key VARCHAR(500) NOT NULL DEFAULT ''")
    else:
        op.add_column("tracks", sa.Column("title_key", sa.String(length=500), nullable=True))
    tracks = sa.table("tracks", sa.column("id", sa.Uuid()), sa.column("title", sa.String()))
    rows = bind.execute(sa.select(tracks.c.id, tracks.c.title)).all()
    if rows:
        bind.execute(
            sa.text("UPDATE tracks SET title_key = :key WHERE id = :track_id").bindparams(
                sa.bindparam("track_id", type_=sa.Uuid())
            ),
            [{"key": _fold(title)[:500], "track_id": track_id} for track_id, title in rows],
        )
    if bind.dialect.name != "sqlite":
        op.alter_column("tracks", "title_key", nullable=False)


def _search_table() -> None:
    op.create_table(
        "search_documents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("doc", sa.Text(), nullable=False),
        sa.Column("owner_user_id", sa.Uuid(), nullable=True),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_documents")),
        sa.UniqueConstraint("entity_id", name=op.f("uq_search_documents_entity_id")),
    )
    op.create_index("ix_search_documents_kind", "search_documents", ["kind"])


# ---------------------------------------------------------------------------------------------
# Documents as SQL: the same shape on both databases, so both search the same text.


def _artist_names(dialect: str, credits: str, owner_column: str, owner: str) -> str:
    if dialect == "sqlite":
        # SQLite's group_concat keeps the order of a sub-select.
        return (
            f"(SELECT group_concat(name_key, ' ') FROM (SELECT a.name_key FROM {credits} c "
            f"JOIN artists a ON a.id = c.artist_id WHERE c.{owner_column} = {owner} "
            "ORDER BY c.position))"
        )
    return (
        f"(SELECT string_agg(a.name_key, ' ' ORDER BY c.position) FROM {credits} c "
        f"JOIN artists a ON a.id = c.artist_id WHERE c.{owner_column} = {owner})"
    )


def _track_doc(dialect: str, track: str) -> str:
    names = _artist_names(dialect, "track_artists", "track_id", "t.id")
    return (
        f"(SELECT ' ' || t.title_key || ' ' || coalesce({names}, '') || ' ' || al.title_key "
        f"|| ' ' FROM tracks t JOIN albums al ON al.id = t.album_id WHERE t.id = {track})"
    )


def _album_doc(dialect: str, album: str) -> str:
    names = _artist_names(dialect, "album_artists", "album_id", "al.id")
    return (
        f"(SELECT ' ' || al.title_key || ' ' || coalesce({names}, '') || ' ' "
        f"FROM albums al WHERE al.id = {album})"
    )


def _backfill_documents(dialect: str) -> None:
    true = "1" if dialect == "sqlite" else "true"
    op.execute(
        "INSERT INTO search_documents (entity_id, kind, name, doc, is_public) "
        f"SELECT id, 'artist', name_key, ' ' || name_key || ' ', {true} FROM artists"
    )
    op.execute(
        "INSERT INTO search_documents (entity_id, kind, name, doc, is_public) "
        f"SELECT al.id, 'album', al.title_key, {_album_doc(dialect, 'al.id')}, {true} "
        "FROM albums al"
    )
    op.execute(
        "INSERT INTO search_documents (entity_id, kind, name, doc, is_public) "
        f"SELECT tr.id, 'track', tr.title_key, {_track_doc(dialect, 'tr.id')}, {true} "
        "FROM tracks tr"
    )


def _sqlite_search() -> None:
    track_doc = _track_doc("sqlite", "{id}")
    album_doc = _album_doc("sqlite", "{id}")

    def track_doc_of(expr: str) -> str:
        return track_doc.replace("{id}", expr)

    def album_doc_of(expr: str) -> str:
        return album_doc.replace("{id}", expr)

    # In the UPDATE statements below a document is rebuilt with coalesce(new, old): while a
    # cascade deletes an album, its tracks' credits go before the track rows, and their new
    # document (the album gone) is NULL. The rows themselves go a moment later.

    for kind in SEARCH_KINDS:
        # One trigram index per kind, over the documents table (external content): a search
        # of tracks never walks artists' postings, and each kind's candidate cap is its own.
        op.execute(
            f"CREATE VIRTUAL TABLE search_fts_{kind} USING fts5(doc, "
            "content='search_documents', content_rowid='id', tokenize='trigram')"
        )
    inserts = "\n".join(
        f"INSERT INTO search_fts_{kind}(rowid, doc) SELECT NEW.id, NEW.doc "
        f"WHERE NEW.kind = '{kind}';"
        for kind in SEARCH_KINDS
    )
    deletes = "\n".join(
        f"INSERT INTO search_fts_{kind}(search_fts_{kind}, rowid, doc) "
        f"SELECT 'delete', OLD.id, OLD.doc WHERE OLD.kind = '{kind}';"
        for kind in SEARCH_KINDS
    )
    statements = [
        "CREATE TRIGGER search_documents_ai AFTER INSERT ON search_documents "
        f"BEGIN\n{inserts}\nEND",
        "CREATE TRIGGER search_documents_ad AFTER DELETE ON search_documents "
        f"BEGIN\n{deletes}\nEND",
        "CREATE TRIGGER search_documents_au AFTER UPDATE OF doc, kind ON search_documents "
        f"BEGIN\n{deletes}\n{inserts}\nEND",
        # Artists
        "CREATE TRIGGER search_artists_ai AFTER INSERT ON artists BEGIN "
        "INSERT INTO search_documents (entity_id, kind, name, doc, is_public) "
        "VALUES (NEW.id, 'artist', NEW.name_key, ' ' || NEW.name_key || ' ', 1); END",
        "CREATE TRIGGER search_artists_renamed AFTER UPDATE OF name_key ON artists "
        "WHEN NEW.name_key IS NOT OLD.name_key BEGIN "
        "UPDATE search_documents SET name = NEW.name_key, doc = ' ' || NEW.name_key || ' ' "
        "WHERE entity_id = NEW.id; "
        "UPDATE search_documents SET doc = "
        f"coalesce({track_doc_of('search_documents.entity_id')}, doc) "
        "WHERE entity_id IN (SELECT track_id FROM track_artists WHERE artist_id = NEW.id); "
        "UPDATE search_documents SET doc = "
        f"coalesce({album_doc_of('search_documents.entity_id')}, doc) "
        "WHERE entity_id IN (SELECT album_id FROM album_artists WHERE artist_id = NEW.id); END",
        "CREATE TRIGGER search_artists_ad AFTER DELETE ON artists BEGIN "
        "DELETE FROM search_documents WHERE entity_id = OLD.id; END",
        # Albums and their credits
        "CREATE TRIGGER search_albums_ai AFTER INSERT ON albums BEGIN "
        "INSERT INTO search_documents (entity_id, kind, name, doc, is_public) "
        f"VALUES (NEW.id, 'album', NEW.title_key, {album_doc_of('NEW.id')}, 1); END",
        "CREATE TRIGGER search_albums_renamed AFTER UPDATE OF title_key ON albums "
        "WHEN NEW.title_key IS NOT OLD.title_key BEGIN "
        "UPDATE search_documents SET name = NEW.title_key, "
        f"doc = coalesce({album_doc_of('NEW.id')}, doc) "
        "WHERE entity_id = NEW.id; "
        "UPDATE search_documents SET doc = "
        f"coalesce({track_doc_of('search_documents.entity_id')}, doc) "
        "WHERE entity_id IN (SELECT id FROM tracks WHERE album_id = NEW.id); END",
        "CREATE TRIGGER search_albums_ad AFTER DELETE ON albums BEGIN "
        "DELETE FROM search_documents WHERE entity_id = OLD.id; END",
        "CREATE TRIGGER search_album_artists_ai AFTER INSERT ON album_artists BEGIN "
        f"UPDATE search_documents SET doc = coalesce({album_doc_of('NEW.album_id')}, doc) "
        "WHERE entity_id = NEW.album_id; END",
        "CREATE TRIGGER search_album_artists_au AFTER UPDATE ON album_artists BEGIN "
        f"UPDATE search_documents SET doc = coalesce({album_doc_of('OLD.album_id')}, doc) "
        "WHERE entity_id = OLD.album_id; "
        f"UPDATE search_documents SET doc = coalesce({album_doc_of('NEW.album_id')}, doc) "
        "WHERE entity_id = NEW.album_id; END",
        "CREATE TRIGGER search_album_artists_ad AFTER DELETE ON album_artists BEGIN "
        f"UPDATE search_documents SET doc = coalesce({album_doc_of('OLD.album_id')}, doc) "
        "WHERE entity_id = OLD.album_id; END",
        # Tracks and their credits
        "CREATE TRIGGER search_tracks_ai AFTER INSERT ON tracks BEGIN "
        "INSERT INTO search_documents (entity_id, kind, name, doc, is_public) "
        f"VALUES (NEW.id, 'track', NEW.title_key, {track_doc_of('NEW.id')}, 1); END",
        "CREATE TRIGGER search_tracks_renamed AFTER UPDATE OF title_key, album_id ON tracks BEGIN "
        "UPDATE search_documents SET name = NEW.title_key, "
        f"doc = coalesce({track_doc_of('NEW.id')}, doc) "
        "WHERE entity_id = NEW.id; END",
        "CREATE TRIGGER search_tracks_ad AFTER DELETE ON tracks BEGIN "
        "DELETE FROM search_documents WHERE entity_id = OLD.id; END",
        "CREATE TRIGGER search_track_artists_ai AFTER INSERT ON track_artists BEGIN "
        f"UPDATE search_documents SET doc = coalesce({track_doc_of('NEW.track_id')}, doc) "
        "WHERE entity_id = NEW.track_id; END",
        "CREATE TRIGGER search_track_artists_au AFTER UPDATE ON track_artists BEGIN "
        f"UPDATE search_documents SET doc = coalesce({track_doc_of('OLD.track_id')}, doc) "
        "WHERE entity_id = OLD.track_id; "
        f"UPDATE search_documents SET doc = coalesce({track_doc_of('NEW.track_id')}, doc) "
        "WHERE entity_id = NEW.track_id; END",
        "CREATE TRIGGER search_track_artists_ad AFTER DELETE ON track_artists BEGIN "
        f"UPDATE search_documents SET doc = coalesce({track_doc_of('OLD.track_id')}, doc) "
        "WHERE entity_id = OLD.track_id; END",
        # Playlists
        "CREATE TRIGGER search_playlists_ai AFTER INSERT ON playlists BEGIN "
        "INSERT INTO search_documents "
        "(entity_id, kind, name, doc, owner_user_id, is_public) "
        "VALUES (NEW.id, 'playlist', NEW.name_key, ' ' || NEW.name_key || ' ', "
        "NEW.owner_user_id, NEW.is_public); END",
        "CREATE TRIGGER search_playlists_au AFTER UPDATE OF name_key, is_public, owner_user_id "
        "ON playlists BEGIN "
        "UPDATE search_documents SET name = NEW.name_key, doc = ' ' || NEW.name_key || ' ', "
        "owner_user_id = NEW.owner_user_id, is_public = NEW.is_public "
        "WHERE entity_id = NEW.id; END",
        "CREATE TRIGGER search_playlists_ad AFTER DELETE ON playlists BEGIN "
        "DELETE FROM search_documents WHERE entity_id = OLD.id; END",
    ]
    for statement in statements:
        op.execute(statement)


_PG_FUNCTIONS = """
CREATE FUNCTION search_track_doc(track uuid) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT {track_doc}
$$;
CREATE FUNCTION search_album_doc(album uuid) RETURNS text LANGUAGE sql STABLE AS $$
  SELECT {album_doc}
$$;
CREATE FUNCTION search_on_artists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO search_documents (entity_id, kind, name, doc, is_public)
    VALUES (NEW.id, 'artist', NEW.name_key, ' ' || NEW.name_key || ' ', true);
  ELSIF TG_OP = 'UPDATE' THEN
    IF NEW.name_key IS DISTINCT FROM OLD.name_key THEN
      UPDATE search_documents SET name = NEW.name_key, doc = ' ' || NEW.name_key || ' '
      WHERE entity_id = NEW.id;
      UPDATE search_documents SET doc = coalesce(search_track_doc(entity_id), doc)
      WHERE entity_id IN (SELECT track_id FROM track_artists WHERE artist_id = NEW.id);
      UPDATE search_documents SET doc = coalesce(search_album_doc(entity_id), doc)
      WHERE entity_id IN (SELECT album_id FROM album_artists WHERE artist_id = NEW.id);
    END IF;
  ELSE
    DELETE FROM search_documents WHERE entity_id = OLD.id;
  END IF;
  RETURN NULL;
END $$;
CREATE FUNCTION search_on_albums() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO search_documents (entity_id, kind, name, doc, is_public)
    VALUES (NEW.id, 'album', NEW.title_key, search_album_doc(NEW.id), true);
  ELSIF TG_OP = 'UPDATE' THEN
    IF NEW.title_key IS DISTINCT FROM OLD.title_key THEN
      UPDATE search_documents
      SET name = NEW.title_key, doc = coalesce(search_album_doc(NEW.id), doc)
      WHERE entity_id = NEW.id;
      UPDATE search_documents SET doc = coalesce(search_track_doc(entity_id), doc)
      WHERE entity_id IN (SELECT id FROM tracks WHERE album_id = NEW.id);
    END IF;
  ELSE
    DELETE FROM search_documents WHERE entity_id = OLD.id;
  END IF;
  RETURN NULL;
END $$;
CREATE FUNCTION search_on_album_artists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE search_documents SET doc = coalesce(search_album_doc(OLD.album_id), doc)
    WHERE entity_id = OLD.album_id;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    UPDATE search_documents SET doc = coalesce(search_album_doc(NEW.album_id), doc)
    WHERE entity_id = NEW.album_id;
  END IF;
  RETURN NULL;
END $$;
CREATE FUNCTION search_on_tracks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO search_documents (entity_id, kind, name, doc, is_public)
    VALUES (NEW.id, 'track', NEW.title_key, search_track_doc(NEW.id), true);
  ELSIF TG_OP = 'UPDATE' THEN
    IF NEW.title_key IS DISTINCT FROM OLD.title_key OR NEW.album_id IS DISTINCT FROM OLD.album_id
    THEN
      UPDATE search_documents
      SET name = NEW.title_key, doc = coalesce(search_track_doc(NEW.id), doc)
      WHERE entity_id = NEW.id;
    END IF;
  ELSE
    DELETE FROM search_documents WHERE entity_id = OLD.id;
  END IF;
  RETURN NULL;
END $$;
CREATE FUNCTION search_on_track_artists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    UPDATE search_documents SET doc = coalesce(search_track_doc(OLD.track_id), doc)
    WHERE entity_id = OLD.track_id;
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    UPDATE search_documents SET doc = coalesce(search_track_doc(NEW.track_id), doc)
    WHERE entity_id = NEW.track_id;
  END IF;
  RETURN NULL;
END $$;
CREATE FUNCTION search_on_playlists() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO search_documents (entity_id, kind, name, doc, owner_user_id, is_public)
    VALUES (NEW.id, 'playlist', NEW.name_key, ' ' || NEW.name_key || ' ',
            NEW.owner_user_id, NEW.is_public);
  ELSIF TG_OP = 'UPDATE' THEN
    UPDATE search_documents SET name = NEW.name_key, doc = ' ' || NEW.name_key || ' ',
      owner_user_id = NEW.owner_user_id, is_public = NEW.is_public
    WHERE entity_id = NEW.id;
  ELSE
    DELETE FROM search_documents WHERE entity_id = OLD.id;
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER search_artists AFTER INSERT OR UPDATE OF name_key OR DELETE
  ON artists FOR EACH ROW EXECUTE FUNCTION search_on_artists();
CREATE TRIGGER search_albums AFTER INSERT OR UPDATE OF title_key OR DELETE
  ON albums FOR EACH ROW EXECUTE FUNCTION search_on_albums();
CREATE TRIGGER search_album_artists AFTER INSERT OR UPDATE OR DELETE
  ON album_artists FOR EACH ROW EXECUTE FUNCTION search_on_album_artists();
CREATE TRIGGER search_tracks AFTER INSERT OR UPDATE OF title_key, album_id OR DELETE
  ON tracks FOR EACH ROW EXECUTE FUNCTION search_on_tracks();
CREATE TRIGGER search_track_artists AFTER INSERT OR UPDATE OR DELETE
  ON track_artists FOR EACH ROW EXECUTE FUNCTION search_on_track_artists();
CREATE TRIGGER search_playlists AFTER INSERT OR UPDATE OF name_key, is_public, owner_user_id
  OR DELETE ON playlists FOR EACH ROW EXECUTE FUNCTION search_on_playlists();
"""

_PG_TRIGGERS = (
    ("search_artists", "artists"),
    ("search_albums", "albums"),
    ("search_album_artists", "album_artists"),
    ("search_tracks", "tracks"),
    ("search_track_artists", "track_artists"),
    ("search_playlists", "playlists"),
)
_PG_FUNCTION_NAMES = (
    "search_on_artists()",
    "search_on_albums()",
    "search_on_album_artists()",
    "search_on_tracks()",
    "search_on_track_artists()",
    "search_on_playlists()",
    "search_track_doc(uuid)",
    "search_album_doc(uuid)",
)


def _postgresql_search() -> None:
    # pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may create it.
    # Accents are folded in Python into the *_key columns, the same on both databases, so
    # unaccent is not needed.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for kind in SEARCH_KINDS:
        # Partial indexes, one per kind: the planner picks them for `kind = '<literal>'`.
        op.execute(
            f"CREATE INDEX ix_search_documents_doc_{kind} ON search_documents "
            f"USING gin (doc gin_trgm_ops) WHERE kind = '{kind}'"
        )
    body = _PG_FUNCTIONS.replace("{track_doc}", _track_doc("postgresql", "track")).replace(
        "{album_doc}", _album_doc("postgresql", "album")
    )
    # asyncpg runs one statement per call; every statement of the script starts a line
    # with CREATE.
    for statement in re.split(r";\n(?=CREATE )", body.strip()):
        op.execute(statement)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    _library_tables()
    _track_title_keys()
    _search_table()
    _backfill_documents(dialect)
    if dialect == "sqlite":
        _sqlite_search()
        for kind in SEARCH_KINDS:
            op.execute(
                f"INSERT INTO search_fts_{kind}(rowid, doc) "
                f"SELECT id, doc FROM search_documents WHERE kind = '{kind}'"
            )
    else:
        _postgresql_search()


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        triggers = op.get_bind().execute(
            sa.text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'search%'")
        )
        for (name,) in triggers.all():
            op.execute(f"DROP TRIGGER {name}")
        for kind in SEARCH_KINDS:
            op.execute(f"DROP TABLE search_fts_{kind}")
    else:
        for trigger, table in _PG_TRIGGERS:
            op.execute(f"DROP TRIGGER {trigger} ON {table}")
        for function in _PG_FUNCTION_NAMES:
            op.execute(f"DROP FUNCTION {function}")
        # pg_trgm stays: extensions are database-wide and other schemas may rely on it.
    op.drop_table("search_documents")
    op.execute("ALTER TABLE tracks DROP COLUMN title_key")
    for table in (
        "followed_playlists",
        "followed_artists",
        "liked_albums",
        "liked_tracks",
        "playlist_collaborators",
        "playlist_items",
        "playlists",
    ):
        op.drop_table(table)
