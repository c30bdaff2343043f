"""Likes, follows and playlist adds made through the library API reach the event log."""

from __future__ import annotations

from fastapi import FastAPI
from sqlalchemy import func, select

from encore.events.models import DailyArtistStats, DailyTrackStats
from tests.fixtures.events import drain_events, listener_client, seed_catalog
from tests.fixtures.oauth import resources_of


async def test_library_changes_are_counted_once_each(app: FastAPI) -> None:
    playable = await seed_catalog(app, artists=1, tracks_per_artist=2)
    first, second = playable.track_ids
    async with await listener_client(app, "olivia", "library-modify playlist-modify") as http:
        assert (await http.put(f"/v1/me/likes/tracks/{first}")).status_code == 204
        # Liking again changes nothing, so it records nothing either.
        assert (await http.put(f"/v1/me/likes/tracks/{first}")).status_code == 204
        assert (await http.delete(f"/v1/me/likes/tracks/{first}")).status_code == 204
        playlist = await http.post("/v1/me/playlists", json={"name": "Road trip"})
        assert playlist.status_code == 201, playlist.text
        added = await http.post(
            f"/v1/playlists/{playlist.json()['id']}/tracks",
            json={"track_ids": [str(first), str(second), str(first)]},
        )
        assert added.status_code == 201, added.text
        follow = await http.put(f"/v1/me/following/artists/{playable.artist_of[first]}")
        assert follow.status_code == 204
    await drain_events(app)
    async with resources_of(app).session_factory() as db_session:
        likes, unlikes, adds = (
            await db_session.execute(
                select(
                    func.sum(DailyTrackStats.likes),
                    func.sum(DailyTrackStats.unlikes),
                    func.sum(DailyTrackStats.playlist_adds),
                ).where(DailyTrackStats.track_id == first)
            )
        ).one()
        artist_adds = await db_session.scalar(select(func.sum(DailyArtistStats.playlist_adds)))
    assert (likes, unlikes, adds) == (1, 1, 2)
    assert artist_adds == 3
