"""``GET /``: the search page (static files in ``api/static``, no build step), and ``GET /ui/config``.

The page and its assets load without an API key (they hold nothing secret); every call the page makes to the
API sends the key the user typed in, as ``X-API-Key``. Everything the page loads comes from this server: its
Content-Security-Policy allows no other origin, so no CDN or external font can creep in.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.deps import SettingsDep
from api.errors import error_response

__all__ = ["STATIC_FILES", "UiConfig", "router"]

router = APIRouter(tags=["web"])

# The only files served: a fixed list, so no request path ever reaches the file system.
STATIC_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "wav.js": "text/javascript; charset=utf-8",
}

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def _read(name: str) -> bytes:
    return (resources.files("api") / "static" / name).read_bytes()


class UiConfig(BaseModel):
    """What the page needs to know before its first API call (no key needed: nothing here is secret)."""

    auth_required: bool = Field(description="Whether the API asks for a key (send it as X-API-Key).")
    key_header: str = Field(default="X-API-Key", description="The header the page sends the key in.")
    max_audio_seconds: float = Field(description="Longest clip the server accepts (the recording limit).")
    max_upload_bytes: int
    max_k: int
    max_text_chars: int


@router.get("/", include_in_schema=False)
async def page() -> Response:
    """The search page."""
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=_HEADERS)


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str) -> Response:
    """One of the page's files (a fixed list)."""
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return error_response(
            404,
            "not_found",
            f"no static file {name!r}: the page's files are {', '.join(sorted(STATIC_FILES))}",
        )
    return Response(_read(name), media_type=media_type, headers=_HEADERS)


@router.get("/ui/config", response_model=UiConfig)
async def ui_config(settings: SettingsDep) -> UiConfig:
    """Limits the page applies before sending (recording length, k, text length) and whether a key is needed."""
    return UiConfig(
        auth_required=bool(settings.api_keys),
        max_audio_seconds=settings.max_audio_seconds,
        max_upload_bytes=settings.max_upload_bytes,
        max_k=settings.max_k,
        max_text_chars=settings.max_text_chars,
    )
