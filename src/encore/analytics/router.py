"""Insights HTTP API: artist and track statistics, engagement, retention, charts, royalties, SQL."""

from __future__ import annotations

import asyncio
import csv
import io
import uuid
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from encore.analytics import charts as chart_pictures
from encore.analytics import lake_queries, service
from encore.analytics.schemas import (
    ChartPeriod,
    Charts,
    CohortPeriod,
    Engagement,
    EntityStats,
    Granularity,
    LakeQuery,
    Retention,
    RoyaltyReport,
)
from encore.auth.dependencies import Authenticated, require_scopes
from encore.auth.scopes import ADMIN, ANALYTICS, ARTIST_STATS
from encore.auth.tokens import Principal
from encore.config import Settings
from encore.db import utcnow
from encore.dependencies import ResourcesDep, SessionDep
from encore.events.lake import PARQUET_CONTENT_TYPE
from encore.problems import Forbidden, InvalidInput

router = APIRouter(prefix="/v1", tags=["insights"])

ArtistStatsReader = Annotated[Principal, require_scopes(ARTIST_STATS)]
# Analysts may use their own token or a service client's (client credentials).
Analyst = Annotated[Principal, require_scopes(ANALYTICS, user=False)]
DEFAULT_WINDOW_DAYS = 30
PNG = "image/png"
CSV = "text/csv"


async def _royalty_reader(principal: Authenticated) -> Principal:
    if not principal.scopes & {ADMIN, ANALYTICS}:
        raise Forbidden(
            "royalty reports need the admin or the analytics scope",
            headers={
                "WWW-Authenticate": 'Bearer realm="encore", error="insufficient_scope", '
                'scope="analytics"'
            },
        )
    return principal


RoyaltyReader = Annotated[Principal, Depends(_royalty_reader)]
FromDate = Annotated[
    date | None, Query(alias="from", description="First UTC day (default: 29 days before `to`).")
]
ToDate = Annotated[date | None, Query(alias="to", description="Last UTC day (default: today).")]


def _window(from_date: date | None, to_date: date | None) -> tuple[date, date]:
    last = to_date or utcnow().date()
    first = from_date or last - timedelta(days=DEFAULT_WINDOW_DAYS - 1)
    return first, last


def _limits(settings: Settings) -> lake_queries.LakeLimits:
    return lake_queries.LakeLimits(
        timeout_seconds=settings.analytics_query_timeout_seconds,
        max_rows=settings.analytics_query_max_rows,
    )


def _wants(request: Request, media_type: str) -> bool:
    return media_type in request.headers.get("accept", "")


async def _artist_stats(
    db_session: AsyncSession,
    principal: Principal,
    artist_id: uuid.UUID,
    from_date: date | None,
    to_date: date | None,
    granularity: Granularity,
) -> EntityStats:
    first, last = _window(from_date, to_date)
    service.check_window(first, last)
    name = await service.get_owned_artist_name(
        db_session=db_session, artist_id=artist_id, user_id=principal.user_id, admin=False
    )
    return await service.artist_stats(
        db_session=db_session,
        artist_id=artist_id,
        name=name,
        from_date=first,
        to_date=last,
        granularity=granularity,
    )


@router.get(
    "/artists/{artist_id}/stats",
    response_model=EntityStats,
    response_model_by_alias=True,
    summary="How an artist you manage is heard",
)
async def get_artist_stats(
    artist_id: uuid.UUID,
    principal: ArtistStatsReader,
    db_session: SessionDep,
    from_date: FromDate = None,
    to_date: ToDate = None,
    granularity: Granularity = Granularity.day,
) -> EntityStats:
    """Streams, unique listeners, ms listened, saves, playlist adds, skip rate, top tracks."""
    return await _artist_stats(db_session, principal, artist_id, from_date, to_date, granularity)


@router.get(
    "/artists/{artist_id}/stats/chart.png",
    response_class=Response,
    responses={200: {"content": {PNG: {}}}},
    summary="An artist's streams over time, as a picture",
)
async def get_artist_stats_chart(
    artist_id: uuid.UUID,
    principal: ArtistStatsReader,
    db_session: SessionDep,
    from_date: FromDate = None,
    to_date: ToDate = None,
) -> Response:
    """PNG: streams per day over the window, with the top tracks."""
    stats = await _artist_stats(
        db_session, principal, artist_id, from_date, to_date, Granularity.day
    )
    series = await service.track_daily_streams(
        db_session=db_session,
        track_ids=[t.track_id for t in stats.top_tracks[: chart_pictures.CHART_TRACKS]],
        from_date=stats.from_date,
        to_date=stats.to_date,
    )
    picture = await chart_pictures.artist_chart_png(stats, series)
    return Response(picture, media_type=PNG, headers={"Cache-Control": "private, max-age=300"})


@router.get(
    "/tracks/{track_id}/stats",
    response_model=EntityStats,
    response_model_by_alias=True,
    summary="How a track of yours is heard",
)
async def get_track_stats(
    track_id: uuid.UUID,
    principal: ArtistStatsReader,
    db_session: SessionDep,
    from_date: FromDate = None,
    to_date: ToDate = None,
    granularity: Granularity = Granularity.day,
) -> EntityStats:
    """The artist statistics for one track of an artist you manage."""
    first, last = _window(from_date, to_date)
    service.check_window(first, last)
    title = await service.get_owned_track_title(
        db_session=db_session, track_id=track_id, user_id=principal.user_id, admin=False
    )
    return await service.track_stats(
        db_session=db_session,
        track_id=track_id,
        name=title,
        from_date=first,
        to_date=last,
        granularity=granularity,
    )


