"""Album artwork: check an image, bound its cost, and re-encode it as a web-sized JPEG.

Artwork comes from files anyone may have made, so it is treated as hostile: only a few
formats are opened, the pixel count is checked from the header before anything is decoded,
and the stored result is always a fresh JPEG (no EXIF, no ICC tricks, bounded size) kept
under a key derived from its own bytes.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ACCEPTED_FORMATS",
    "MAX_ARTWORK_BYTES",
    "MAX_OUTPUT_EDGE",
    "MAX_SOURCE_EDGE",
    "MAX_SOURCE_PIXELS",
    "InvalidArtwork",
    "NormalizedArtwork",
    "artwork_key",
    "normalize_artwork",
]

MAX_ARTWORK_BYTES = 10 * 1024 * 1024
"""Larger embedded or side-car images are ignored."""

MAX_SOURCE_EDGE = 12_000
"""Longest side, in pixels, of an image we are willing to decode."""

MAX_SOURCE_PIXELS = 64_000_000
"""Most pixels of an image we are willing to decode (~256 MB as RGBA)."""

MAX_OUTPUT_EDGE = 1400
"""Longest side of the stored artwork; what large-screen players ask for."""

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")

_JPEG_QUALITY = 88


class InvalidArtwork(Exception):
    """The bytes are not an image Encore accepts as artwork; `str()` says why."""


@dataclass(frozen=True, slots=True)
class NormalizedArtwork:
    """A re-encoded JPEG and the SHA-256 of its bytes."""

    data: bytes
    sha256: str
    width: int
    height: int

    @property
    def key(self) -> str:
        """Content-addressed blob key of this artwork."""
        return artwork_key(self.sha256)


def artwork_key(sha256: str) -> str:
    """Blob key of artwork with this SHA-256: `artwork/<sha256>.jpg`."""
    return f"artwork/{sha256}.jpg"


def _flatten(image: Image.Image) -> Image.Image:
    # JPEG has no alpha: transparent areas become white rather than black.
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (
        image.mode == "P" and "transparency" in image.info
    )
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow cannot go from 16/32-bit grey straight to RGB; scale to 8 bits first.
        image = image.point(lambda value: value / 256).convert("L")
    return image.convert("RGB")


def normalize_artwork(
    data: bytes, formats: tuple[str, ...] = ACCEPTED_FORMATS
) -> NormalizedArtwork:
    """Re-encode image bytes as an RGB JPEG of at most 1400 px; InvalidArtwork if unusable."""
    if not data:
        raise InvalidArtwork("empty image")
    if len(data) > MAX_ARTWORK_BYTES:
        raise InvalidArtwork(f"image is larger than {MAX_ARTWORK_BYTES // (1024 * 1024)} MB")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; here it is an error.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=formats) as source:
                width, height = source.size
                if width <= 0 or height <= 0:
                    raise InvalidArtwork("image has no pixels")
                if max(width, height) > MAX_SOURCE_EDGE or width * height > MAX_SOURCE_PIXELS:
                    raise InvalidArtwork(f"image is too large ({width}x{height} pixels)")
                # JPEG can decode at 1/2, 1/4 or 1/8 scale: far less work for big covers.
                source.draft("RGB", (MAX_OUTPUT_EDGE, MAX_OUTPUT_EDGE))
                source.load()
                image = ImageOps.exif_transpose(source) or source
                image = _flatten(image)
                image.thumbnail((MAX_OUTPUT_EDGE, MAX_OUTPUT_EDGE), Image.Resampling.LANCZOS)
                out = io.BytesIO()
                image.save(out, format="JPEG", quality=_JPEG_QUALITY, optimize=True)
    except InvalidArtwork:
        raise
    except UnidentifiedImageError:
        raise InvalidArtwork(f"not an image in an accepted format ({', '.join(formats)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidArtwork("image has too many pixels") from None
    except Exception as exc:
        # Pillow's decoders raise many kinds of errors on damaged or hostile data (OSError,
        # SyntaxError, ValueError, struct.error, ...); each just means "unusable artwork".
        raise InvalidArtwork(f"damaged image ({type(exc).__name__})") from None
    encoded = out.getvalue()
    return NormalizedArtwork(
        data=encoded,
        sha256=hashlib.sha256(encoded).hexdigest(),
        width=image.width,
        height=image.height,
    )
