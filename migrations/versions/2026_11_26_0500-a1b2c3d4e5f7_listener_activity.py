"""analytics: listener activity rollups (active days, sessions, cohorts), backfilled

Engagement and retention are served from tables the listening consumer keeps (see
`encore.events.activity`) instead of scans of the lake. This creates them and fills them from
the events the listening consumer has already applied: those of `counted_events` whose
bodies are in the database's `event_log`. Events the consumer has not reached yet are left
to it, so none counts twice.

Streams per day (for engagement) come from `daily_track_stats`, and an artist's unique
listeners are counted from `daily_artist_listener_gaps` (listeners per
day by days since each last streamed the artist), filled here from `daily_artist_listeners`,
which every deployment has.

With the JetStream event log the bodies are not in the database (only their ids are, in
`counted_events`), and the listening history keeps only plays of 30 s or more, not the
starts, progress and short skips that make an account active and extend its sessions: the
tables then start empty and count from the events the consumer applies after the upgrade.

The computation is spelled out here, not imported, so that this revision keeps meaning what
it meant when later code changes.

Revision ID: a1b2c3d4e5f7
Revises: f1a2b3c4d5e6
Create Date: 2026-11-26 05:00:00
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "a1b2c3d4e5f7"
down_revision = "f1a2b3c4d5e6"
branch_labels = None
depends_on = None

_PLAY_TYPES = frozenset({"play_start", "play_progress", "play_end", "skip"})
_PLAY_END_TYPES = frozenset({"play_end", "skip"})
_SESSION_GAP = timedelta(minutes=30)
_GAP_CAP_DAYS = 731
_CHUNK = 5_000


def upgrade() -> None:
    op.create_table(
        "listener_days",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "day", name=op.f("pk_listener_days")),
    )
    op.create_table(
        "daily_active_listeners",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("days_since_active", sa.Integer(), nullable=False),
        sa.Column("listeners", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "days_since_active", name=op.f("pk_daily_active_listeners")),
    )
    op.create_table(
        "listening_sessions",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("plays", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_listening_sessions")),
    )
    with op.batch_alter_table("listening_sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_listening_sessions_user_ended", ["user_id", "ended_at"], unique=False
        )
    op.create_table(
        "daily_listening_stats",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sessions", sa.BigInteger(), nullable=False),
        sa.Column("session_us", sa.BigInteger(), nullable=False),
        sa.Column("session_plays", sa.BigInteger(), nullable=False),
        sa.Column("streams", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_daily_listening_stats")),
    )
    op.create_table(
        "listener_cohort_activity",
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("cohort", sa.Date(), nullable=False),
        sa.Column("active", sa.Date(), nullable=False),
        sa.Column("listeners", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "period", "cohort", "active", name=op.f("pk_listener_cohort_activity")
        ),
    )
    op.create_table(
        "daily_artist_listener_gaps",
        sa.Column("artist_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("days_since_listened", sa.Integer(), nullable=False),
        sa.Column("listeners", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "artist_id", "day", "days_since_listened", name=op.f("pk_daily_artist_listener_gaps")
        ),
    )
    _backfill(op.get_bind())
    _backfill_artist_listener_gaps(op.get_bind())


def downgrade() -> None:
    for table in (
        "daily_artist_listener_gaps",
        "listener_cohort_activity",
        "daily_listening_stats",
        "listening_sessions",
        "daily_active_listeners",
        "listener_days",
    ):
        op.drop_table(table)


# --- the backfill ---------------------------------------------------------------------------

_event_log = sa.table(
    "event_log",
    sa.column("user_id", sa.Uuid()),
    sa.column("event_id", sa.Uuid()),
    sa.column("body", sa.Text()),
)
_counted = sa.table(
    "counted_events", sa.column("user_id", sa.Uuid()), sa.column("event_id", sa.Uuid())
)
_listener_days = sa.table(
    "listener_days", sa.column("user_id", sa.Uuid()), sa.column("day", sa.Date())
)
_active_listeners = sa.table(
    "daily_active_listeners",
    sa.column("day", sa.Date()),
    sa.column("days_since_active", sa.Integer()),
    sa.column("listeners", sa.BigInteger()),
)
_cohort_activity = sa.table(
    "listener_cohort_activity",
    sa.column("period", sa.String()),
    sa.column("cohort", sa.Date()),
    sa.column("active", sa.Date()),
    sa.column("listeners", sa.BigInteger()),
)
_listening_stats = sa.table(
    "daily_listening_stats",
    sa.column("day", sa.Date()),
    sa.column("sessions", sa.BigInteger()),
    sa.column("session_us", sa.BigInteger()),
    sa.column("session_plays", sa.BigInteger()),
    sa.column("streams", sa.BigInteger()),
)
_track_stats = sa.table(
    "daily_track_stats", sa.column("day", sa.Date()), sa.column("streams", sa.BigInteger())
)
_sessions = sa.table(
    "listening_sessions",
    sa.column("id", sa.Uuid()),
    sa.column("user_id", sa.Uuid()),
    sa.column("started_at", sa.DateTime(timezone=True)),
    sa.column("ended_at", sa.DateTime(timezone=True)),
    sa.column("plays", sa.BigInteger()),
)


def _plays_by_account(
    connection: sa.Connection,
) -> Iterator[tuple[uuid.UUID, list[tuple[datetime, datetime]]]]:
    """Each account's applied play events as (start, end), account after account."""
    key = sa.tuple_(_event_log.c.user_id, _event_log.c.event_id)
    query = (
        sa.select(_event_log.c.user_id, _event_log.c.event_id, _event_log.c.body)
        .join(
            _counted,
            sa.and_(
                _counted.c.user_id == _event_log.c.user_id,
                _counted.c.event_id == _event_log.c.event_id,
            ),
        )
        .order_by(_event_log.c.user_id, _event_log.c.event_id)
        .limit(_CHUNK)
    )
    current: uuid.UUID | None = None
    plays: list[tuple[datetime, datetime]] = []
    after: tuple[uuid.UUID, uuid.UUID] | None = None
    while True:
        # Pages in key order, each read whole: no cursor stays open while the rows are written.
        page = connection.execute(
            query if after is None else query.where(key > sa.tuple_(*after))
        ).all()
        if not page:
            break
        after = (page[-1].user_id, page[-1].event_id)
        for user_id, _event_id, body in page:
            event = json.loads(body)
            if event.get("type") not in _PLAY_TYPES:
                continue
            if user_id != current:
                if current is not None and plays:
                    yield current, plays
                current, plays = user_id, []
            ended = datetime.fromisoformat(event["occurred_at"]).astimezone(UTC)
            started = ended
            if event["type"] in _PLAY_END_TYPES and event.get("ms_played") is not None:
                started = ended - timedelta(milliseconds=int(event["ms_played"]))
            plays.append((started, ended))
    if current is not None and plays:
        yield current, plays