async def _engagement(
    db_session: AsyncSession, from_date: date | None, to_date: date | None
) -> Engagement:
    first, last = _window(from_date, to_date)
    return await service.engagement(db_session=db_session, from_date=first, to_date=last)


@router.get(
    "/analytics/engagement",
    response_model=Engagement,
    response_model_by_alias=True,
    summary="Active listeners, sessions and streams per day",
)
async def get_engagement(
    _analyst: Analyst,
    db_session: SessionDep,
    from_date: FromDate = None,
    to_date: ToDate = None,
) -> Engagement:
    """DAU, WAU, MAU, DAU/MAU; new and returning listeners; sessions; streams per listener."""
    return await _engagement(db_session, from_date, to_date)


@router.get(
    "/analytics/engagement/chart.png",
    response_class=Response,
    responses={200: {"content": {PNG: {}}}},
    summary="Active listeners per day, as a picture",
)
async def get_engagement_chart(
    _analyst: Analyst,
    db_session: SessionDep,
    from_date: FromDate = None,
    to_date: ToDate = None,
) -> Response:
    """PNG: DAU, WAU and MAU per day, with DAU/MAU."""
    engagement = await _engagement(db_session, from_date, to_date)
    picture = await chart_pictures.engagement_chart_png(engagement)
    return Response(picture, media_type=PNG, headers={"Cache-Control": "private, max-age=300"})


@router.get("/analytics/retention", response_model=Retention, summary="Cohort retention")
async def get_retention(
    _analyst: Analyst,
    db_session: SessionDep,
    cohort: CohortPeriod = CohortPeriod.week,
    cohorts: Annotated[int, Query(ge=1, le=service.MAX_RETENTION_COHORTS)] = 12,
) -> Retention:
    """Accounts by the week (or month) of their first play, and the share active afterwards."""
    return await service.retention(db_session=db_session, period=cohort, cohorts=cohorts)


@router.get("/analytics/charts", response_model=Charts, summary="Top tracks and artists")
async def get_charts(
    _analyst: Analyst,
    db_session: SessionDep,
    chart_date: Annotated[
        date | None, Query(alias="date", description="The (last) UTC day (default: yesterday).")
    ] = None,
    period: ChartPeriod = ChartPeriod.day,
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$")] = None,
    genre: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = service.CHART_LENGTH,
) -> Charts:
    """Ranked by counted streams, optionally in one country and one genre."""
    return await service.charts(
        db_session=db_session,
        day=chart_date or utcnow().date() - timedelta(days=1),
        period=period,
        country=country,
        genre=genre,
        limit=limit,
    )


def _royalties_csv(report: RoyaltyReport) -> bytes:
    sink = io.StringIO()
    writer = csv.writer(sink, lineterminator="\n")
    writer.writerow(["month", "artist_id", "artist", "streams", "share", "payout"])
    for row in report.artists:
        writer.writerow(
            [
                report.month,
                row.artist_id,
                row.name or "",
                row.streams,
                f"{row.share:.10f}",
                "" if row.payout is None else row.payout,
            ]
        )
    return sink.getvalue().encode()


@router.get(
    "/analytics/royalties",
    response_model=RoyaltyReport,
    responses={200: {"content": {CSV: {}}}},
    summary="A month's pro-rata royalty shares",
)
async def get_royalties(
    request: Request,
    _reader: RoyaltyReader,
    db_session: SessionDep,
    month: Annotated[str, Query(description="YYYY-MM")],
    pool: Annotated[Decimal | None, Query(ge=0, max_digits=18, decimal_places=2)] = None,
) -> Response:
    """Each artist's share of the month's streams (abuse excluded); CSV with Accept: text/csv."""
    report = await service.royalties(db_session=db_session, month=month, pool=pool)
    if _wants(request, CSV):
        return Response(
            _royalties_csv(report),
            media_type=CSV,
            headers={"Content-Disposition": f'attachment; filename="royalties-{report.month}.csv"'},
        )
    return Response(report.model_dump_json(), media_type="application/json")


@router.post(
    "/analytics/query",
    response_class=Response,
    responses={200: {"content": {"application/json": {}, CSV: {}, PARQUET_CONTENT_TYPE: {}}}},
    summary="Read-only SQL over the lake",
)
async def post_query(
    request: Request, body: LakeQuery, _analyst: Analyst, resources: ResourcesDep
) -> Response:
    """One SELECT over the view `events`; JSON, CSV or Parquet as the Accept header asks."""
    result_format = "json"
    for media_type, name in lake_queries.RESULT_FORMATS.items():
        if _wants(request, media_type):
            result_format = name
            break
    settings = resources.settings
    if not body.sql.strip():
        raise InvalidInput("the query is empty")
    table = await lake_queries.query_lake(
        store=resources.store,
        cache_dir=Path(settings.analytics_lake_cache_dir),
        sql=body.sql,
        limits=_limits(settings),
    )
    media = {v: k for k, v in lake_queries.RESULT_FORMATS.items()}[result_format]
    encoded = await asyncio.to_thread(lake_queries.encode_result, table, result_format)
    return Response(
        encoded,
        media_type=media,
        headers={"X-Row-Count": str(table.num_rows)},
    )
