"""Uploads: streamed from the request body with a size limit, checked by declared type and content.

Nothing here writes a temporary file: a photo or a live frame stays in memory, a video or an
audio file is streamed straight into a file the caller names (inside a job folder). The
uploaded file name is kept only as text for display; it is never used as a path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request
from starlette.requests import ClientDisconnect

MAX_FIELD_BYTES = 1000
MAX_FIELDS = 20
MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries on top of the file itself

#: Declared content types accepted besides ``<kind>/*`` (browsers send these for some files).
NEUTRAL_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/ogg", "application/mp4",
                 "application/x-matroska", "application/vnd.rn-realmedia"}

#: File-name suffixes kept for the job's input file (helps the demuxer); anything else becomes ``.bin``.
SAFE_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".flv", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts", ".wmv",
    ".3gp", ".ogv", ".gif", ".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".wma", ".aiff", ".aif",
}


@dataclass
class Upload:
    """One uploaded file: ``data`` (in memory) or ``path`` (streamed to disk), plus form fields."""

    filename: str
    content_type: str
    size: int = 0
    data: bytes | None = None
    path: Path | None = None
    fields: dict[str, str] = field(default_factory=dict)
    head: bytes = b""

    @property
    def suffix(self) -> str:
        """The file name's suffix if it is a known media suffix, else ``.bin``."""
        suffix = Path(self.filename).suffix.lower()
        return suffix if suffix in SAFE_SUFFIXES else ".bin"


def display_name(name: str | None, default: str = "upload") -> str:
    """The last path component of an uploaded file name, without control characters (display only)."""
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()[:200]
    return name or default


class _Sink:
    """Collects the file's bytes in memory or in ``path``, enforcing ``limit``."""

    def __init__(self, limit: int, path: Path | None) -> None:
        self.limit, self.path, self.size = limit, path, 0
        self.buffer = bytearray()
        self.head = b""
        # created 0600: an upload is readable by the server's user only
        self.file = os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") \
            if path is not None else None
        self.too_large = False

    def write(self, data: bytes) -> None:
        if self.too_large:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.too_large = True
            return
        if len(self.head) < 4096:
            self.head += data[: 4096 - len(self.head)]
        if self.file is not None:
            self.file.write(data)
        else:
            self.buffer += data

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"upload too large: the limit is {limit / 1e6:.1f} MB")


def declared_size(request: Request, limit: int) -> int:
    """Bytes the request's body may bring: its ``Content-Length``, or ``limit`` (plus the multipart
    overhead) when it declares none; 413 when it declares more than that."""
    try:
        declared = int(request.headers.get("content-length") or 0)
    except ValueError:
        raise HTTPException(400, "Content-Length is not a number") from None
    if declared > limit + MULTIPART_OVERHEAD:
        raise _too_large(limit)
    return declared if declared > 0 else limit + MULTIPART_OVERHEAD


async def receive_upload(request: Request, limit: int, dest: Path | None = None, field_name: str = "file") -> Upload:
    """Read one file from ``request``: ``multipart/form-data`` (field ``file`` plus small text
    fields) or a raw body whose ``Content-Type`` is the file's type (name from ``?filename=``).

    The file goes to memory, or to ``dest`` when given (the caller removes it on error).
    Raises 413 past ``limit`` bytes, 400 for a malformed body, a missing file field or a file in
    another field, 408 when the body stops arriving (the server's timeout closed the connection).
    """
    declared_size(request, limit)
    ctype = request.headers.get("content-type", "")
    sink = _Sink(limit, dest)
    try:
        if ctype.lower().startswith("multipart/form-data"):
            upload = await _read_multipart(request, ctype, sink, field_name)
        else:
            upload = Upload(display_name(request.query_params.get("filename")), ctype.split(";")[0].strip().lower())
            async for chunk in request.stream():
                sink.write(chunk)
                if sink.too_large:
                    raise _too_large(limit)
    except ClientDisconnect:
        raise HTTPException(408, "the request body stopped arriving (timeout or client disconnected)") from None
    finally:
        sink.close()
    upload.size, upload.head, upload.path = sink.size, sink.head, dest
    upload.data = bytes(sink.buffer) if dest is None else None
    return upload


