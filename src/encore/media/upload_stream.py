"""Receive a multipart/form-data upload as a stream: the file goes to disk, never to memory.

The audio part is written chunk by chunk to a temporary file while its SHA-256 and size are
counted, so a 500 MB upload costs a few kilobytes of memory, and the size cap stops the
transfer as soon as it is crossed instead of after the whole body has arrived.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.multipart import MultipartParser, parse_options_header

from encore.problems import ContentTooLarge, InvalidInput, Problem

MAX_FIELDS = 50
MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS_TOTAL_BYTES = 256 * 1024


@dataclass
class ReceivedUpload:
    """The form fields and the file part of an upload, the file on local disk."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    file_path: Path | None = None
    file_name: str | None = None
    size: int = 0
    sha256: str = ""

    def field(self, name: str) -> str | None:
        """The single value of a text field, or None; InvalidInput if sent twice."""
        values = self.fields.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise InvalidInput(
                f"field {name} was sent more than once",
                extra={"errors": [{"field": f"form.{name}", "message": "sent more than once"}]},
            )
        return values[0]

    def discard(self) -> None:
        """Delete the temporary file."""
        if self.file_path is not None:
            self.file_path.unlink(missing_ok=True)
            self.file_path = None


class _PartState:
    def __init__(self) -> None:
        self.headers: dict[str, bytes] = {}
        self.header_field = b""
        self.header_value = b""
        self.name: str | None = None
        self.filename: str | None = None
        self.text = bytearray()
        self.is_file = False


async def receive_upload(
    *,
    content_type: str,
    content_length: str | None,
    body: AsyncIterator[bytes],
    file_field: str,
    max_file_bytes: int,
    spool_dir: Path | None = None,
) -> ReceivedUpload:
    """Parse a multipart body: text fields into memory (capped), `file_field` to a temp file."""
    media_type, options = parse_options_header(content_type)
    if media_type != b"multipart/form-data" or b"boundary" not in options:
        raise InvalidInput("send the upload as multipart/form-data")
    # Headers and fields add a little to the file; anything far above the cap is refused
    # before a single byte is read.
    declared = int(content_length) if content_length and content_length.isdigit() else 0
    if declared > max_file_bytes + MAX_FIELDS_TOTAL_BYTES:
        raise ContentTooLarge(f"the upload is over the {max_file_bytes} byte limit")
    received = ReceivedUpload()
    digest = hashlib.sha256()
    spool: IO[bytes] | None = None
    part = _PartState()
    field_bytes = 0
    field_count = 0
    errors: list[Problem] = []

    def on_part_begin() -> None:
        nonlocal part
        part = _PartState()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        part.header_value += data[start:end]

    def on_header_end() -> None:
        part.headers[part.header_field.decode("latin-1").lower()] = part.header_value
        part.header_field = b""
        part.header_value = b""

    def on_headers_finished() -> None:
        nonlocal spool, field_count
        disposition, params = parse_options_header(part.headers.get("content-disposition", b""))
        if disposition != b"form-data" or b"name" not in params:
            errors.append(InvalidInput("every part needs Content-Disposition: form-data; name=…"))
            return
        part.name = params[b"name"].decode("utf-8", "replace")
        if b"filename" in params:
            part.filename = params[b"filename"].decode("utf-8", "replace")[:255]
        if part.name == file_field:
            if received.file_path is not None:
                errors.append(InvalidInput(f"send one {file_field} part only"))
                return
            part.is_file = True
            descriptor, name = tempfile.mkstemp(prefix="upload-", dir=spool_dir)
            spool = os.fdopen(descriptor, "wb")
            received.file_path = Path(name)
            received.file_name = part.filename
        else:
            field_count += 1
            if field_count > MAX_FIELDS:
                errors.append(InvalidInput(f"at most {MAX_FIELDS} form fields"))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        nonlocal field_bytes
        if errors:
            return
        chunk = data[start:end]
        if part.is_file:
            assert spool is not None
            received.size += len(chunk)
            if received.size > max_file_bytes:
                errors.append(
                    ContentTooLarge(f"the audio file is over the {max_file_bytes} byte limit")
                )
                return
            digest.update(chunk)
            spool.write(chunk)
            return
        field_bytes += len(chunk)
        if len(part.text) + len(chunk) > MAX_FIELD_BYTES or field_bytes > MAX_FIELDS_TOTAL_BYTES:
            errors.append(InvalidInput("form fields are too large"))
            return
        part.text.extend(chunk)

    def on_part_end() -> None:
        nonlocal spool
        if part.is_file:
            if spool is not None:
                spool.close()
                spool = None
        elif part.name is not None and not errors:
            try:
                value = part.text.decode("utf-8")
            except UnicodeDecodeError:
                errors.append(InvalidInput(f"field {part.name} is not UTF-8 text"))
                return
            received.fields.setdefault(part.name, []).append(value)

    parser = MultipartParser(
        options[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in body:
            parser.write(chunk)
            if errors:
                raise errors[0]
        parser.finalize()
        if errors:
            raise errors[0]
    except Problem:
        if spool is not None:
            spool.close()
        received.discard()
        raise
    except Exception as exc:
        # python-multipart raises its own errors on malformed bodies: the client's fault.
        if spool is not None:
            spool.close()
        received.discard()
        raise InvalidInput(f"malformed multipart body ({type(exc).__name__})") from None
    if spool is not None:
        spool.close()
    received.sha256 = digest.hexdigest()
    return received
