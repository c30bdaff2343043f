"""The tables of the database backend of the event log (see `encore.bus.event_log`)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from encore.db import Base

# SQLite makes only an INTEGER PRIMARY KEY the rowid alias that auto-increments.
LogPosition = BigInteger().with_variant(Integer(), "sqlite")

MAX_CONSUMER_NAME_LENGTH = 64


class EventLogEntry(Base):
    """One accepted listening event in the append-only log (the database bus backend)."""

    __tablename__ = "event_log"

    position: Mapped[int] = mapped_column(LogPosition, primary_key=True, autoincrement=True)
    # PostgreSQL: the appending transaction's id (a column default), so a consumer never reads
    # past a transaction that is still in flight and would commit a lower position later.
    # SQLite has a single writer, so positions commit in order and this stays 0.
    transaction_id: Mapped[int] = mapped_column(BigInteger, server_default="0")
    user_id: Mapped[uuid.UUID] = mapped_column()
    event_id: Mapped[uuid.UUID] = mapped_column()
    received_at: Mapped[datetime] = mapped_column()
    # The client's occurred_at: the first column of the key a retry is recognised by.
    occurred_at: Mapped[datetime] = mapped_column()
    # The validated event as JSON (the client's fields and the server's user_id/received_at).
    body: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        # A retry repeats the event, occurred_at included. Keyed by time first, new events land
        # at the end of the index (events arrive roughly in time order), where keyed by the
        # random client ids alone every insert dirtied a page of its own: 26 against 4 µs per
        # event on SQLite (BENCHMARKS.md). The consumers still count an event id once however
        # often, and with whatever occurred_at, it reaches the log (`first_seen_events`).
        UniqueConstraint(
            "occurred_at", "user_id", "event_id", name="uq_event_log_occurred_user_event"
        ),
        Index("ix_event_log_transaction_position", "transaction_id", "position"),
    )


class EventConsumerOffset(Base):
    """How far one named consumer has read the database event log."""

    __tablename__ = "event_consumer_offsets"

    consumer: Mapped[str] = mapped_column(String(MAX_CONSUMER_NAME_LENGTH), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(BigInteger, default=0)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column()
