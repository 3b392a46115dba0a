"""``GET /audio/{db}/{item_id}``: play back one utterance of a speech database (the web page's play buttons).

The client names a database and an item id, never a path: the file read is the one the database's store
registers for that id, cut to the item's start and duration. A stored path that is not a regular audio file
(a device, a folder, a text file) is refused, and the segment is capped at ``max_audio_seconds``.
"""

from __future__ import annotations

import asyncio
import io
import math
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from fastapi.responses import Response

from api.deps import ServicesDep, SettingsDep, require_api_key
from api.routes.common import ERRORS
from miner.databases import Database

__all__ = ["SegmentNotFound", "SegmentUnreadable", "read_segment", "router"]

router = APIRouter(tags=["audio"], dependencies=[Depends(require_api_key)], responses=ERRORS)


class SegmentNotFound(LookupError):
    """No item of that id in the database, or its registered file is gone."""

    def __str__(self) -> str:  # LookupError's str() would quote the message
        return str(self.args[0]) if self.args else "segment not found"


class SegmentUnreadable(ValueError):
    """The database registers a file for the item that is not a readable audio file."""


def _registered_file(db: Database, item_id: int) -> tuple[Path, dict[str, Any]]:
    """The file the store registers for ``item_id`` (resolved, symlinks followed) and the item's row."""
    try:
        row = db.store.get(item_id)
    except KeyError:
        raise SegmentNotFound(
            f"database {db.name!r} has no item {item_id} (ids run from 0 to {db.size - 1}); take ids from a "
            "search result"
        ) from None
    stored = str(row.get("path") or "")
    if not stored:
        raise SegmentNotFound(f"item {item_id} of database {db.name!r} records no audio file")
    path = Path(stored).expanduser().resolve()  # relative paths: as the build saw them, from the server's cwd
    if not path.exists():
        raise SegmentNotFound(
            f"the audio file of item {item_id} of database {db.name!r} is missing ({stored}): the recordings "
            "must stay where the database was built from (relative paths are read from the server's working "
            "folder)"
        )
    if not path.is_file():
        raise SegmentUnreadable(
            f"item {item_id} of database {db.name!r} registers {stored}, not a regular file"
        )
    return path, row


def read_segment(db: Database, item_id: int, max_seconds: float) -> bytes:
    """The item's segment of its registered file as a 16-bit WAV at the file's own rate and channels.

    Args:
        db: an opened speech database.
        item_id: the item's global id (a search result's ``id``).
        max_seconds: longest segment returned (longer items are cut).

    Raises:
        SegmentNotFound: unknown id, or the file is missing.
        SegmentUnreadable: the registered file is not audio soundfile can read.
    """
    import soundfile as sf

    path, row = _registered_file(db, item_id)
    try:
        with sf.SoundFile(str(path)) as f:
            rate = int(f.samplerate)
            start = max(0, int(round(float(row.get("start") or 0.0) * rate)))
            duration = row.get("duration")
            frames = f.frames - start if duration is None else int(round(float(duration) * rate))
            frames = max(0, min(frames, f.frames - start, int(math.ceil(max_seconds * rate))))
            if start:
                f.seek(min(start, f.frames))
            samples = f.read(frames, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise SegmentUnreadable(
            f"item {item_id} of database {db.name!r} registers {row.get('path')}, which is not readable audio "
            f"({exc})"
        ) from None
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@router.get(
    "/audio/{db}/{item_id}",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}, "description": "The segment as 16-bit WAV."}},
)
async def audio_segment(
    services: ServicesDep,
    settings: SettingsDep,
    db: Annotated[str, PathParam(min_length=1, description="Speech database (see GET /indexes).")],
    item_id: Annotated[
        int, PathParam(ge=0, le=2**63 - 1, description="The item's id, as a search result gives it.")
    ],
) -> Response:
    """The audio of one utterance of a speech database: the file its store registers, cut to the item's start
    and duration (at most ``max_audio_seconds``). Only registered files are read; a client never names a path."""
    database = services.database(db, "speech")
    data = await asyncio.to_thread(read_segment, database, item_id, settings.max_audio_seconds)
    return Response(data, media_type="audio/wav", headers={"Cache-Control": "private, max-age=300"})
