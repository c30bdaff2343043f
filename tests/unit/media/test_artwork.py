"""normalize_artwork: accepted formats, re-encoding, size limits and hostile images."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from encore.media.artwork import (
    MAX_ARTWORK_BYTES,
    MAX_OUTPUT_EDGE,
    InvalidArtwork,
    artwork_key,
    normalize_artwork,
)
from encore.media.synthesis import make_cover_art

_COLOURS: dict[str, float | tuple[int, ...]] = {
    "RGB": (200, 40, 40),
    "RGBA": (200, 40, 40, 128),
    "L": 90,
    "P": 1,
    "1": 1,
}


def _image(
    image_format: str, size: tuple[int, int] = (300, 200), mode: str = "RGB", **save: object
) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, _COLOURS[mode]).save(out, format=image_format, **save)
    return out.getvalue()


def _decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("image_format", "mode"),
    [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB"), ("GIF", "P"), ("PNG", "L")],
)
def test_accepted_images_become_rgb_jpeg(image_format: str, mode: str) -> None:
    artwork = normalize_artwork(_image(image_format, mode=mode))

    decoded = _decoded(artwork.data)
    assert decoded.format == "JPEG"
    assert decoded.mode == "RGB"
    assert (artwork.width, artwork.height) == decoded.size == (300, 200)
    assert artwork.sha256 == hashlib.sha256(artwork.data).hexdigest()
    assert artwork.key == artwork_key(artwork.sha256) == f"artwork/{artwork.sha256}.jpg"


def test_transparency_becomes_white() -> None:
    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(out, format="PNG")

    pixel = _decoded(normalize_artwork(out.getvalue()).data).getpixel((32, 32))

    assert isinstance(pixel, tuple) and min(pixel) > 245


def test_large_artwork_is_downscaled_keeping_its_shape() -> None:
    artwork = normalize_artwork(_image("JPEG", size=(3000, 2000)))

    assert (artwork.width, artwork.height) == (MAX_OUTPUT_EDGE, 933)


def test_same_image_same_key() -> None:
    cover = make_cover_art("Same", size=200)

    assert normalize_artwork(cover).key == normalize_artwork(cover).key


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    data = _image("JPEG", size=(300, 200), exif=exif.tobytes())

    artwork = normalize_artwork(data)

    assert (artwork.width, artwork.height) == (200, 300)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"definitely not an image" * 10, "not an image in an accepted format"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 300, r"damaged|not an image in an accepted format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, r"damaged|not an image in an accepted format"),
    ],
)
def test_garbage_is_invalid(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidArtwork, match=reason):
        normalize_artwork(data)


def test_truncated_image_is_invalid() -> None:
    data = make_cover_art("Cut", size=400)

    with pytest.raises(InvalidArtwork):
        normalize_artwork(data[: len(data) // 2])


def test_other_image_formats_are_refused() -> None:
    with pytest.raises(InvalidArtwork, match="not an image in an accepted format"):
        normalize_artwork(_image("BMP"))


def test_too_many_bytes_is_refused() -> None:
    with pytest.raises(InvalidArtwork, match="larger than"):
        normalize_artwork(b"\xff\xd8\xff" + bytes(MAX_ARTWORK_BYTES))


@pytest.mark.parametrize("size", [(13_000, 10), (9_000, 9_000)], ids=["edge", "pixels"])
def test_decompression_bomb_is_refused_before_decoding(size: tuple[int, int]) -> None:
    # A 1-bit PNG compresses to almost nothing, yet would decode to a huge RGB image.
    bomb = _image("PNG", size=size, mode="1", optimize=True)
    assert len(bomb) < 1024 * 1024

    with pytest.raises(InvalidArtwork, match=r"too large|too many"):
        normalize_artwork(bomb)