def _period_starts(day: date) -> dict[str, date]:
    return {"week": day - timedelta(days=day.weekday()), "month": day.replace(day=1)}


def _backfill(connection: sa.Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    gaps: dict[tuple[date, int], int] = defaultdict(int)
    cohorts: dict[tuple[str, date, date], int] = defaultdict(int)
    # Per day: sessions, their summed length in microseconds, their plays; streams.
    session_days: dict[date, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    day_rows: list[dict[str, Any]] = []
    session_rows: list[dict[str, Any]] = []

    def stamp(moment: datetime) -> datetime:
        # As the app's UTCDateTime stores it: naive UTC text on SQLite.
        return moment.replace(tzinfo=None) if sqlite else moment

    def flush(force: bool = False) -> None:
        if day_rows and (force or len(day_rows) >= _CHUNK):
            connection.execute(_listener_days.insert(), day_rows)
            day_rows.clear()
        if session_rows and (force or len(session_rows) >= _CHUNK):
            connection.execute(_sessions.insert(), session_rows)
            session_rows.clear()

    for user_id, plays in _plays_by_account(connection):
        days = sorted({end.date() for _, end in plays})
        previous: date | None = None
        for day in days:
            gaps[(day, 0 if previous is None else min((day - previous).days, _GAP_CAP_DAYS))] += 1
            previous = day
            day_rows.append({"user_id": user_id, "day": day})
        for period, cohort in _period_starts(days[0]).items():
            for active in {_period_starts(day)[period] for day in days}:
                cohorts[(period, cohort, active)] += 1
        # Sessions: a play starting over 30 minutes after everything before it ended
        # starts the next one.
        plays.sort()
        started, ended, count = plays[0][0], plays[0][1], 0
        for begin, end in [*plays, (datetime.max.replace(tzinfo=UTC),) * 2]:
            if begin > ended + _SESSION_GAP:
                session_rows.append(
                    {
                        "id": uuid.uuid4(),
                        "user_id": user_id,
                        "started_at": stamp(started),
                        "ended_at": stamp(ended),
                        "plays": count,
                    }
                )
                totals = session_days[started.date()]
                totals[0] += 1
                totals[1] += (ended - started) // timedelta(microseconds=1)
                totals[2] += count
                started, ended, count = begin, end, 0
            ended = max(ended, end)
            count += 1
        flush()
    flush(force=True)
    # Streams per day are in every deployment's track rollups.
    for day, streams in connection.execute(
        sa.select(_track_stats.c.day, sa.func.sum(_track_stats.c.streams)).group_by(
            _track_stats.c.day
        )
    ):
        if streams:
            session_days[day][3] = int(streams)
    for table, rows in (
        (
            _active_listeners,
            [{"day": d, "days_since_active": g, "listeners": n} for (d, g), n in gaps.items()],
        ),
        (
            _cohort_activity,
            [
                {"period": p, "cohort": c, "active": a, "listeners": n}
                for (p, c, a), n in cohorts.items()
            ],
        ),
        (
            _listening_stats,
            [
                {"day": d, "sessions": s, "session_us": us, "session_plays": n, "streams": streams}
                for d, (s, us, n, streams) in session_days.items()
            ],
        ),
    ):
        if rows:
            connection.execute(table.insert(), rows)


def _backfill_artist_listener_gaps(connection: sa.Connection) -> None:
    days_between = (
        "CAST(julianday(day) - julianday(previous) AS INTEGER)"
        if connection.dialect.name == "sqlite"
        else "day - previous"
    )
    smaller = "min" if connection.dialect.name == "sqlite" else "least"
    # Only this module's constants are spliced in: the dialect's date difference and the cap.
    connection.execute(
        sa.text(
            "INSERT INTO daily_artist_listener_gaps "  # noqa: S608
            "(artist_id, day, days_since_listened, listeners) "
            "SELECT artist_id, day, gap, count(*) FROM ("
            "  SELECT artist_id, day, CASE WHEN previous IS NULL THEN 0 "
            f"  ELSE {smaller}({days_between}, {_GAP_CAP_DAYS}) END AS gap FROM ("
            "    SELECT artist_id, day, lag(day) OVER ("
            "      PARTITION BY artist_id, user_id ORDER BY day) AS previous"
            "    FROM daily_artist_listeners) AS listener_days"
            ") AS gaps GROUP BY artist_id, day, gap"
        )
    )
