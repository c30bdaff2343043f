"""search: a change counter of the search documents, for per-process word vocabularies

Every insert, update or delete of `search_documents` (made by the catalog and playlist
triggers, whatever process or bulk load wrote) bumps `search_revision`, so a process that keeps
the words of the catalog in memory for typo correction reloads them when it changed.

Revision ID: f1a2b3c4d5e6
Revises: e5f6a7b8c9d0
Create Date: 2026-11-26 04:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "f1a2b3c4d5e6"
down_revision = "e5f6a7b8c9d0"
branch_labels = None
depends_on = None

_BUMP = "UPDATE search_revision SET revision = revision + 1 WHERE id = 1"
_SQLITE_TRIGGERS = {
    "search_revision_ai": "AFTER INSERT ON search_documents",
    "search_revision_ad": "AFTER DELETE ON search_documents",
    "search_revision_au": "AFTER UPDATE OF name, doc, kind ON search_documents",
}


def upgrade() -> None:
    op.create_table(
        "search_revision",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_search_revision_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_revision")),
    )
    op.execute("INSERT INTO search_revision (id, revision) VALUES (1, 0)")
    if op.get_bind().dialect.name == "sqlite":
        # SQLite has row triggers only: one bump per row, an in-place write next to the FTS
        # writes of the same row.
        for name, event in _SQLITE_TRIGGERS.items():
            op.execute(f"CREATE TRIGGER {name} {event} BEGIN {_BUMP}; END")
    else:
        # Once per transaction: the catalog triggers write documents one statement per row,
        # and updating one row 100k times in a transaction makes each update walk the chain
        # of its earlier versions (a 100k-track bulk load did not end in 10 minutes). A setting
        # local to the transaction remembers that it bumped already.
        op.execute(
            "CREATE FUNCTION search_bump_revision() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN "
            "IF current_setting('encore.search_revision_bumped', true) IS DISTINCT FROM "
            "txid_current()::text THEN "
            f"{_BUMP}; "
            "PERFORM set_config('encore.search_revision_bumped', txid_current()::text, true); "
            "END IF; RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER search_revision AFTER INSERT OR UPDATE OF name, doc, kind OR DELETE "
            "ON search_documents FOR EACH STATEMENT EXECUTE FUNCTION search_bump_revision()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in _SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {name}")
    else:
        op.execute("DROP TRIGGER search_revision ON search_documents")
        op.execute("DROP FUNCTION search_bump_revision()")
    op.drop_table("search_revision")