async def _read_multipart(request: Request, ctype: str, sink: _Sink, field_name: str) -> Upload:
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(ctype)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPException(400, "multipart body without a boundary")
    state: dict = {"headers": {}, "name": None, "field": b"", "value": b"", "fields": {}, "file": None, "error": None}

    def on_part_begin() -> None:
        state["headers"], state["name"], state["value"] = {}, None, b""

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"].decode("latin-1")
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, opts = parse_options_header(state["headers"].get("content-disposition", ""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if name == field_name and b"filename" in opts and state["file"] is None:
            ptype = state["headers"].get("content-type", "").split(";")[0].strip().lower()
            state["file"] = Upload(display_name(opts[b"filename"].decode("utf-8", "replace")), ptype)
            state["name"] = ("file", name)
        elif b"filename" in opts or name == field_name:  # a file in another field, or a second file
            what = f"a second {field_name!r}" if name == field_name else f"a file in the field {name[:40]!r}"
            state["error"] = state["error"] or HTTPException(
                400, f"{what}: send exactly one file, in the form field named {field_name!r}")
            state["name"] = ("skip", name)
        else:
            state["name"] = ("field", name)
        state["value"] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        kind, _ = state["name"]
        if kind == "file":
            sink.write(data[start:end])
        elif kind == "skip":
            return
        elif len(state["value"]) + end - start <= MAX_FIELD_BYTES:
            state["value"] += data[start:end]
        else:
            state["error"] = state["error"] or HTTPException(
                400, f"form field {state['name'][1][:40]!r} too long (limit {MAX_FIELD_BYTES} bytes)")

    def on_part_end() -> None:
        kind, name = state["name"] or ("field", "")
        if kind == "field" and name:
            if len(state["fields"]) >= MAX_FIELDS:
                state["error"] = HTTPException(400, f"too many form fields (limit {MAX_FIELDS})")
            state["fields"][name] = state["value"].decode("utf-8", "replace")
        state["value"] = b""

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end,
                 "on_headers_finished": on_headers_finished, "on_part_data": on_part_data, "on_part_end": on_part_end}
    parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if sink.too_large:
                raise _too_large(sink.limit)
            if state["error"] is not None:
                raise state["error"]
        parser.finalize()
    except HTTPException:
        raise
    except ClientDisconnect:
        raise HTTPException(408, "the request body stopped arriving (timeout or client disconnected)") from None
    except Exception as exc:  # noqa: BLE001  (python-multipart raises its own errors on malformed bodies)
        raise HTTPException(400, f"malformed multipart body: {exc}") from None
    upload = state["file"]
    if upload is None:
        raise HTTPException(400, f"no file in the form: send the file in a field named {field_name!r}")
    upload.fields = state["fields"]
    return upload


# ------------------------------------------------------------------------------------ content checks


def sniff(head: bytes) -> set[str]:
    """What the first bytes say a file is: a subset of ``{"image", "audio", "video"}``, ``{"text"}``,
    or an empty set when the signature is unknown (the decoder then decides)."""
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*", b"GIF87a", b"GIF89a")):
        return {"image"}
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return {"image"}
    if len(head) > 2 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n":
        return {"image"}
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE" or head.startswith((b"ID3", b"fLaC", b"#!AMR", b"FORM")):
        return {"audio"}
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG audio / ADTS frame sync
        return {"audio"}
    if head[4:8] == b"ftyp":
        return {"audio"} if head[8:12] in (b"M4A ", b"M4B ") else {"video", "audio"}
    if head.startswith((b"\x1a\x45\xdf\xa3", b"OggS", b"FLV", b"\x30\x26\xb2\x75")):
        return {"video", "audio"}
    if head[:4] == b"RIFF" and head[8:12] == b"AVI " or head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return {"video", "audio"}
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:  # MPEG transport stream
        return {"video", "audio"}
    if head and b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return set()
        if sum(ch.isprintable() or ch in "\r\n\t" for ch in text) >= 0.95 * len(text):
            return {"text"}
    return set()


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def check_kind(upload: Upload, kind: str) -> None:
    """Raise 415 when the declared type or the content says the upload is not a ``kind`` file
    (``image``, ``audio`` or ``video``; audio also accepts videos, for their sound track), and
    422 for an empty file."""
    accepted = {"audio": {"audio", "video"}}.get(kind, {kind})
    major = upload.content_type.split("/")[0]
    if upload.content_type not in NEUTRAL_TYPES and major not in accepted:
        raise HTTPException(415, f"unsupported content type {upload.content_type!r}: send {_a(kind)} file")
    if upload.size == 0:
        raise HTTPException(422, "the file is empty (0 bytes)")
    found = sniff(upload.head)
    if found and not found & accepted:
        what = "text" if "text" in found else "an image" if "image" in found else "audio" if "video" not in found \
            else "a video"
        raise HTTPException(415, f"{upload.filename}: the content is {what}, not {_a(kind)} file")
