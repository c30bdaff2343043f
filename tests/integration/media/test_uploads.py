"""Artist uploads from the outside: accepted audio becomes a ready track; hostile input is
refused with a clear problem and leaves nothing behind."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import m3u8
import pytest
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import func, select

from encore.auth.models import Role
from encore.catalog import service as catalog_service
from encore.catalog.models import Track
from encore.config import Settings
from encore.jobs_models import JobRecord as Job
from encore.media.models import Upload
from encore.media.synthesis import Tone, synthesize_audio
from tests.fixtures.jobs import run_queued_jobs
from tests.fixtures.oauth import asgi_client, create_user, resources_of, user_token

PROBLEM = "application/problem+json"


@dataclass
class Artist:
    """An artist account with one artist it manages, and a token that may upload."""

    artist_id: uuid.UUID
    headers: dict[str, str]


async def _artist_account(app: FastAPI, username: str, artist_name: str) -> Artist:
    user = await create_user(app, username, roles=(Role.artist,))
    async with resources_of(app).session_factory() as db_session:
        artist = await catalog_service.get_or_create_artist(db_session=db_session, name=artist_name)
        await catalog_service.assign_artist_owner(
            db_session=db_session, artist_names=[artist_name], user_id=user.id
        )
        await db_session.commit()
    token = await user_token(app, username, "upload user-read")
    return Artist(artist_id=artist.id, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
async def artist(app: FastAPI) -> Artist:
    """An artist account managing "Nova Lights"."""
    return await _artist_account(app, "nova", "Nova Lights")


@pytest.fixture
async def http(app: FastAPI) -> httpx.AsyncClient:
    """A plain client (each test sends its own Authorization header)."""
    async with asgi_client(app) as client:
        yield client  # type: ignore[misc]


def _form(artist: Artist, **fields: str) -> dict[str, str]:
    return {
        "title": "Night Drive",
        "artist_id": str(artist.artist_id),
        "album_title": "Roads",
        **fields,
    }


async def _upload(
    http: httpx.AsyncClient, artist: Artist, path: Path, **fields: str
) -> httpx.Response:
    with path.open("rb") as file:
        return await http.post(
            "/v1/uploads",
            headers=artist.headers,
            data=_form(artist, **fields),
            files={"file": (path.name, file, "application/octet-stream")},
        )


async def _leftovers(app: FastAPI) -> tuple[int, int, int, int]:
    resources = resources_of(app)
    async with resources.session_factory() as db_session:
        tracks = await db_session.scalar(select(func.count()).select_from(Track))
        uploads = await db_session.scalar(select(func.count()).select_from(Upload))
        jobs = await db_session.scalar(select(func.count()).select_from(Job))
    originals = [blob async for blob in resources.store.list("originals/")]
    return int(tracks or 0), int(uploads or 0), int(jobs or 0), len(originals)


async def test_an_upload_becomes_a_ready_track_with_renditions(
    app: FastAPI, http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    source = synthesize_audio(tmp_path / "night drive.flac", Tone(seconds=14.0))

    accepted = await _upload(
        http,
        artist,
        source,
        track_number="3",
        genres="Synthwave",
        featured="Guest Star",
        explicit="true",
        isrc="GB-AYE-06-01498",
    )
    assert accepted.status_code == 202, accepted.text
    upload = accepted.json()
    assert upload["status"] == "queued"
    assert accepted.headers["location"] == f"/v1/uploads/{upload['id']}"

    await run_queued_jobs(app)

    done = (await http.get(f"/v1/uploads/{upload['id']}", headers=artist.headers)).json()
    assert done["status"] == "ready", done
    track = (await http.get(f"/v1/tracks/{upload['track_id']}", headers=artist.headers)).json()
    assert track["status"] == "ready"
    assert track["title"] == "Night Drive" and track["explicit"] is True
    assert track["isrc"] == "GBAYE0601498"
    assert [(a["name"], a["role"]) for a in track["artists"]] == [
        ("Nova Lights", "primary"),
        ("Guest Star", "featured"),
    ]
    store = resources_of(app).store
    async with resources_of(app).session_factory() as db_session:
        source_row = await catalog_service.get_track_source(
            db_session=db_session, track_id=uuid.UUID(upload["track_id"])
        )
    assert source_row is not None and source_row.renditions_prefix is not None
    master = m3u8.loads((await store.get(f"{source_row.renditions_prefix}/master.m3u8")).decode())
    assert len(master.playlists) == 3


async def test_the_upload_status_is_private_to_its_uploader(
    app: FastAPI, http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    other = await _artist_account(app, "orion", "Orion Belt")
    accepted = await _upload(http, artist, synthesize_audio(tmp_path / "a.mp3"))
    answer = await http.get(f"/v1/uploads/{accepted.json()['id']}", headers=other.headers)
    assert answer.status_code == 404


async def test_another_artists_artist_or_album_is_not_found_and_nothing_is_kept(
    app: FastAPI, http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    other = await _artist_account(app, "orion", "Orion Belt")
    theirs = await _upload(http, other, synthesize_audio(tmp_path / "theirs.mp3"))
    album_id = (
        await http.get(f"/v1/tracks/{theirs.json()['track_id']}", headers=other.headers)
    ).json()["album"]["id"]
    before = await _leftovers(app)

    as_their_artist = await _upload(
        http,
        artist,
        synthesize_audio(tmp_path / "mine.mp3", Tone(seconds=3.0)),
        artist_id=str(other.artist_id),
    )
    into_their_album = await _upload(
        http,
        artist,
        synthesize_audio(tmp_path / "mine2.mp3", Tone(seconds=4.0)),
        album_id=album_id,
    )
    assert as_their_artist.status_code == 404
    assert into_their_album.status_code == 404
    assert await _leftovers(app) == before


async def test_a_listener_cannot_upload(
    app: FastAPI, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await create_user(app, "lee")
    token = await user_token(app, "lee", "user-read upload")
    answer = await http.post(
        "/v1/uploads",
        headers={"Authorization": f"Bearer {token}"},
        data={"title": "x", "artist_id": str(uuid.uuid4()), "album_title": "y"},
        files={"file": ("a.mp3", synthesize_audio(tmp_path / "a.mp3").read_bytes())},
    )
    assert answer.status_code == 403


def _text_renamed(tmp_path: Path) -> Path:
    path = tmp_path / "song.mp3"
    path.write_text("this is not audio at all, just words in a file\n" * 50)
    return path


def _playlist_disguised(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    path = tmp_path / "song.mp3"
    path.write_text(f"#EXTM3U\n#EXTINF:10,\nfile://{secret}\n#EXT-X-ENDLIST\n")
    return path


def _concat_disguised(tmp_path: Path) -> Path:
    path = tmp_path / "song.flac"
    path.write_text(f"ffconcat version 1.0\nfile '{tmp_path / 'other.flac'}'\n")
    synthesize_audio(tmp_path / "other.flac")
    return path


def _truncated(tmp_path: Path) -> Path:
    full = synthesize_audio(tmp_path / "full.flac", Tone(seconds=5.0))
    path = tmp_path / "cut.flac"
    path.write_bytes(full.read_bytes()[:200])
    return path


def _zero_length(tmp_path: Path) -> Path:
    path = tmp_path / "empty.mp3"
    path.write_bytes(b"")
    return path


def _odd_sample_rate(tmp_path: Path) -> Path:
    return synthesize_audio(tmp_path / "low.wav", Tone(seconds=1.0, sample_rate=4_000))


@pytest.mark.parametrize(
    "make",
    [
        _text_renamed,
        _playlist_disguised,
        _concat_disguised,
        _truncated,
        _zero_length,
        _odd_sample_rate,
    ],
    ids=[
        "text-as-mp3",
        "hls-playlist-as-mp3",
        "ffconcat-as-flac",
        "truncated",
        "zero-length",
        "absurd-sample-rate",
    ],
)
async def test_hostile_audio_is_refused_and_leaves_nothing_behind(
    app: FastAPI, http: httpx.AsyncClient, artist: Artist, tmp_path: Path, make: object
) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    before = await _leftovers(app)

    answer = await _upload(http, artist, path)

    assert answer.status_code in (413, 422), answer.text
    assert answer.headers["content-type"] == PROBLEM
    assert "Traceback" not in answer.text
    assert await _leftovers(app) == before


async def test_limits_on_size_duration_and_quota(settings: Settings, tmp_path: Path) -> None:
    from encore.app import create_app

    limited = settings.model_copy(
        update={
            "upload_max_bytes": 60_000,
            "upload_max_duration_seconds": 5,
            "artist_storage_quota_bytes": 80_000,
        }
    )
    application = create_app(limited)
    async with application.router.lifespan_context(application), asgi_client(application) as http:
        artist = await _artist_account(application, "nova", "Nova Lights")
        big = tmp_path / "big.wav"
        synthesize_audio(big, Tone(seconds=3.0))  # ~530 kB of PCM
        too_big = await _upload(http, artist, big)
        long = synthesize_audio(tmp_path / "long.mp3", Tone(seconds=8.0))
        too_long = await _upload(http, artist, long)
        first = await _upload(http, artist, synthesize_audio(tmp_path / "a.mp3", Tone(seconds=2.0)))
        second = await _upload(
            http, artist, synthesize_audio(tmp_path / "b.mp3", Tone(seconds=2.5))
        )
        third = await _upload(http, artist, synthesize_audio(tmp_path / "c.mp3", Tone(seconds=3.0)))
    assert too_big.status_code == 413
    assert too_long.status_code == 413
    assert first.status_code == 202 and second.status_code == 202
    assert third.status_code == 413
    assert "quota" in third.json()["detail"]


async def test_the_same_file_twice_is_a_conflict(
    http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    path = synthesize_audio(tmp_path / "a.ogg")
    assert (await _upload(http, artist, path)).status_code == 202
    again = await _upload(http, artist, path)
    assert again.status_code == 409


async def test_bad_metadata_names_the_field(
    http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    path = synthesize_audio(tmp_path / "a.mp3")
    answers = {
        "track_number": await _upload(http, artist, path, track_number="-1"),
        "release_date": await _upload(http, artist, path, release_date="yesterday"),
        "isrc": await _upload(http, artist, path, isrc="nope"),
        "artist_id": await _upload(http, artist, path, artist_id="42"),
    }
    for field, answer in answers.items():
        assert answer.status_code == 422, (field, answer.text)
        assert answer.json()["errors"][0]["field"] == f"form.{field}"


async def test_album_artwork_is_reencoded_in_three_sizes(
    app: FastAPI, http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    accepted = await _upload(http, artist, synthesize_audio(tmp_path / "a.mp3"))
    album_id = (
        await http.get(f"/v1/tracks/{accepted.json()['track_id']}", headers=artist.headers)
    ).json()["album"]["id"]
    image = Image.new("RGBA", (900, 700), (200, 30, 90, 255))
    png = io.BytesIO()
    image.save(png, format="PNG")

    answer = await http.post(
        f"/v1/albums/{album_id}/artwork",
        headers=artist.headers,
        files={"file": ("cover.png", png.getvalue(), "image/png")},
    )
    assert answer.status_code == 200, answer.text
    album = (await http.get(f"/v1/albums/{album_id}", headers=artist.headers)).json()
    for size in (64, 300, 640):
        cover = await http.get(f"{album['artwork_url']}&size={size}", headers=artist.headers)
        assert cover.headers["content-type"] == "image/jpeg", cover.text
        assert "immutable" in cover.headers["cache-control"]
        with Image.open(io.BytesIO(cover.content)) as decoded:
            assert max(decoded.size) == size
            assert "exif" not in decoded.info

    text = await http.post(
        f"/v1/albums/{album_id}/artwork",
        headers=artist.headers,
        files={"file": ("cover.png", b"not an image", "image/png")},
    )
    assert text.status_code == 422
    other = await _artist_account(app, "orion", "Orion Belt")
    theirs = await http.post(
        f"/v1/albums/{album_id}/artwork",
        headers=other.headers,
        files={"file": ("cover.png", png.getvalue(), "image/png")},
    )
    assert theirs.status_code == 404


async def test_a_decompression_bomb_is_refused(
    app: FastAPI, http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    accepted = await _upload(http, artist, synthesize_audio(tmp_path / "a.mp3"))
    album_id = (
        await http.get(f"/v1/tracks/{accepted.json()['track_id']}", headers=artist.headers)
    ).json()["album"]["id"]
    bomb = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(bomb, format="PNG")  # tiny file, 400 M pixels
    answer = await http.post(
        f"/v1/albums/{album_id}/artwork",
        headers=artist.headers,
        files={"file": ("bomb.png", bomb.getvalue(), "image/png")},
    )
    assert answer.status_code == 422


def _wav_with_channels(path: Path, channels: int, seconds: float = 0.5) -> Path:
    """A PCM WAV file with any channel count, written by hand (encoders refuse odd layouts)."""
    import struct

    rate = 44_100
    frames = int(rate * seconds)
    data = b"\x00\x10" * channels * frames
    header = b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE"
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    path.write_bytes(
        header
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    return path


async def test_an_absurd_channel_count_is_refused(
    app: FastAPI, http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    before = await _leftovers(app)
    answer = await _upload(http, artist, _wav_with_channels(tmp_path / "wide.wav", 24))
    assert answer.status_code == 422, answer.text
    assert "channel" in answer.json()["detail"]
    assert await _leftovers(app) == before


async def test_an_oversized_tag_block_is_refused(
    app: FastAPI, http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    audio = synthesize_audio(tmp_path / "plain.mp3", Tone(seconds=1.0)).read_bytes()
    size = 17 * 1024 * 1024
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    padded = tmp_path / "padded.mp3"
    padded.write_bytes(b"ID3\x04\x00\x00" + syncsafe + b"\x00" * size + audio)
    before = await _leftovers(app)

    answer = await _upload(http, artist, padded)

    assert answer.status_code == 422, answer.text
    assert "tag" in answer.json()["detail"]
    assert await _leftovers(app) == before


async def test_aiff_is_accepted_and_processed(
    app: FastAPI, http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    accepted = await _upload(http, artist, synthesize_audio(tmp_path / "a.aiff", Tone(seconds=3.0)))
    assert accepted.status_code == 202, accepted.text
    await run_queued_jobs(app)
    done = await http.get(f"/v1/uploads/{accepted.json()['id']}", headers=artist.headers)
    assert done.json()["status"] == "ready"


async def test_a_worker_killed_mid_job_leaves_it_to_another(
    app: FastAPI, http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from encore.bus import open_job_queue
    from encore.jobs_models import JobRecord
    from encore.media.service import PROCESS_TRACK_JOB

    accepted = await _upload(http, artist, synthesize_audio(tmp_path / "a.mp3", Tone(seconds=4)))
    resources = resources_of(app)
    queue = open_job_queue(resources.settings, resources.session_factory)
    # A worker claims the job and dies: it never completes, fails or renews the lease.
    claimed = await queue.claim("doomed-worker", [PROCESS_TRACK_JOB], timedelta(minutes=5))
    assert claimed is not None
    async with resources.session_factory() as db_session:
        await db_session.execute(
            update(JobRecord)
            .where(JobRecord.id == claimed.id)
            .values(lease_expires_at=JobRecord.created_at)
        )
        await db_session.commit()

    await run_queued_jobs(app)

    done = await http.get(f"/v1/uploads/{accepted.json()['id']}", headers=artist.headers)
    assert done.json()["status"] == "ready"
    assert not await queue.complete(claimed.id, "doomed-worker")
    job = await queue.get_job(claimed.id)
    assert job is not None and job.state == "done" and job.attempts == 2


async def test_an_unknown_artwork_size_is_a_422(
    http: httpx.AsyncClient, artist: Artist, tmp_path: Path
) -> None:
    accepted = await _upload(http, artist, synthesize_audio(tmp_path / "a.mp3"))
    album_id = (
        await http.get(f"/v1/tracks/{accepted.json()['track_id']}", headers=artist.headers)
    ).json()["album"]["id"]
    png = io.BytesIO()
    Image.new("RGB", (400, 400), (10, 20, 30)).save(png, format="PNG")
    await http.post(
        f"/v1/albums/{album_id}/artwork",
        headers=artist.headers,
        files={"file": ("cover.png", png.getvalue(), "image/png")},
    )
    answer = await http.get(f"/v1/albums/{album_id}/artwork?size=65", headers=artist.headers)
    assert answer.status_code == 422


async def test_an_admin_links_an_artist_account_to_an_artist(
    app: FastAPI, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    await create_user(app, "root", roles=(Role.admin,))
    admin = {"Authorization": f"Bearer {await user_token(app, 'root', 'admin')}"}
    await create_user(app, "vega", roles=(Role.artist,))
    await create_user(app, "plain")
    async with resources_of(app).session_factory() as db_session:
        artist = await catalog_service.get_or_create_artist(db_session=db_session, name="Vega")
        await db_session.commit()
    vega = {"Authorization": f"Bearer {await user_token(app, 'vega', 'upload')}"}
    song = synthesize_audio(tmp_path / "a.mp3")
    form = {"title": "x", "artist_id": str(artist.id), "album_title": "y"}

    before = await http.post(
        "/v1/uploads", headers=vega, data=form, files={"file": ("a.mp3", song.read_bytes())}
    )
    not_admin = await http.put(
        f"/v1/artists/{artist.id}/owner", headers=vega, json={"username": "vega"}
    )
    listener = await http.put(
        f"/v1/artists/{artist.id}/owner", headers=admin, json={"username": "plain"}
    )
    linked = await http.put(
        f"/v1/artists/{artist.id}/owner", headers=admin, json={"username": "vega"}
    )
    after = await http.post(
        "/v1/uploads", headers=vega, data=form, files={"file": ("a.mp3", song.read_bytes())}
    )

    assert before.status_code == 404
    assert not_admin.status_code == 403
    assert listener.status_code == 422
    assert linked.status_code == 204
    assert after.status_code == 202
