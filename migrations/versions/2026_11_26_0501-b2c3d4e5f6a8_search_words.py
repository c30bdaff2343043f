"""search: a word index of the search documents, in place of the trigram indexes

Search looks for whole words and word starts only (" radioh", " nirvana "), so each kind's
documents are indexed by word: an exact word is a key look-up and a word start a range read
of the sorted words, where a trigram index read the postings of every trigram of the word.

- SQLite: one FTS5 table per kind (external content, as the trigram tables were) whose
  tokenizer splits on spaces only, as `str.split` does on the folded documents; an `fts5vocab`
  table over each gives every word with its document count (the typo-correction vocabulary).
- PostgreSQL: `search_words` (kind, word, document id), its key a B-tree in byte order
  ("C" collation, so a word start is a range of keys).

Both are kept by triggers on `search_documents`, which the catalog and playlist triggers
write, so every writer and bulk load goes through them. On SQLite a later migration that
rebuilds `search_documents` (batch mode "recreate") drops these triggers: it must create
them again.

Revision ID: b2c3d4e5f6a8
Revises: a1b2c3d4e5f7
Create Date: 2026-11-26 05:01:00
"""

# Every statement here is assembled from constants of this file (kind names, the tokenizer's
# characters), never from data: S608 does not apply.
# ruff: noqa: S608
from __future__ import annotations

import string

import sqlalchemy as sa
from alembic import op

revision = "b2c3d4e5f6a8"
down_revision = "a1b2c3d4e5f7"
branch_labels = None
depends_on = None

SEARCH_KINDS = ("artist", "album", "track", "playlist")

# FTS5's ascii tokenizer keeps non-ASCII characters in words and splits on the ASCII ones
# that are neither letters, digits nor listed here: listing every other ASCII character but
# the space (NUL cannot be written in SQL) makes words what `str.split` makes of a folded
# document ("ac/dc", "r&b", "don't" stay whole).
_WORD_CHARACTERS = (
    string.punctuation + "".join(chr(code) for code in range(1, 32) if chr(code) != " ") + "\x7f"
)


def _sqlite_tokenizer() -> str:
    inner = "ascii tokenchars '" + _WORD_CHARACTERS.replace("'", "''") + "'"
    return '"' + inner.replace('"', '""') + '"'


def _sqlite_document_triggers(table: str) -> list[str]:
    """The three triggers that keep one FTS5 table per kind (search_{table}_<kind>)."""
    inserts = "\n".join(
        f"INSERT INTO search_{table}_{kind}(rowid, doc) SELECT NEW.id, NEW.doc "
        f"WHERE NEW.kind = '{kind}';"
        for kind in SEARCH_KINDS
    )
    deletes = "\n".join(
        f"INSERT INTO search_{table}_{kind}(search_{table}_{kind}, rowid, doc) "
        f"SELECT 'delete', OLD.id, OLD.doc WHERE OLD.kind = '{kind}';"
        for kind in SEARCH_KINDS
    )
    return [
        "CREATE TRIGGER search_documents_ai AFTER INSERT ON search_documents "
        f"BEGIN\n{inserts}\nEND",
        "CREATE TRIGGER search_documents_ad AFTER DELETE ON search_documents "
        f"BEGIN\n{deletes}\nEND",
        "CREATE TRIGGER search_documents_au AFTER UPDATE OF doc, kind ON search_documents "
        f"BEGIN\n{deletes}\n{inserts}\nEND",
    ]


def _drop_sqlite_document_triggers() -> None:
    for name in ("search_documents_ai", "search_documents_ad", "search_documents_au"):
        op.execute(f"DROP TRIGGER {name}")


def _sqlite_upgrade() -> None:
    _drop_sqlite_document_triggers()
    for kind in SEARCH_KINDS:
        op.execute(f"DROP TABLE search_fts_{kind}")
        op.execute(
            f"CREATE VIRTUAL TABLE search_words_{kind} USING fts5(doc, "
            f"content='search_documents', content_rowid='id', tokenize={_sqlite_tokenizer()})"
        )
        op.execute(
            f"CREATE VIRTUAL TABLE search_vocabulary_{kind} "
            f"USING fts5vocab(search_words_{kind}, 'row')"
        )
        # Not 'rebuild': the content table holds every kind's documents.
        op.execute(
            f"INSERT INTO search_words_{kind}(rowid, doc) "
            f"SELECT id, doc FROM search_documents WHERE kind = '{kind}'"
        )
    for statement in _sqlite_document_triggers("words"):
        op.execute(statement)


def _sqlite_downgrade() -> None:
    _drop_sqlite_document_triggers()
    for kind in SEARCH_KINDS:
        op.execute(f"DROP TABLE search_vocabulary_{kind}")
        op.execute(f"DROP TABLE search_words_{kind}")
        op.execute(
            f"CREATE VIRTUAL TABLE search_fts_{kind} USING fts5(doc, "
            "content='search_documents', content_rowid='id', tokenize='trigram')"
        )
        op.execute(
            f"INSERT INTO search_fts_{kind}(rowid, doc) "
            f"SELECT id, doc FROM search_documents WHERE kind = '{kind}'"
        )
    for statement in _sqlite_document_triggers("fts"):
        op.execute(statement)


# A document's words: it is " word word … " with single spaces between words (folded names),
# and two spaces where a field is empty. An update touches only the words that changed: a
# bulk load writes each track's document twice (the track, then its credits), and rewriting
# every word would leave as many dead index entries as live ones until a vacuum.
_PG_WORDS_FUNCTION = """
CREATE FUNCTION search_index_words() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  old_words text[] := CASE WHEN TG_OP = 'INSERT' THEN '{}'::text[]
                           ELSE string_to_array(OLD.doc, ' ') END;
  new_words text[] := CASE WHEN TG_OP = 'DELETE' THEN '{}'::text[]
                           ELSE string_to_array(NEW.doc, ' ') END;
BEGIN
  IF TG_OP = 'UPDATE' AND NEW.kind IS DISTINCT FROM OLD.kind THEN
    DELETE FROM search_words WHERE kind = OLD.kind AND document_id = OLD.id;
    old_words := '{}'::text[];
  END IF;
  IF TG_OP <> 'INSERT' THEN
    DELETE FROM search_words
    WHERE kind = OLD.kind AND document_id = OLD.id
      AND word = ANY (old_words) AND word <> ALL (new_words);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    INSERT INTO search_words (kind, word, document_id)
    SELECT DISTINCT NEW.kind, word, NEW.id
    FROM unnest(new_words) AS word
    WHERE word <> '' AND word <> ALL (old_words);
  END IF;
  RETURN NULL;
END $$
"""


def _postgresql_upgrade() -> None:
    op.create_table(
        "search_words",
        sa.Column("kind", sa.String(length=16), nullable=False),
        # Byte order: a word start is then a range of the key, whatever the database's locale.
        sa.Column("word", sa.Text(collation="C"), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "word", "document_id", name=op.f("pk_search_words")),
    )
    op.execute(
        "INSERT INTO search_words (kind, word, document_id) "
        "SELECT DISTINCT d.kind, w.word, d.id "
        "FROM search_documents d, unnest(string_to_array(d.doc, ' ')) AS w(word) "
        "WHERE w.word <> ''"
    )
    op.execute(_PG_WORDS_FUNCTION)
    op.execute(
        "CREATE TRIGGER search_words AFTER INSERT OR UPDATE OF doc, kind OR DELETE "
        "ON search_documents FOR EACH ROW EXECUTE FUNCTION search_index_words()"
    )
    # The word index answers every look-up the trigram indexes did; keeping them would only
    # slow every catalog write.
    for kind in SEARCH_KINDS:
        op.execute(f"DROP INDEX ix_search_documents_doc_{kind}")


def _postgresql_downgrade() -> None:
    for kind in SEARCH_KINDS:
        op.execute(
            f"CREATE INDEX ix_search_documents_doc_{kind} ON search_documents "
            f"USING gin (doc gin_trgm_ops) WHERE kind = '{kind}'"
        )
    op.execute("DROP TRIGGER search_words ON search_documents")
    op.execute("DROP FUNCTION search_index_words()")
    op.drop_table("search_words")


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_upgrade()
    else:
        _postgresql_upgrade()


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _sqlite_downgrade()
    else:
        _postgresql_downgrade()
